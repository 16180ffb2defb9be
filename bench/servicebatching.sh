#!/usr/bin/env bash
# The service's batching as its /metrics show it: calls per Redis request
# (sessioncache_redis_calls_total over sessioncache_redis_requests_total)
# over a loadgen run of rotations at 64 callers, at 1,000/s, at 3,000/s,
# flat out, and flat out with SESSIONCACHE_MAX_IN_FLIGHT=off. Each run has
# a service and a Redis of its own, on loopback.
#
#   bench/servicebatching.sh [ROUNDS]      # default 3; about 20 s a run
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
(cd "$here" && go build -o "$bin/sessioncache" ./cmd/sessioncache && go build -o "$bin/loadgen" ./cmd/loadgen)

# measure MAX_IN_FLIGHT LOADGEN_ARGS...: one line, the counters' increase
# over the timed run (after a 2 s warm-up).
measure() {
	local inflight=$1 rport port key spid rpid c0 r0 b0 c1 r1 b1 out
	shift
	rport=$((27000 + RANDOM % 1000))
	port=$((18000 + RANDOM % 1000))
	mport=$((19000 + RANDOM % 1000))
	key=$(openssl rand -hex 16)
	out=$(mktemp)
	redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
	rpid=$!
	for _ in $(seq 1 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
	SESSIONCACHE_REDIS_URL=redis://127.0.0.1:$rport/0 SESSIONCACHE_API_KEY=$key SESSIONCACHE_SECRET=$(openssl rand -hex 32) \
		SESSIONCACHE_LISTEN=127.0.0.1:$port SESSIONCACHE_METRICS_LISTEN=127.0.0.1:$mport SESSIONCACHE_MAX_IN_FLIGHT=$inflight "$bin/sessioncache" >/dev/null 2>&1 &
	spid=$!
	for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
	metric() { curl -s "http://127.0.0.1:$mport/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
	load() { "$bin/loadgen" -target http -http "http://127.0.0.1:$port" -api-key "$key" -progress 0 -sessions 64 -mix rotate -workers 64 "$@"; }
	load -duration 2s "$@" >/dev/null 2>&1
	c0=$(metric sessioncache_redis_calls_total) r0=$(metric sessioncache_redis_requests_total) b0=$(metric sessioncache_redis_batched_calls_total)
	load -duration 10s "$@" >"$out" 2>&1
	c1=$(metric sessioncache_redis_calls_total) r1=$(metric sessioncache_redis_requests_total) b1=$(metric sessioncache_redis_batched_calls_total)
	kill "$spid" "$rpid"
	wait "$spid" "$rpid" 2>/dev/null || true
	printf "max-in-flight %-4s %-11s calls %6d  requests %6d  batched %6d  calls/request %5.2f  %s  load %s\n" \
		"$inflight" "$*" $((c1 - c0)) $((r1 - r0)) $((b1 - b0)) "$(echo "($c1 - $c0) / ($r1 - $r0)" | bc -l)" \
		"$(awk '$1 == "rotate" { print $4 " rotations/s, p50 " $6 ", p99 " $8 }' "$out")" "$(cut -d' ' -f1-3 /proc/loadavg)"
	rm -f "$out"
}

for round in $(seq 1 "$rounds"); do
	for args in "4 -rate 1000" "4 -rate 3000" "4" "off"; do
		# shellcheck disable=SC2086
		printf "round %d  %s\n" "$round" "$(measure $args)"
	done
done
