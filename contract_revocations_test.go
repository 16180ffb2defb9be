package sessioncache_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// feed collects what WatchRevocations reports, for one test.
type feed struct {
	notices chan redisstore.Notice
}

// watch starts WatchRevocations on f's store until the test ends, and
// waits for its subscription.
func watch(t *testing.T, f *fixture) *feed {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &feed{notices: make(chan redisstore.Notice, 1024)}
	done := make(chan error, 1)
	go func() {
		done <- f.Store.WatchRevocations(ctx, 20*time.Millisecond, func(n redisstore.Notice) { w.notices <- n })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("WatchRevocations returned %v, want context.Canceled", err)
		}
	})
	w.next(t, redisstore.NoticeSubscribed)
	return w
}

// next returns the next notice of the kind, skipping synced ones, and fails
// t on any other kind.
func (w *feed) next(t *testing.T, kind redisstore.NoticeKind) redisstore.Notice {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case n := <-w.notices:
			if n.Kind == kind {
				return n
			}
			if n.Kind != redisstore.NoticeSynced {
				t.Fatalf("got a %v notice (%+v) while waiting for %v", n.Kind, n, kind)
			}
		case <-deadline:
			t.Fatalf("no %v notice within 10s", kind)
		}
	}
}

// until returns the revocations reported up to the first synced notice
// later than after: every revocation that completed before after.
func (w *feed) until(t *testing.T, after time.Time) []redisstore.Notice {
	t.Helper()
	var got []redisstore.Notice
	deadline := time.After(10 * time.Second)
	for {
		select {
		case n := <-w.notices:
			switch n.Kind {
			case redisstore.NoticeRevoked:
				got = append(got, n)
			case redisstore.NoticeSynced:
				if n.Time.After(after) {
					return got
				}
			default:
				t.Fatalf("unexpected %v notice: %+v", n.Kind, n)
			}
		case <-deadline:
			t.Fatalf("no synced notice after %v within 10s", after)
		}
	}
}

// revoked flattens notices into "reason session" pairs, sorted.
func revoked(ns []redisstore.Notice) []string {
	var out []string
	for _, n := range ns {
		for _, id := range n.SessionIDs {
			out = append(out, string(n.Reason)+" "+id)
		}
	}
	slices.Sort(out)
	return out
}

// testRevocationFeed: every way a session is revoked (logout by id or by
// token, log out everywhere, reuse, eviction at the cap) is reported on the
// feed by the script that revokes it, before any synced notice later than
// the call's return; rotations and logins that revoke nothing report
// nothing.
func testRevocationFeed(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{MaxSessions: 3})
	ctx := context.Background()
	w := watch(t, f)
	check := func(what string, want ...string) {
		t.Helper()
		slices.Sort(want)
		if d := cmp.Diff(want, revoked(w.until(t, time.Now()))); d != "" {
			t.Fatalf("%s: revocations reported (-want +got):\n%s", what, d)
		}
	}
	a := f.issue(t, "alice", laptop)
	a1 := f.rotate(t, a.Token)
	check("a login and a rotation")

	if _, err := f.Store.RevokeSession(ctx, "alice", a.SessionID); err != nil {
		t.Fatal(err)
	}
	check("RevokeSession", "logout "+a.SessionID)
	if n, err := f.Store.RevokeSession(ctx, "alice", a.SessionID); n != 0 || err != nil {
		t.Fatalf("RevokeSession again: %d, %v", n, err)
	}
	check("RevokeSession of a revoked session")

	bt := f.issue(t, "alice", laptop)
	if _, err := f.Store.RevokeToken(ctx, bt.Token); err != nil {
		t.Fatal(err)
	}
	check("RevokeToken", "logout "+bt.SessionID)

	c := f.issue(t, "alice", laptop)
	c1 := f.rotate(t, c.Token)
	f.rotate(t, c1.Token)
	_, err := f.Store.Rotate(ctx, c.Token, redisstore.Client{})
	wantErr(t, "reuse", err, redisstore.ErrReused)
	check("reuse", "reuse "+c.SessionID)

	// The cap is 3: the fourth login evicts the least recently used.
	var s []redisstore.Grant
	for range 4 {
		s = append(s, f.issue(t, "bob", laptop))
		b.Clock.Advance(5 * time.Millisecond)
	}
	check("a login at the cap", "evicted "+s[0].SessionID)

	if _, err := f.Store.RevokeAll(ctx, "bob", s[1].SessionID); err != nil {
		t.Fatal(err)
	}
	check("RevokeAll but one", "logout_all "+s[2].SessionID, "logout_all "+s[3].SessionID)
	if _, err := f.Store.RevokeAll(ctx, "bob", ""); err != nil {
		t.Fatal(err)
	}
	check("RevokeAll", "logout_all "+s[1].SessionID)
	_ = a1
}

// testRevocationFeedLost: when the subscription breaks, the feed says it is
// lost, subscribes again by itself and says so, and then reports
// revocations again.
func testRevocationFeedLost(t *testing.T, b *redistest.Backend) {
	p := b.Private(t)
	f := newFixture(t, p, redisstore.Options{})
	ctx := context.Background()
	w := watch(t, f)
	switch p.Kind {
	case redistest.Mini:
		p.Mini.Close()
		if err := p.Mini.Restart(); err != nil {
			t.Fatal(err)
		}
	case redistest.Cluster:
		err := p.Client.(*redis.ClusterClient).ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.ClientKillByFilter(ctx, "TYPE", "pubsub").Err()
		})
		if err != nil {
			t.Fatal(err)
		}
	default:
		if err := p.Client.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if n := w.next(t, redisstore.NoticeLost); n.Err == nil {
		t.Fatalf("lost notice without an error: %+v", n)
	}
	w.next(t, redisstore.NoticeSubscribed)
	g := f.issue(t, "alice", laptop)
	if _, err := f.Store.RevokeSession(ctx, "alice", g.SessionID); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"logout " + g.SessionID}, revoked(w.until(t, time.Now()))); d != "" {
		t.Fatalf("after resubscribing (-want +got):\n%s", d)
	}
}
