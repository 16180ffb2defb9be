# Starts this pod's Sentinel, watching the master the other Sentinels name
# (pod 0 on the first start). Sentinel rewrites its file: it lives on a
# memory volume, and a restarted Sentinel learns the state from its peers.
set -eu
umask 077
self="$POD_NAME.sessioncache-redis"
master=""
for i in 0 1 2; do
	[ "sessioncache-redis-$i" = "$POD_NAME" ] && continue
	master=$(timeout 3 redis-cli -h "sessioncache-redis-$i.sessioncache-redis" -p 26379 --raw \
		SENTINEL get-master-addr-by-name sessioncache 2>/dev/null | head -n 1) || true
	[ -n "$master" ] && break
done
[ -n "$master" ] || master="sessioncache-redis-0.sessioncache-redis"
# Sentinel resolves the master's name as it reads its configuration, and
# refuses to start if it cannot; a pod's name resolves only shortly after
# the pod has an address (on the first start, this very pod's). Wait for it,
# up to a minute.
deadline=$(($(date +%s) + 60))
until getent hosts "$master" >/dev/null || [ "$(date +%s)" -ge "$deadline" ]; do
	sleep 1
done
password=$(cat /etc/redis-secret/redis-internal-password)
cat >/run/sentinel/sentinel.conf <<CONF
port 26379
bind * -::*
dir /run/sentinel
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $self
sentinel monitor sessioncache $master 6379 2
sentinel auth-user sessioncache internal
sentinel auth-pass sessioncache "$password"
sentinel down-after-milliseconds sessioncache 5000
sentinel failover-timeout sessioncache 60000
sentinel parallel-syncs sessioncache 1
CONF
exec redis-server /run/sentinel/sentinel.conf --sentinel
