#!/usr/bin/env bash
# Instructions redis-server runs per rotation (or per SET), counted by
# callgrind: repeatable whatever else the machine does.
#
#   bench/callgrind.sh [TREE] [rot|set]
#
# TREE is a checkout of the repository (default: this one). To compare with
# another commit:
#   git worktree add /tmp/before <commit> && bench/callgrind.sh /tmp/before
# The tool (bench/scriptcost) is copied into TREE if TREE lacks it (without
# the batching option, for trees from before issue 12). Rotations go one per
# request, as before batching; PROBE_BATCH=1 in the environment batches them.
# CLUSTER=1 runs redis-server as a cluster of one master that holds every
# slot (the same client, the same script: what the cluster's own work costs);
# KEEP=DIR keeps the profile of the measured run there, for callgrind_annotate.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tree=${1:-$here}
op=${2:-rot}
n=6400
if [ ! -d "$tree/bench/scriptcost" ]; then
	mkdir -p "$tree/bench/scriptcost"
	sed '/opt.MaxInFlight = redisstore.NoBatching/d' "$here/bench/scriptcost/main.go" >"$tree/bench/scriptcost/main.go"
fi
run() {
	local calls=$1 port out
	port=$((20000 + RANDOM % 10000))
	out=$(mktemp)
	local dir cluster=()
	dir=$(mktemp -d)
	if [ "${CLUSTER:-}" = 1 ]; then
		cluster=(--cluster-enabled yes --cluster-config-file "$dir/nodes.conf")
	fi
	valgrind --tool=callgrind --callgrind-out-file="$out" redis-server --port "$port" --bind 127.0.0.1 \
		--save "" --appendonly no --dir "$dir" "${cluster[@]}" >/dev/null 2>&1 &
	for _ in $(seq 1 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
	if [ "${CLUSTER:-}" = 1 ]; then
		redis-cli -p "$port" cluster addslotsrange 0 16383 >/dev/null
		for _ in $(seq 1 200); do redis-cli -p "$port" cluster info | grep -q "cluster_state:ok" && break; sleep 0.1; done
	fi
	(cd "$tree" && PROBE_ADDR=127.0.0.1:$port PROBE_OP=$op go run ./bench/scriptcost "$calls" >/dev/null)
	redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
	wait
	grep -E "^(summary|totals):" "$out" | head -1 | awk '{print $2}'
	if [ -n "${KEEP:-}" ] && [ "$calls" != 0 ]; then
		mkdir -p "$KEEP"
		cp "$out" "$KEEP/callgrind.$op${CLUSTER:+.cluster}.out"
	fi
	rm -rf "$out" "$dir"
}
a=$(run 0)
b=$(run $n)
echo "$op: $(((b - a) / n)) instructions per call ($tree${CLUSTER:+, a cluster of one master})"
