# Starts this pod's cluster node. A pod that comes back with a new IP is
# recognised by its node id (nodes.conf on its volume); the addresses it
# kept for the other nodes are refreshed from their DNS names first, so that
# a cluster whose pods all restarted at once finds itself again.
set -eu
umask 077
self="$POD_NAME.sessioncache-redis"
if [ -f /data/nodes.conf ]; then
	cp /data/nodes.conf /run/redis/nodes.conf.old
	while read -r id addr rest; do
		host=${addr#*,}
		ip=$(getent hosts "$host" | awk '{ print $1; exit }') || true
		if [ -n "$ip" ] && [ "$host" != "$addr" ]; then
			addr="$ip:${addr#*:}"
		fi
		printf '%s %s %s\n' "$id" "$addr" "$rest"
	done </run/redis/nodes.conf.old >/data/nodes.conf
fi
password=$(cat /etc/redis-secret/redis-password)
{
	cat /etc/redis/redis.conf
	printf 'requirepass "%s"\nmasterauth "%s"\n' "$password" "$password"
	printf 'cluster-announce-hostname %s\n' "$self"
} >/run/redis/redis.conf
exec redis-server /run/redis/redis.conf
