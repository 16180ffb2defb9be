# Start and stop the Redis processes the test suites need, on free loopback
# ports. Source this file; every function records what it started in
# $SC_RUN_DIR, and sc_stop_all stops exactly that and nothing else.
#
#   sc_standalone   use 127.0.0.1:6379 if it answers, else start one;
#                   exports SESSIONCACHE_TEST_REDIS_URL
#   sc_cluster      start a 3-master cluster; exports SESSIONCACHE_TEST_CLUSTER_ADDRS
#   sc_stop_all     stop everything started here

SC_RUN_DIR=${SC_RUN_DIR:-$(mktemp -d /tmp/sessioncache-ci.XXXXXX)}
export SC_RUN_DIR

sc_port_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# sc_free_ports N: print a base port P such that P..P+N-1 and their cluster
# bus ports (+10000) are free. All of them stay below the kernel's ephemeral
# range (ip_local_port_range), where outgoing connections take source ports
# at any moment and a port free now may be taken when Redis binds it.
sc_free_ports() {
	local n=$1 tries base i ok low
	low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
	for tries in $(seq 1 200); do
		base=$((10000 + RANDOM % (low - 20000 - n)))
		ok=1
		for i in $(seq 0 $((n - 1))); do
			if ! sc_port_free $((base + i)) || ! sc_port_free $((base + i + 10000)); then
				ok=0
				break
			fi
		done
		if [ $ok = 1 ]; then
			echo "$base"
			return 0
		fi
	done
	echo "no free ports" >&2
	return 1
}

# sc_start_server PORT [extra redis-server args...]
sc_start_server() {
	local port=$1
	shift
	mkdir -p "$SC_RUN_DIR/$port"
	redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
		--dir "$SC_RUN_DIR/$port" --logfile "$SC_RUN_DIR/$port/redis.log" \
		--pidfile "$SC_RUN_DIR/$port/redis.pid" "$@" || return 1
	echo "$port" >>"$SC_RUN_DIR/started"
	sc_wait_ping "$port"
}

sc_wait_ping() {
	local i log="$SC_RUN_DIR/$1/redis.log"
	for i in $(seq 1 100); do
		if [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ]; then
			return 0
		fi
		if grep -q "aborting" "$log" 2>/dev/null; then
			echo "redis on port $1 did not start:" >&2
			tail -3 "$log" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "redis on port $1 did not answer" >&2
	return 1
}

sc_standalone() {
	if [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; then
		export SESSIONCACHE_TEST_REDIS_URL=redis://127.0.0.1:6379/0
		echo "standalone: using the running Redis on 127.0.0.1:6379"
		return 0
	fi
	local port
	port=$(sc_free_ports 1) || return 1
	sc_start_server "$port" --maxmemory-policy noeviction || return 1
	export SESSIONCACHE_TEST_REDIS_URL=redis://127.0.0.1:$port/0
	echo "standalone: started Redis on 127.0.0.1:$port"
}

sc_cluster() {
	local attempt
	# A port can still be taken between the check and the bind: try again
	# on other ports.
	for attempt in 1 2 3; do
		if sc_cluster_once; then
			return 0
		fi
		echo "cluster: attempt $attempt failed, retrying on other ports" >&2
		sc_stop_ports $SC_CLUSTER_PORTS
	done
	return 1
}

sc_cluster_once() {
	local base i addrs="" nodes=""
	base=$(sc_free_ports 3) || return 1
	SC_CLUSTER_PORTS="$base $((base + 1)) $((base + 2))"
	for i in 0 1 2; do
		sc_start_server $((base + i)) --cluster-enabled yes --cluster-node-timeout 3000 \
			--cluster-config-file nodes.conf || return 1
		nodes="$nodes 127.0.0.1:$((base + i))"
		addrs="$addrs,127.0.0.1:$((base + i))"
	done
	# shellcheck disable=SC2086
	redis-cli --cluster create $nodes --cluster-replicas 0 --cluster-yes >"$SC_RUN_DIR/cluster-create.log" 2>&1 || {
		cat "$SC_RUN_DIR/cluster-create.log" >&2
		return 1
	}
	sc_wait_cluster_ok $base $((base + 1)) $((base + 2)) || return 1
	export SESSIONCACHE_TEST_CLUSTER_ADDRS=${addrs#,}
	echo "cluster: 3 masters on 127.0.0.1:$base-$((base + 2))"
}

sc_wait_cluster_ok() {
	local i p ok
	for i in $(seq 1 150); do
		ok=1
		for p in "$@"; do
			if ! redis-cli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then
				ok=0
			fi
		done
		if [ $ok = 1 ]; then
			return 0
		fi
		sleep 0.2
	done
	echo "cluster never reported cluster_state:ok" >&2
	return 1
}

# sc_stop_ports PORT...: stop the servers started here on these ports.
sc_stop_ports() {
	local port
	for port in "$@"; do
		redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 ||
			{ [ -f "$SC_RUN_DIR/$port/redis.pid" ] && kill "$(cat "$SC_RUN_DIR/$port/redis.pid")" 2>/dev/null; }
		[ -f "$SC_RUN_DIR/started" ] && sed -i "/^$port\$/d" "$SC_RUN_DIR/started"
	done
	return 0
}

sc_stop_all() {
	[ -f "$SC_RUN_DIR/started" ] || return 0
	# shellcheck disable=SC2046
	sc_stop_ports $(cat "$SC_RUN_DIR/started")
	rm -f "$SC_RUN_DIR/started"
}
