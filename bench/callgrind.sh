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
	valgrind --tool=callgrind --callgrind-out-file="$out" redis-server --port "$port" --bind 127.0.0.1 \
		--save "" --appendonly no --dir /tmp >/dev/null 2>&1 &
	for _ in $(seq 1 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
	(cd "$tree" && PROBE_ADDR=127.0.0.1:$port PROBE_OP=$op go run ./bench/scriptcost "$calls" >/dev/null)
	redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
	wait
	grep -E "^(summary|totals):" "$out" | head -1 | awk '{print $2}'
	rm -f "$out"
}
a=$(run 0)
b=$(run $n)
echo "$op: $(((b - a) / n)) instructions per call ($tree)"
