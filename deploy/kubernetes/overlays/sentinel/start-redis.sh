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
password=$(cat /etc/redis-secret/redis-password)
{
	cat /etc/redis/redis.conf
	printf 'requirepass "%s"\nmasterauth "%s"\n' "$password" "$password"
	printf 'replica-announce-ip %s\n' "$self"
	[ "$master" = "$self" ] || printf 'replicaof %s 6379\n' "$master"
} >/run/redis/redis.conf
exec redis-server /run/redis/redis.conf
