package sessioncache_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// testScriptCacheLoss: after SCRIPT FLUSH (what a restart or a failover does
// to the script cache), the next call loads its script again and succeeds.
func testScriptCacheLoss(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	if err := f.Store.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	g := f.issue(t, "alice", laptop)
	flush := func(ctx context.Context, c redis.Cmdable) error { return c.ScriptFlush(ctx).Err() }
	var err error
	if cc, ok := b.Client.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return flush(ctx, c) })
	} else {
		err = flush(ctx, b.Client)
	}
	if err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	// The next call heals the cache (EVALSHA, NOSCRIPT, EVAL).
	g = f.rotate(t, g.Token)
	if _, err := f.Store.Validate(ctx, g.Token); err != nil {
		t.Fatal(err)
	}
}

// TestRedisDown: a failing Redis is an error to the caller: never a valid
// token, never a panic, never an outcome that blames the token.
func TestRedisDown(t *testing.T) {
	b := *redistest.For(t, redistest.Mini)
	// No retries: each failing call returns at once (go-redis retries a
	// failed dial three times with backoff by default).
	b.Client = redis.NewClient(&redis.Options{Addr: b.Mini.Addr(), MaxRetries: -1})
	defer b.Client.Close()
	f := newFixture(t, &b, redisstore.Options{})
	ctx := context.Background()
	g := f.issue(t, "alice", laptop)
	b.Mini.Close()
	outcomes := []error{redisstore.ErrMalformed, redisstore.ErrUnknown, redisstore.ErrExpired, redisstore.ErrRevoked, redisstore.ErrReused, redisstore.ErrInvalidArgument}
	check := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s with Redis down: no error", what)
		}
		for _, o := range outcomes {
			if errors.Is(err, o) {
				t.Fatalf("%s with Redis down: %v, an outcome, not an infrastructure error", what, err)
			}
		}
	}
	_, err := f.Store.Issue(ctx, "alice", laptop)
	check("Issue", err)
	_, err = f.Store.Rotate(ctx, g.Token, redisstore.Client{})
	check("Rotate", err)
	_, err = f.Store.Validate(ctx, g.Token)
	check("Validate", err)
	_, err = f.Store.ListSessions(ctx, "alice", redisstore.ListOptions{})
	check("ListSessions", err)
	_, err = f.Store.RevokeSession(ctx, "alice", g.SessionID)
	check("RevokeSession", err)
	_, err = f.Store.RevokeToken(ctx, g.Token)
	check("RevokeToken", err)
	_, err = f.Store.RevokeAll(ctx, "alice", "")
	check("RevokeAll", err)
	check("Ping", f.Store.Ping(ctx))
	// A cancelled context is an error too, returned promptly.
	ctx2, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = f.Store.Rotate(ctx2, g.Token, redisstore.Client{})
	check("Rotate with cancelled context", err)
}

// TestEvictionPolicy: CheckEvictionPolicy (through INFO, on every master)
// refuses every maxmemory-policy but noeviction, and fails where it cannot
// tell (miniredis has no INFO).
func TestEvictionPolicy(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	s := redistest.NewStore(t, rdb, redisstore.Options{})
	for _, policy := range []string{"noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"} {
		if err := rdb.ConfigSet(ctx, "maxmemory-policy", policy).Err(); err != nil {
			t.Fatal(err)
		}
		err := s.CheckEvictionPolicy(ctx)
		switch {
		case policy == "noeviction" && err != nil:
			t.Errorf("CheckEvictionPolicy on %s = %v, want nil", policy, err)
		case policy != "noeviction" && !errors.Is(err, redisstore.ErrEvictionPolicy):
			t.Errorf("CheckEvictionPolicy on %s = %v, want ErrEvictionPolicy", policy, err)
		}
	}
	t.Run("cluster", func(t *testing.T) {
		b := redistest.For(t, redistest.Cluster)
		s := b.NewStore(t, redisstore.Options{})
		if err := s.CheckEvictionPolicy(ctx); err != nil {
			t.Fatalf("CheckEvictionPolicy on the test cluster: %v", err)
		}
	})
	t.Run("miniredis", func(t *testing.T) {
		// miniredis has no INFO memory: the check must fail, not pass.
		b := redistest.For(t, redistest.Mini)
		s := b.NewStore(t, redisstore.Options{})
		if err := s.CheckEvictionPolicy(ctx); err == nil {
			t.Fatal("CheckEvictionPolicy passed without INFO")
		}
	})
}

// TestRevocationReplicas: with RevocationReplicas, a revocation returns only
// once a replica has it, and says so when none does.
func TestRevocationReplicas(t *testing.T) {
	ctx := context.Background()
	master := redistest.StartServer(t, "--repl-diskless-sync-delay", "0")
	replica := redistest.StartServer(t, "--replicaof", "127.0.0.1", fmt.Sprint(master.Port))
	rc := replica.Client(t)
	mc := master.Client(t)
	// Wait until the master counts the replica as acknowledging writes: the
	// replica's "link up" comes before the master sees it online, and a WAIT
	// in between answers 0.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mc.Set(ctx, "replica-probe", "1", time.Minute)
		if n, err := mc.Do(ctx, "wait", 1, 100).Int(); err == nil && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the master never saw its replica acknowledge a write")
		}
	}
	mc.Del(ctx, "replica-probe")
	newStore := func(replicas int) *redistest.Store {
		return redistest.NewStore(t, mc, redisstore.Options{RevocationReplicas: replicas, ReplicationTimeout: 200 * time.Millisecond})
	}
	s := newStore(1)
	g, err := s.Issue(ctx, "alice", laptop)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.RevokeToken(ctx, g.Token); n != 1 || err != nil {
		t.Fatalf("RevokeToken with one replica = %d, %v", n, err)
	}
	// The replica has the tombstone as soon as the call returns.
	rs := redistest.NewStore(t, rc, redisstore.Options{})
	if _, err := rs.Validate(ctx, g.Token); !errors.Is(err, redisstore.ErrRevoked) {
		t.Fatalf("Validate on the replica right after RevokeToken: %v", err)
	}
	// Asking for two replicas when there is one: applied, but reported.
	s2 := newStore(2)
	g, _ = s2.Issue(ctx, "alice", laptop)
	n, err := s2.RevokeAll(ctx, "alice", "")
	if n != 1 || !errors.Is(err, redisstore.ErrNotReplicated) {
		t.Fatalf("RevokeAll wanting 2 replicas = %d, %v; want 1, ErrNotReplicated", n, err)
	}
	if _, err := s2.Validate(ctx, g.Token); !errors.Is(err, redisstore.ErrRevoked) {
		t.Fatalf("revocation not applied: %v", err)
	}
	// Reuse detection waits too, and still reports the reuse.
	g, _ = s2.Issue(ctx, "bob", laptop)
	g1, _ := s2.Rotate(ctx, g.Token, redisstore.Client{})
	s2.Rotate(ctx, g1.Token, redisstore.Client{})
	_, err = s2.Rotate(ctx, g.Token, redisstore.Client{})
	if !errors.Is(err, redisstore.ErrReused) || !errors.Is(err, redisstore.ErrNotReplicated) {
		t.Fatalf("reuse wanting 2 replicas: %v", err)
	}
}

// TestEventContext: events carry the context of the call that caused them,
// so a handler can attach the request's id or trace span.
func TestEventContext(t *testing.T) {
	type key struct{}
	b := redistest.For(t, redistest.Mini)
	var seen []any
	s := b.NewStore(t, redisstore.Options{Grace: redisstore.NoGrace, OnEvent: func(ctx context.Context, e redisstore.Event) {
		seen = append(seen, ctx.Value(key{}))
	}})
	ctx := context.WithValue(context.Background(), key{}, "request-7")
	g, _ := s.Issue(ctx, "alice", laptop)
	s.Rotate(ctx, g.Token, redisstore.Client{})
	if _, err := s.Rotate(ctx, g.Token, redisstore.Client{}); !errors.Is(err, redisstore.ErrReused) {
		t.Fatalf("replay: %v", err)
	}
	if len(seen) != 1 || seen[0] != "request-7" {
		t.Fatalf("events saw contexts %v, want the caller's", seen)
	}
}
