# Starts this pod's Redis: a replica of the master the Sentinels name, or,
# when no Sentinel answers (the first start of the StatefulSet), the master
# if this is pod 0 and a replica of pod 0 otherwise.
set -eu
umask 077
self="$POD_NAME.sessioncache-redis"
master=""
for i in 0 1 2; do
	master=$(timeout 3 redis-cli -h "sessioncache-redis-$i.sessioncache-redis" -p 26379 --raw \
		SENTINEL get-master-addr-by-name sessioncache 2>/dev/null | head -n 1) || true
	[ -n "$master" ] && break
done
[ -n "$master" ] || master="sessioncache-redis-0.sessioncache-redis"
# The ACL users: the default one off; the service's, with the rules of
# /etc/redis-acl/rules; "internal", for the replicas and the Sentinels
# (their rights as Redis's documentation lists them), with a password the
# service does not know.
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
	printf 'user internal on ">%s" resetkeys resetchannels &__sentinel__:hello -@all %s\n' "$internal" \
		"+psync +replconf +ping +info +role +multi +exec +slaveof +replicaof +config|rewrite +publish +subscribe +client|setname +client|kill +script|kill"
	printf 'masteruser internal\nmasterauth "%s"\n' "$internal"
	printf 'replica-announce-ip %s\n' "$self"
	[ "$master" = "$self" ] || printf 'replicaof %s 6379\n' "$master"
} >/run/redis/redis.conf
exec redis-server /run/redis/redis.conf
