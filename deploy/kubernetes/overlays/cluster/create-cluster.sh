# Joins the six nodes into a cluster of three masters with a replica each,
# once: it does nothing if a node already knows others.
set -eu
# As the nodes' user "internal" (start-redis.sh): the default user is off.
export REDISCLI_AUTH="$(cat /etc/redis-secret/redis-internal-password)"
addrs=""
for i in 0 1 2 3 4 5; do
	host="sessioncache-redis-$i.sessioncache-redis"
	until redis-cli --user internal -h "$host" ping 2>/dev/null | grep -q PONG; do
		echo "waiting for $host"
		sleep 2
	done
	known=$(redis-cli --user internal -h "$host" cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')
	if [ "$known" != 1 ]; then
		echo "$host already knows $known nodes: the cluster exists"
		exit 0
	fi
	# CLUSTER MEET takes addresses, not names.
	addrs="$addrs $(getent hosts "$host" | awk '{ print $1; exit }'):6379"
done
redis-cli --user internal --cluster create $addrs --cluster-replicas 1 --cluster-yes
