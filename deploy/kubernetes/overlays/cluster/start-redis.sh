# Starts this pod's cluster node. A pod that comes back with a new IP is
# recognised by its node id (nodes.conf on its volume); before Redis reads
# that file, its own address is set to the pod's (POD_IP) and the other
# nodes' are refreshed from their DNS names, so that a cluster whose pods
# all restarted at once, each at a new address, finds itself again. A name
# resolves only shortly after its pod has an address: the script waits for
# each, up to a minute in all, and keeps the old address of a node whose
# name never comes (that node corrects it when it pings this one).
set -eu
umask 077
self="$POD_NAME.sessioncache-redis"
if [ -f /data/nodes.conf ]; then
	deadline=$(($(date +%s) + 60))
	cp /data/nodes.conf /run/redis/nodes.conf.old
	while read -r id addr rest; do
		host=${addr#*,}
		ip=""
		case "$rest" in
		myself,*) ip=$POD_IP ;;
		*)
			while [ "$host" != "$addr" ]; do
				ip=$(getent hosts "$host" | awk '{ print $1; exit }') || true
				[ -z "$ip" ] && [ "$(date +%s)" -lt "$deadline" ] || break
				sleep 1
			done
			;;
		esac
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
