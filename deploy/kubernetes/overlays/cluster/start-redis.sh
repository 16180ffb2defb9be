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
# The ACL users: the default one off; the service's, with the rules of
# /etc/redis-acl/rules; "internal", for the replicas and the Job that
# creates the cluster, with a password the service does not know.
internal=$(cat /etc/redis-secret/redis-internal-password)
{
	cat /etc/redis/redis.conf
	# The default user is off: no one logs in as it. A default user in the
	# configuration file is reset first, to no rights: give it back its
	# rights, which Redis 7.0 needs to replay the append-only file (it
	# checks the file's transactions against the default user's rights, and
	# would drop every one).
	printf 'user default off ~* &* +@all\n'
	printf 'user "%s" on ">%s" %s\n' "$(cat /etc/redis-secret/redis-username)" "$(cat /etc/redis-secret/redis-password)" \
		"$(grep -v '^#' /etc/redis-acl/rules | tr '\n' ' ')"
	printf 'user internal on ">%s" resetkeys resetchannels -@all %s\n' "$internal" "+psync +replconf +ping +info +cluster"
	printf 'masteruser internal\nmasterauth "%s"\n' "$internal"
	printf 'cluster-announce-hostname %s\n' "$self"
} >/run/redis/redis.conf
exec redis-server /run/redis/redis.conf
