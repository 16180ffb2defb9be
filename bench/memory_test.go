package bench

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/redisstore"
)

// footprint is what a set of sessions costs in Redis.
type footprint struct {
	// usage is the sum of MEMORY USAGE over the keys (the session hashes and
	// the users' indexes): exact per key, even on a shared server.
	usage int64
	// keys counts them.
	keys int
}

func measureKeys(ctx context.Context, rdb *redis.Client, prefix string) (footprint, error) {
	var f footprint
	iter := rdb.Scan(ctx, 0, prefix+"*", 10000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return f, err
	}
	cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.MemoryUsage(ctx, k, 0)
		}
		return nil
	})
	if err != nil {
		return f, err
	}
	for _, c := range cmds {
		f.usage += c.(*redis.IntCmd).Val()
	}
	f.keys = len(keys)
	return f, nil
}

// grow logs in one session for each user (with realistic metadata) and
// rotates each session rotations times. It returns the current tokens.
func grow(ctx context.Context, s *redisstore.Store, users []string, rotations int) ([]string, error) {
	toks := make([]string, len(users))
	err := Parallel(len(users), func(i int) error {
		g, err := s.Issue(ctx, users[i], Login)
		toks[i] = g.Token
		return err
	})
	if err == nil {
		err = rotateAll(ctx, s, toks, rotations)
	}
	return toks, err
}

// rotateAll rotates each session of toks n times, and keeps toks current.
func rotateAll(ctx context.Context, s *redisstore.Store, toks []string, n int) error {
	return Parallel(len(toks), func(i int) error {
		for range n {
			g, err := s.Rotate(ctx, toks[i], Refresh)
			if err != nil {
				return err
			}
			toks[i] = g.Token
		}
		return nil
	})
}

// TestMemoryFlat checks, on a real Redis, that a session costs the same
// after 1,000 rotations as after one: the store keeps no tombstone per
// rotated token.
func TestMemoryFlat(t *testing.T) {
	url := os.Getenv(envRedisURL)
	if url == "" {
		t.Skipf("no real Redis: set %s", envRedisURL)
	}
	ctx := context.Background()
	rdb := newRedisClient(t, url)
	prefix := newPrefix(t, rdb)
	s, err := redisstore.New(rdb, redisstore.Options{Secret: benchSecret, KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	const sessions, more = 20, 999
	toks, err := grow(ctx, s, userIDs(sessions), 1)
	if err != nil {
		t.Fatal(err)
	}
	before, err := measureKeys(ctx, rdb, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := rotateAll(ctx, s, toks, more); err != nil {
		t.Fatal(err)
	}
	after, err := measureKeys(ctx, rdb, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after 1 rotation: %d keys, %d bytes per session; after %d: %d keys, %d bytes per session",
		before.keys, before.usage/sessions, 1+more, after.keys, after.usage/sessions)
	if after.keys != before.keys {
		t.Errorf("keys: %d after 1 rotation, %d after %d", before.keys, after.keys, 1+more)
	}
	// The generation in the state field grows from 1 to 4 digits.
	const epsilon = 8
	if after.usage > before.usage+epsilon*sessions {
		t.Errorf("MEMORY USAGE per session grew from %d to %d bytes over %d rotations (allowed: +%d)",
			before.usage/sessions, after.usage/sessions, more, epsilon)
	}
}

// memoryResults caches each memory measurement: it does not depend on b.N,
// and the larger ones take long.
var memoryResults sync.Map

type memoryResult struct {
	used, usage, keys float64 // per session
}

// BenchmarkMemory reports the Redis memory per live session, with realistic
// metadata (device id, device name, IP, a 70-byte user agent), after 1 to
// 1,000 rotations of each session, and for 100k sessions: used-B/session
// from INFO memory used_memory before and after, on a fresh server of its
// own (it counts the keyspace's dictionary and expiry entries too), and
// usage-B/session from MEMORY USAGE of each key. Each user has one session:
// the index costs the most per session that way. The ns/op is meaningless.
// -short scales the session counts down.
func BenchmarkMemory(b *testing.B) {
	cases := []struct{ sessions, rotations int }{
		{1000, 1}, {1000, 10}, {1000, 100}, {1000, 1000}, {100000, 1},
	}
	for _, c := range cases {
		if testing.Short() {
			c.sessions /= 50
		}
		b.Run(fmt.Sprintf("sessions=%d/rotations=%d", c.sessions, c.rotations), func(b *testing.B) {
			v, ok := memoryResults.Load(b.Name())
			if !ok {
				r := measureMemory(b, c.sessions, c.rotations)
				memoryResults.Store(b.Name(), r)
				v = r
			}
			r := v.(memoryResult)
			b.ReportMetric(r.used, "used-B/session")
			b.ReportMetric(r.usage, "usage-B/session")
			b.ReportMetric(r.keys, "keys/session")
		})
	}
}

func measureMemory(b *testing.B, sessions, rotations int) memoryResult {
	ctx := context.Background()
	// A fresh server for each case: nothing else in used_memory. The
	// readings go through one connection of their own, taken while no other
	// client is connected, so that connection buffers are not counted.
	url := startRedis(b)
	m := newRedisClient(b, url+"?pool_size=1")
	const prefix = "scbench:mem:"
	work := func(prefix string, f func(s *redisstore.Store) error) {
		rdb := newRedisClient(b, url)
		s, err := redisstore.New(rdb, redisstore.Options{Secret: benchSecret, KeyPrefix: prefix})
		if err == nil {
			err = f(s)
		}
		rdb.Close()
		if err != nil {
			b.Fatal(err)
		}
		waitAlone(b, m)
	}
	// Warm up under another prefix: the server's first keys and scripts
	// cost about 200 KB once, whatever the number of sessions.
	work("scbench:warmup:", func(s *redisstore.Store) error {
		if err := s.Ping(ctx); err != nil {
			return err
		}
		_, err := grow(ctx, s, userIDs(256), 2)
		return err
	})
	before, err := infoInt(ctx, m, "memory", "used_memory")
	if err != nil {
		b.Fatal(err)
	}
	work(prefix, func(s *redisstore.Store) error {
		_, err := grow(ctx, s, userIDs(sessions), rotations)
		return err
	})
	after, err := infoInt(ctx, m, "memory", "used_memory")
	if err != nil {
		b.Fatal(err)
	}
	f, err := measureKeys(ctx, m, prefix)
	if err != nil {
		b.Fatal(err)
	}
	n := float64(sessions)
	return memoryResult{used: float64(after-before) / n, usage: float64(f.usage) / n, keys: float64(f.keys) / n}
}

// waitAlone waits until m's connection is the server's only client.
func waitAlone(b *testing.B, m *redis.Client) {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		n, err := infoInt(context.Background(), m, "clients", "connected_clients")
		if err != nil {
			b.Fatal(err)
		}
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d clients still connected", n)
		}
	}
}
