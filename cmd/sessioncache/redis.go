package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// redisOptions holds the parsed options of the configured Redis; all nil
// means the embedded miniredis.
type redisOptions struct {
	standalone *redis.Options
	cluster    *redis.ClusterOptions
	sentinel   *redis.FailoverOptions
}

// parseRedis checks the Redis settings and turns them into client options.
// Cluster and sentinel URLs list their seeds comma-separated in the host
// part (redis://a:6379,b:6379); go-redis's own URL query options (such as
// dial_timeout or pool_size) work in every mode.
func parseRedis(mode, rawURL, master string) (redisOptions, error) {
	var o redisOptions
	if master != "" && mode != modeSentinel {
		return o, fmt.Errorf("%s is set but %s is %q, not sentinel", envRedisMaster, envRedisMode, mode)
	}
	if rawURL == "" {
		if mode != modeStandalone {
			return o, fmt.Errorf("%s=%s needs %s", envRedisMode, mode, envRedisURL)
		}
		return o, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return o, fmt.Errorf("not a URL")
	}
	switch {
	case u.Scheme == "unix" && mode == modeStandalone:
		o.standalone, err = redis.ParseURL(rawURL)
		if err != nil {
			return redisOptions{}, err
		}
		o.standalone.ContextTimeoutEnabled = true
		return o, nil
	case u.Scheme != "redis" && u.Scheme != "rediss":
		return o, fmt.Errorf("want a redis://, rediss:// or (standalone) unix:// URL")
	}
	hosts := strings.Split(u.Host, ",")
	if mode == modeStandalone && len(hosts) > 1 {
		return o, fmt.Errorf("lists several hosts: set %s=cluster or sentinel", envRedisMode)
	}
	// Extra seeds become go-redis's addr query parameters.
	q := u.Query()
	for _, h := range hosts[1:] {
		if h == "" {
			return o, fmt.Errorf("empty host in the comma-separated list")
		}
		q.Add("addr", h)
	}
	if master != "" {
		q.Set("master_name", master)
	}
	u.Host, u.RawQuery = hosts[0], q.Encode()
	switch mode {
	case modeStandalone:
		o.standalone, err = redis.ParseURL(u.String())
		if err == nil {
			o.standalone.ContextTimeoutEnabled = true
		}
	case modeCluster:
		o.cluster, err = redis.ParseClusterURL(u.String())
		if err == nil {
			o.cluster.ContextTimeoutEnabled = true
			// go-redis reloads the slot map on MOVED or every 60s by default,
			// not on connection errors: after a master dies its slots would
			// go to the dead node for up to a minute (58s measured, see
			// RELIABILITY.md) although a replica took over in about 2.5s.
			o.cluster.ClusterStateReloadInterval = time.Second
		}
	case modeSentinel:
		o.sentinel, err = redis.ParseFailoverURL(u.String())
		if err == nil && o.sentinel.MasterName == "" {
			err = fmt.Errorf("sentinel mode needs %s (or master_name in the URL)", envRedisMaster)
		}
		if err == nil {
			o.sentinel.ContextTimeoutEnabled = true
		}
	default:
		return o, fmt.Errorf("%s=%q: want standalone, cluster or sentinel", envRedisMode, mode)
	}
	if err != nil {
		// go-redis errors quote parameters, never the password.
		return redisOptions{}, err
	}
	return o, nil
}

// redactURL hides the passwords of a Redis URL.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	q := u.Query()
	for _, k := range []string{"password", "sentinel_password"} {
		if q.Has(k) {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.Redacted()
}

// redisLogger sends go-redis's own messages (dial failures and the like)
// to the service's JSON log.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}

// backend is the Redis the service runs on, and how to let go of it.
type backend struct {
	client   redis.UniversalClient
	embedded *miniredis.Miniredis
	stop     func()
}

func (b *backend) Close() { b.stop() }

// openRedis returns a client for the configured Redis, without contacting
// it, or starts the embedded miniredis on a loopback port.
func openRedis(o redisOptions) (*backend, error) {
	switch {
	case o.standalone != nil:
		c := redis.NewClient(o.standalone)
		return &backend{client: c, stop: func() { c.Close() }}, nil
	case o.cluster != nil:
		c := redis.NewClusterClient(o.cluster)
		return &backend{client: c, stop: func() { c.Close() }}, nil
	case o.sentinel != nil:
		c := redis.NewFailoverClient(o.sentinel)
		return &backend{client: c, stop: func() { c.Close() }}, nil
	}
	return startEmbedded()
}

// startEmbedded runs an in-process miniredis on a random loopback port,
// guarded by a random password. miniredis only counts TTLs down when told
// to, so a ticker moves its clock with the wall clock and expired keys go.
func startEmbedded() (*backend, error) {
	mr := miniredis.NewMiniRedis()
	var pw [16]byte
	rand.Read(pw[:])
	password := hex.EncodeToString(pw[:])
	mr.RequireAuth(password)
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("start embedded miniredis: %w", err)
	}
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), Password: password, ContextTimeoutEnabled: true})
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				mr.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	stop := func() {
		close(done)
		wg.Wait()
		c.Close()
		mr.Close()
	}
	return &backend{client: c, embedded: mr, stop: stop}, nil
}
