package sessioncache_test

import (
	"context"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// Lifetimes are decided by Redis's clock. On miniredis the tests move it; on
// a real server they use short lifetimes and wait until its clock has
// passed them (redistest.Clock.Advance). A "still valid" step needs the
// call to reach Redis within the slack noted beside it.

// testIdleExpiry: a session unused for IdleTTL expires by Redis's clock,
// each rotation sliding the deadline; then every token of it is ErrExpired,
// older ones included, it is not listed, and revoking it counts 0.
func testIdleExpiry(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{IdleTTL: 1500 * time.Millisecond, AbsoluteTTL: time.Minute})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	b.Clock.Advance(900 * time.Millisecond)
	g1 := f.rotate(t, g0.Token) // rotation slides the idle deadline
	b.Clock.Advance(900 * time.Millisecond)
	// Past the login's idle deadline, within the rotation's (600 ms slack).
	if _, err := f.Store.Validate(ctx, g1.Token); err != nil {
		t.Fatalf("Validate 0.9s after rotation (idle 1.5s): %v", err)
	}
	b.Clock.Advance(700 * time.Millisecond)
	_, err := f.Store.Validate(ctx, g1.Token)
	wantErr(t, "Validate after idle TTL", err, redisstore.ErrExpired)
	_, err = f.Store.Rotate(ctx, g1.Token, redisstore.Client{})
	wantErr(t, "Rotate after idle TTL", err, redisstore.ErrExpired)
	_, err = f.Store.Rotate(ctx, g0.Token, redisstore.Client{})
	wantErr(t, "Rotate an older token after idle TTL", err, redisstore.ErrExpired)
	if l := f.list(t, "user-1"); len(l) != 0 {
		t.Errorf("ListSessions after idle expiry = %d; want none", len(l))
	}
	if n, err := f.Store.RevokeAll(ctx, "user-1", ""); n != 0 || err != nil {
		t.Errorf("RevokeAll after expiry = %d, %v; want 0", n, err)
	}
	if n, err := f.Store.RevokeToken(ctx, g1.Token); n != 0 || err != nil {
		t.Errorf("RevokeToken after expiry = %d, %v; want 0", n, err)
	}
}

// testAbsoluteExpiry: a session ends at its absolute deadline however
// recently it rotated: a rotation caps the idle deadline at it, and past it
// Rotate and Validate get ErrExpired.
func testAbsoluteExpiry(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{IdleTTL: 800 * time.Millisecond, AbsoluteTTL: 1200 * time.Millisecond})
	ctx := context.Background()
	g := f.issue(t, "user-1", laptop)
	abs := g.SessionExpiresAt
	b.Clock.Advance(500 * time.Millisecond)
	// 0.5s in: the new idle deadline (1.3s) is capped by the absolute one
	// (1.2s). 700 ms slack.
	next, err := f.Store.Rotate(ctx, g.Token, redisstore.Client{})
	if err != nil {
		t.Fatalf("rotation before the absolute deadline: %v", err)
	}
	if !next.ExpiresAt.Equal(abs) || !next.SessionExpiresAt.Equal(abs) {
		t.Fatalf("deadlines %v/%v, want both capped at the absolute deadline %v", next.ExpiresAt, next.SessionExpiresAt, abs)
	}
	b.Clock.Advance(abs.Sub(b.Clock.Now()) + time.Millisecond)
	_, err = f.Store.Rotate(ctx, next.Token, redisstore.Client{})
	wantErr(t, "Rotate after absolute deadline", err, redisstore.ErrExpired)
	_, err = f.Store.Validate(ctx, next.Token)
	wantErr(t, "Validate after absolute deadline", err, redisstore.ErrExpired)
}

// testEveryKeyHasTTL: every key that a write leaves (issue, rotate, grace,
// reuse, eviction, revoke, revoke all) has a TTL.
func testEveryKeyHasTTL(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{MaxSessions: 2, Grace: time.Minute})
	ctx := context.Background()
	// Exercise every write path: issue, rotate, grace, reuse, eviction,
	// revoke, revoke all.
	g := f.issue(t, "alice", laptop)
	g1 := f.rotate(t, g.Token)
	f.rotate(t, g.Token) // grace
	f.rotate(t, g1.Token)
	f.issue(t, "alice", laptop)
	f.issue(t, "alice", laptop)                       // evicts
	f.Store.Rotate(ctx, g.Token, redisstore.Client{}) // reuse
	h := f.issue(t, "bob", laptop)
	f.Store.RevokeToken(ctx, h.Token)
	f.issue(t, "carol", laptop)
	f.Store.RevokeAll(ctx, "carol", "")
	keys, err := b.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) < 5 {
		t.Fatalf("only %d keys written: %v", len(keys), keys)
	}
	for _, k := range keys {
		ttl, err := b.Client.PTTL(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 0 {
			t.Errorf("key %s has no TTL (%v)", k, ttl)
		}
	}
}

// realisticClient is the metadata a browser session carries.
var realisticClient = redisstore.Client{
	DeviceID:   "5b0d1b5e-7d1c-4d3e-9a56-0c9f5e6b2a11",
	DeviceName: "Chrome on macOS",
	IPAddress:  "203.0.113.77",
	UserAgent:  "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 Chrome/126.0",
}

// testMemoryFlat: a session's Redis memory does not grow with its rotations
// (at most 8 bytes more after 1,000 than after 3) and stays within 600
// bytes.
func testMemoryFlat(t *testing.T, b *redistest.Backend) {
	if b.Kind == redistest.Mini {
		t.Skip("miniredis does not measure memory")
	}
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	user := "8a1c6a0e-3f7b-4f0e-b1b7-6a2d9f1c0e42"
	g := f.issue(t, user, realisticClient)
	usage := func() int64 {
		keys, err := b.Keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, k := range keys {
			n, err := b.Client.MemoryUsage(ctx, k, 0).Result()
			if err != nil {
				t.Fatalf("MEMORY USAGE %s: %v", k, err)
			}
			total += n
		}
		return total
	}
	rot := redisstore.Client{IPAddress: realisticClient.IPAddress, UserAgent: realisticClient.UserAgent}
	var err error
	// Three rotations fill the record of calls (k) to its bound.
	for i := 0; i < 3; i++ {
		if g, err = f.Store.Rotate(ctx, g.Token, rot); err != nil {
			t.Fatal(err)
		}
	}
	after3 := usage()
	for i := 3; i < 1000; i++ {
		if g, err = f.Store.Rotate(ctx, g.Token, rot); err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
	}
	after1000 := usage()
	t.Logf("%s: Redis bytes for one session with realistic metadata (session hash + user index, MEMORY USAGE): %d after 3 rotations, %d after 1000", b.Kind, after3, after1000)
	// The generation counter in the state field grows by three digits;
	// nothing else may grow.
	if after1000 > after3+8 {
		t.Fatalf("memory grows with rotations: %d bytes after 3, %d after 1000", after3, after1000)
	}
	if after1000 > 600 {
		t.Errorf("%d bytes per session, over the 600-byte budget", after1000)
	}
}

// testNoKeyLeft: once every lifetime has passed, no key of any kind is left:
// Redis's TTLs clean up without a job.
func testNoKeyLeft(t *testing.T, b *redistest.Backend) {
	// Short lifetimes: Redis expires the keys on its own clock (moved on
	// miniredis, waited for on real servers).
	f := newFixture(t, b, redisstore.Options{IdleTTL: 300 * time.Millisecond, AbsoluteTTL: 900 * time.Millisecond, Grace: 50 * time.Millisecond, MaxSessions: 2})
	ctx := context.Background()
	// Every kind of key: live sessions, rotated ones, a tombstone from each
	// kind of revocation, an eviction, and indexes of several users.
	g := f.issue(t, "alice", laptop)
	f.rotate(t, g.Token)
	f.issue(t, "alice", laptop)
	f.issue(t, "alice", laptop) // evicts the first
	h := f.issue(t, "bob", laptop)
	h1 := f.rotate(t, h.Token)
	f.rotate(t, h1.Token)
	f.Store.Rotate(ctx, h.Token, redisstore.Client{}) // reuse: tombstone
	c := f.issue(t, "carol", laptop)
	f.Store.RevokeToken(ctx, c.Token)
	f.issue(t, "dave", laptop)
	f.Store.RevokeAll(ctx, "dave", "")
	keys, err := b.Keys(ctx)
	if err != nil || len(keys) < 6 {
		t.Fatalf("%d keys before expiry (%v): %v", len(keys), err, keys)
	}
	b.Clock.Advance(time.Second)
	// Redis expires keys lazily and in a background cycle: poll.
	deadline := time.Now().Add(5 * time.Second)
	for {
		keys, err = b.Keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys left after every lifetime passed: %v", keys)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
