// Package redistest gives tests and benchmarks their Redis: an in-process
// miniredis always, a real Redis when SESSIONCACHE_TEST_REDIS_URL names one,
// and a real Redis Cluster when SESSIONCACHE_TEST_CLUSTER_ADDRS lists its
// seeds. Backends that are not configured are skipped with a message, or
// fail the test when SESSIONCACHE_TEST_REQUIRE_REAL=1 (as CI sets it).
//
// Each backend comes with a key prefix of its own, deleted when the test
// ends, and a clock the store under test should use. Nothing is flushed.
//
// NewStore makes the store under test, the same way for the contract suite
// and the reliability suite: a test secret, MaxInFlight as
// SESSIONCACHE_TEST_MAX_IN_FLIGHT sets it, and the events it emits
// recorded. FaultyStore puts fault proxies between such a store and its
// backend, for tests of lost replies.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Environment variables that name real servers.
const (
	EnvRedisURL     = "SESSIONCACHE_TEST_REDIS_URL"
	EnvClusterAddrs = "SESSIONCACHE_TEST_CLUSTER_ADDRS"
	EnvRequireReal  = "SESSIONCACHE_TEST_REQUIRE_REAL"
)

// Kind names a backend.
type Kind string

const (
	Mini    Kind = "miniredis"
	Real    Kind = "redis"
	Cluster Kind = "cluster"
)

// Backend is a Redis for one test.
type Backend struct {
	Kind   Kind
	Client redis.UniversalClient
	// Prefix is unique to the test; every key it writes must start with it.
	Prefix string
	// Clock is the server's clock: the one the store decides with.
	Clock *Clock
	// Mini is the in-process server, for the miniredis backend only.
	Mini *miniredis.Miniredis
}

// Clock is the clock of a backend's Redis, which decides expiry and grace.
// On miniredis it is settable: Advance moves the server's time (TIME and
// PEXPIREAT) and its TTLs at once. A real server's clock cannot be moved:
// Advance waits until it has moved on by d (polling TIME), so tests that
// pass time on real servers use short durations.
type Clock struct {
	mu   sync.Mutex
	now  time.Time
	mini *miniredis.Miniredis
	rdb  redis.UniversalClient // real servers
}

// Now returns the server's time.
func (c *Clock) Now() time.Time {
	if c.rdb != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		t, err := c.rdb.Time(ctx).Result()
		if err != nil {
			panic("redistest: TIME: " + err.Error())
		}
		return t
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the server's clock forward by d, or on a real server waits
// until its clock has moved on by d.
func (c *Clock) Advance(d time.Duration) {
	if c.rdb != nil {
		target := c.Now().Add(d)
		for {
			left := target.Sub(c.Now())
			if left <= 0 {
				return
			}
			time.Sleep(min(left, 5*time.Millisecond))
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.mini.SetTime(c.now)
	c.mini.FastForward(d)
}

// For returns the backend of the given kind, or skips (or fails, under
// SESSIONCACHE_TEST_REQUIRE_REAL=1) when it is not configured.
func For(tb testing.TB, kind Kind) *Backend {
	tb.Helper()
	switch kind {
	case Mini:
		return miniBackend(tb)
	case Real:
		url := os.Getenv(EnvRedisURL)
		if url == "" {
			unavailable(tb, "no real Redis: set "+EnvRedisURL+" (e.g. redis://127.0.0.1:6379/0)")
		}
		opt, err := redis.ParseURL(url)
		if err != nil {
			tb.Fatalf("%s: %v", EnvRedisURL, err)
		}
		opt.PoolSize = 128
		return realBackend(tb, Real, redis.NewClient(opt))
	case Cluster:
		addrs := os.Getenv(EnvClusterAddrs)
		if addrs == "" {
			unavailable(tb, "no Redis Cluster: set "+EnvClusterAddrs+" (e.g. 127.0.0.1:7000,127.0.0.1:7001)")
		}
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ","), PoolSize: 128})
		return realBackend(tb, Cluster, c)
	}
	tb.Fatalf("unknown backend %q", kind)
	return nil
}

// Private returns a backend of b's kind on servers of its own, started for
// tb: a new miniredis, a redis-server, a 3-master cluster. For tests that
// change what a whole server holds, such as its script cache, which the
// tests of other packages on the shared servers would race with.
func (b *Backend) Private(tb testing.TB) *Backend {
	tb.Helper()
	switch b.Kind {
	case Real:
		srv := StartServer(tb)
		return realBackend(tb, Real, redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 128}))
	case Cluster:
		tc := StartCluster(tb, 3, 0, 5*time.Second)
		return realBackend(tb, Cluster, redis.NewClusterClient(&redis.ClusterOptions{Addrs: tc.Addrs(), PoolSize: 128}))
	}
	return miniBackend(tb)
}

// Kinds lists every backend, in the order tests run them.
var Kinds = []Kind{Mini, Real, Cluster}

// Each runs f as a subtest on every backend.
func Each(t *testing.T, f func(t *testing.T, b *Backend)) {
	for _, k := range Kinds {
		t.Run(string(k), func(t *testing.T) { f(t, For(t, k)) })
	}
}

func unavailable(tb testing.TB, msg string) {
	tb.Helper()
	if os.Getenv(EnvRequireReal) == "1" {
		tb.Fatalf("%s (%s=1)", msg, EnvRequireReal)
	}
	tb.Skip(msg)
}

func miniBackend(tb testing.TB) *Backend {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		tb.Fatal(err)
	}
	now := time.Now().Truncate(time.Millisecond)
	mr.SetTime(now)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() {
		c.Close()
		mr.Close()
	})
	return &Backend{Kind: Mini, Client: c, Prefix: NewPrefix(), Clock: &Clock{now: now, mini: mr}, Mini: mr}
}

func realBackend(tb testing.TB, kind Kind, c redis.UniversalClient) *Backend {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		unavailable(tb, string(kind)+" unreachable: "+err.Error())
	}
	if cc, ok := c.(*redis.ClusterClient); ok {
		// Wait until every master has its slots: a fresh cluster takes a moment.
		if err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return n.Ping(ctx).Err() }); err != nil {
			c.Close()
			unavailable(tb, "cluster not ready: "+err.Error())
		}
	}
	b := &Backend{Kind: kind, Client: c, Prefix: NewPrefix(), Clock: &Clock{rdb: c}}
	tb.Cleanup(func() {
		b.deleteKeys()
		c.Close()
	})
	return b
}

// Isolated returns a copy of b with a key prefix of its own, whose keys are
// deleted when tb ends: for subtests that share a server but must not see
// each other's keys.
func (b *Backend) Isolated(tb testing.TB) *Backend {
	sub := *b
	sub.Prefix = NewPrefix()
	tb.Cleanup(sub.deleteKeys)
	return &sub
}

// deleteKeys deletes every key under the prefix, as well as it can: it runs
// in cleanups, where a server that went away is no news.
func (b *Backend) deleteKeys() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	keys, err := b.Keys(ctx)
	if err != nil {
		return
	}
	for _, k := range keys {
		b.Client.Del(ctx, k)
	}
}

// NewPrefix returns a fresh key prefix, unique to a test.
func NewPrefix() string {
	var b [6]byte
	rand.Read(b[:])
	return "sctest:" + hex.EncodeToString(b[:]) + ":"
}

// Keys lists every key under the backend's prefix, on every master.
func (b *Backend) Keys(ctx context.Context) ([]string, error) {
	scan := func(ctx context.Context, c redis.Cmdable) ([]string, error) {
		var out []string
		iter := c.Scan(ctx, 0, b.Prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			out = append(out, iter.Val())
		}
		return out, iter.Err()
	}
	cc, ok := b.Client.(*redis.ClusterClient)
	if !ok {
		return scan(ctx, b.Client)
	}
	var mu sync.Mutex
	var all []string
	err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		ks, err := scan(ctx, n)
		mu.Lock()
		all = append(all, ks...)
		mu.Unlock()
		return err
	})
	return all, err
}

// Snapshot is Dump with each key's content sorted, fit to compare two
// moments of the keyspace (cmp.Diff); an error fails t.
func (b *Backend) Snapshot(t testing.TB) map[string][]string {
	t.Helper()
	d, err := b.Dump(context.Background())
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	for _, v := range d {
		slices.Sort(v)
	}
	return d
}

// Dump returns every key under the prefix with all of its content (hash
// fields and values, zset members), as raw strings, for tests that inspect
// what the store writes.
func (b *Backend) Dump(ctx context.Context) (map[string][]string, error) {
	keys, err := b.Keys(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(keys))
	for _, k := range keys {
		typ, err := b.Client.Type(ctx, k).Result()
		if err != nil {
			return nil, err
		}
		var vals []string
		switch typ {
		case "hash":
			m, err := b.Client.HGetAll(ctx, k).Result()
			if err != nil {
				return nil, err
			}
			for f, v := range m {
				vals = append(vals, f, v)
			}
		case "zset":
			vals, err = b.Client.ZRange(ctx, k, 0, -1).Result()
			if err != nil {
				return nil, err
			}
		case "none":
			continue
		default:
			v, err := b.Client.Dump(ctx, k).Result()
			if err != nil {
				return nil, err
			}
			vals = []string{typ, v}
		}
		out[k] = vals
	}
	return out, nil
}
