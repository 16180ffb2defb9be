package sessioncache_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/lua"
	"github.com/sessioncache/sessioncache/redisstore"
)

// Exact retries: go-redis retries a command whose reply was lost (MaxRetries
// 3 by default). The retry resends the script's arguments, the call's id
// included, and must return, and make the store report, exactly what the
// first attempt would have: the same result, the same events, once.

// eventsOf returns the events of kind k, without their times.
func eventsOf(ev []redisstore.Event, k redisstore.EventKind) []redisstore.Event {
	var out []redisstore.Event
	for _, e := range ev {
		if e.Kind == k {
			e.Time = time.Time{}
			out = append(out, e)
		}
	}
	return out
}

var sortEvents = cmpopts.SortSlices(func(a, b redisstore.Event) bool { return a.SessionID < b.SessionID })

// testLostReplies: a write whose reply is lost after Redis ran it (Issue
// with an eviction, Rotate with grace on and off, a reuse detection, each
// revocation), retried by go-redis, returns what the first attempt did and
// emits its events once.
func testLostReplies(t *testing.T, b *redistest.Backend) {
	ctx := context.Background()
	// faulty returns a fixture whose store runs through proxies that drop
	// the reply of the first command match accepts, and the drop counter.
	faulty := func(t *testing.T, b *redistest.Backend, opt redisstore.Options, match func([]string) bool) (*fixture, func() int) {
		rule, drops := redistest.DropFirst(match)
		st, _ := b.FaultyStore(t, opt, rule)
		return &fixture{Backend: b, Store: st}, drops
	}
	script := func(src string) func([]string) bool {
		return func(a []string) bool { return redistest.RunsScript(a, src) }
	}

	t.Run("IssueWithEviction", func(t *testing.T) {
		b := b.Isolated(t)
		opt := redisstore.Options{MaxSessions: 2}
		// The second issue.lua call of a login at the cap is the one that
		// evicts: it carries the candidates' keys.
		f, drops := faulty(t, b, opt, func(a []string) bool { return redistest.RunsScript(a, lua.Issue) && len(a) > 2 && a[2] != "2" })
		direct := newFixture(t, b, opt)
		old := direct.issue(t, "alice", laptop)
		b.Clock.Advance(5 * time.Millisecond)
		direct.rotate(t, direct.issue(t, "alice", laptop).Token)
		g, err := f.Store.Issue(ctx, "alice", laptop)
		if err != nil || drops() != 1 {
			t.Fatalf("Issue with its reply dropped: %v (%d replies dropped)", err, drops())
		}
		want := []redisstore.Event{{Kind: redisstore.EventSessionEvicted, UserID: "alice", SessionID: old.SessionID, Reason: redisstore.ReasonEvicted}}
		if d := cmp.Diff(want, eventsOf(f.TakeEvents(), redisstore.EventSessionEvicted)); d != "" {
			t.Errorf("eviction events of the retried Issue (-want +got):\n%s", d)
		}
		if _, err := f.Store.Validate(ctx, g.Token); err != nil {
			t.Fatalf("the retried login's token: %v", err)
		}
		if l := f.list(t, "alice"); len(l) != 2 {
			t.Errorf("%d sessions after the retried login, want 2", len(l))
		}
	})
	for _, grace := range []time.Duration{time.Minute, redisstore.NoGrace} {
		t.Run("Rotate/grace="+grace.String(), func(t *testing.T) {
			b := b.Isolated(t)
			opt := redisstore.Options{Grace: grace}
			f, drops := faulty(t, b, opt, script(lua.Rotate))
			g0 := f.issue(t, "alice", laptop)
			g1, err := f.Store.Rotate(ctx, g0.Token, redisstore.Client{})
			if err != nil || drops() != 1 {
				t.Fatalf("Rotate with its reply dropped: %v (%d replies dropped)", err, drops())
			}
			if g1.Replayed {
				t.Errorf("the retried rotation reports a grace replay; the first attempt created the successor")
			}
			if ev := f.TakeEvents(); len(ev) != 0 {
				t.Errorf("events of a retried rotation: %+v, want none", ev)
			}
			if _, err := f.Store.Validate(ctx, g1.Token); err != nil {
				t.Fatalf("the retried rotation's successor: %v", err)
			}
			if g2 := f.rotate(t, g1.Token); g2.Token == g1.Token {
				t.Fatal("no rotation after the retry")
			}
		})
	}
	t.Run("RotateReuse", func(t *testing.T) {
		b := b.Isolated(t)
		opt := redisstore.Options{Grace: redisstore.NoGrace}
		direct := newFixture(t, b, opt)
		g0 := direct.issue(t, "alice", laptop)
		direct.rotate(t, g0.Token)
		f, drops := faulty(t, b, opt, script(lua.Rotate))
		_, err := f.Store.Rotate(ctx, g0.Token, redisstore.Client{})
		if !errors.Is(err, redisstore.ErrReused) || drops() != 1 {
			t.Fatalf("reuse detection with its reply dropped: %v (%d dropped), want ErrReused", err, drops())
		}
		want := []redisstore.Event{{Kind: redisstore.EventReuseDetected, UserID: "alice", SessionID: g0.SessionID, Reason: redisstore.ReasonReuse}}
		if d := cmp.Diff(want, eventsOf(f.TakeEvents(), redisstore.EventReuseDetected)); d != "" {
			t.Errorf("events (-want +got):\n%s", d)
		}
	})
	t.Run("RevokeSession", func(t *testing.T) {
		b := b.Isolated(t)
		f, drops := faulty(t, b, redisstore.Options{}, script(lua.Revoke))
		g := f.issue(t, "alice", laptop)
		n, err := f.Store.RevokeSession(ctx, "alice", g.SessionID)
		if n != 1 || err != nil || drops() != 1 {
			t.Fatalf("RevokeSession with its reply dropped = %d, %v (%d dropped); want 1", n, err, drops())
		}
		want := []redisstore.Event{{Kind: redisstore.EventSessionRevoked, UserID: "alice", SessionID: g.SessionID, Reason: redisstore.ReasonLogout}}
		if d := cmp.Diff(want, eventsOf(f.TakeEvents(), redisstore.EventSessionRevoked)); d != "" {
			t.Errorf("events (-want +got):\n%s", d)
		}
	})
	t.Run("RevokeToken", func(t *testing.T) {
		b := b.Isolated(t)
		f, drops := faulty(t, b, redisstore.Options{}, script(lua.Revoke))
		g := f.issue(t, "alice", laptop)
		n, err := f.Store.RevokeToken(ctx, g.Token)
		if n != 1 || err != nil || drops() != 1 {
			t.Fatalf("RevokeToken with its reply dropped = %d, %v (%d dropped); want 1", n, err, drops())
		}
		want := []redisstore.Event{{Kind: redisstore.EventSessionRevoked, UserID: "alice", SessionID: g.SessionID, Reason: redisstore.ReasonLogout}}
		if d := cmp.Diff(want, eventsOf(f.TakeEvents(), redisstore.EventSessionRevoked)); d != "" {
			t.Errorf("events (-want +got):\n%s", d)
		}
	})
	t.Run("RevokeAll", func(t *testing.T) {
		b := b.Isolated(t)
		f, drops := faulty(t, b, redisstore.Options{}, script(lua.RevokeAll))
		var want []redisstore.Event
		for i := 0; i < 3; i++ {
			g := f.issue(t, "alice", laptop)
			want = append(want, redisstore.Event{Kind: redisstore.EventSessionRevoked, UserID: "alice", SessionID: g.SessionID, Reason: redisstore.ReasonLogoutAll})
		}
		n, err := f.Store.RevokeAll(ctx, "alice", "")
		if n != 3 || err != nil || drops() != 1 {
			t.Fatalf("RevokeAll with its reply dropped = %d, %v (%d dropped); want 3", n, err, drops())
		}
		if d := cmp.Diff(want, eventsOf(f.TakeEvents(), redisstore.EventSessionRevoked), sortEvents); d != "" {
			t.Errorf("events (-want +got):\n%s", d)
		}
	})
}

// testLateRetry: tab A's rotation runs in Redis, its reply is lost, and
// go-redis's retry is held up. Meanwhile tab B refreshes with the same
// token (a grace replay) and then rotates once more. A's retry then
// presents a grandparent; it is recognised by its call id and gets what
// the first attempt got, without revoking anything. The same token
// presented again later, by another call, is a replay.
func testLateRetry(t *testing.T, b *redistest.Backend) {
	ctx := context.Background()
	rule, release, attempts := redistest.DropThenHold(t, func(args []string) bool { return redistest.RunsScript(args, lua.Rotate) })
	opt := redisstore.Options{Grace: time.Minute}
	tabA, _ := b.FaultyStore(t, opt, rule)
	f := newFixture(t, b, opt)
	g0 := f.issue(t, "alice", laptop)
	type result struct {
		g   redisstore.Grant
		err error
	}
	done := make(chan result, 1)
	go func() {
		g, err := tabA.Rotate(ctx, g0.Token, redisstore.Client{})
		done <- result{g, err}
	}()
	waitUntil(t, "tab A's first attempt ran and its retry is held", func() bool { return attempts() >= 2 })
	g1, err := f.Store.Rotate(ctx, g0.Token, redisstore.Client{})
	if err != nil || !g1.Replayed {
		t.Fatalf("tab B in grace: %v (replayed %v)", err, g1.Replayed)
	}
	g2 := f.rotate(t, g1.Token)
	release()
	r := <-done
	if r.err != nil || r.g.Token != g1.Token || r.g.Replayed {
		t.Fatalf("late retry: %v (same token as the first attempt: %v, replayed %v); want the first attempt's answer", r.err, r.g.Token == g1.Token, r.g.Replayed)
	}
	if ev := tabA.TakeEvents(); len(ev) != 0 {
		t.Errorf("late retry emitted %+v", ev)
	}
	if _, err := f.Store.Validate(ctx, g2.Token); err != nil {
		t.Fatalf("the session suffered from a late retry: %v", err)
	}
	// The same token presented by another call is a replay.
	_, err = f.Store.Rotate(ctx, g0.Token, redisstore.Client{})
	wantErr(t, "replay after the last rotation", err, redisstore.ErrReused)
}
