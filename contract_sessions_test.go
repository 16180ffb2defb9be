package sessioncache_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

func ids(l []redisstore.Session) []string {
	var out []string
	for _, s := range l {
		out = append(out, s.ID)
	}
	return out
}

// testListSessions: a listing shows every live session of the user with its
// metadata, most recently used first, and none past its idle deadline; a
// user without sessions gets an empty listing.
func testListSessions(t *testing.T, b *redistest.Backend) {
	// IdleTTL 1.6s: the index keeps a session 100 ms past its idle deadline.
	f := newFixture(t, b, redisstore.Options{IdleTTL: 1600 * time.Millisecond})
	phone := redisstore.Client{DeviceID: "dev-phone", DeviceName: "Pixel 9", IPAddress: "198.51.100.7", UserAgent: "App/3.1"}
	gl := f.issue(t, "alice", laptop)
	b.Clock.Advance(20 * time.Millisecond)
	gp := f.issue(t, "alice", phone)
	b.Clock.Advance(20 * time.Millisecond)
	gs := f.issue(t, "alice", redisstore.Client{DeviceID: "short-lived"})
	f.issue(t, "bob", laptop)
	b.Clock.Advance(600 * time.Millisecond)
	// The laptop is now the most recently used: its rotation moves its
	// keep-until past the others'.
	f.rotate(t, gl.Token)
	l := f.list(t, "alice") // before the phone expires: 1 s slack
	if d := cmp.Diff([]string{gl.SessionID, gs.SessionID, gp.SessionID}, ids(l)); d != "" {
		t.Fatalf("ListSessions order, most recently used first (-want +got):\n%s", d)
	}
	if l[2].DeviceName != "Pixel 9" || l[2].IPAddress != phone.IPAddress || l[2].UserAgent != phone.UserAgent || l[2].DeviceID != phone.DeviceID {
		t.Errorf("phone session = %+v", l[2])
	}
	// Past the phone's and the short-lived session's idle deadlines, not
	// the laptop's (about 500 ms slack).
	b.Clock.Advance(1100 * time.Millisecond)
	l = f.list(t, "alice")
	if len(l) != 1 || l[0].ID != gl.SessionID {
		t.Fatalf("after idle expiry: %v; want only the laptop %s", ids(l), gl.SessionID)
	}
	p, err := f.Store.ListSessions(context.Background(), "nobody", redisstore.ListOptions{})
	if err != nil || len(p.Sessions) != 0 || p.Next != "" {
		t.Errorf("ListSessions(nobody) = %+v, %v", p, err)
	}
}

// testListPages: pages are bounded, complete and without duplicates.
func testListPages(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{MaxSessions: 500})
	ctx := context.Background()
	want := map[string]redisstore.Grant{}
	for i := 0; i < 130; i++ {
		g := f.issue(t, "alice", redisstore.Client{DeviceName: fmt.Sprintf("device %d", i)})
		want[g.SessionID] = g
	}
	f.issue(t, "bob", laptop)
	// Default limit: 100, then 30.
	p, err := f.Store.ListSessions(ctx, "alice", redisstore.ListOptions{})
	if err != nil || len(p.Sessions) != redisstore.DefaultListLimit || p.Next == "" {
		t.Fatalf("first default page: %d sessions, next %q, %v", len(p.Sessions), p.Next, err)
	}
	p2, err := f.Store.ListSessions(ctx, "alice", redisstore.ListOptions{Cursor: p.Next})
	if err != nil || len(p2.Sessions) != 30 || p2.Next != "" {
		t.Fatalf("second default page: %d sessions, next %q, %v", len(p2.Sessions), p2.Next, err)
	}
	// Pages of 7: every session once.
	seen := map[string]int{}
	opt := redisstore.ListOptions{Limit: 7}
	pages := 0
	for {
		p, err := f.Store.ListSessions(ctx, "alice", opt)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(p.Sessions) > 7 {
			t.Fatalf("page of %d sessions, limit 7", len(p.Sessions))
		}
		for _, s := range p.Sessions {
			seen[s.ID]++
			if s.UserID != "alice" {
				t.Fatalf("alice's listing shows %+v", s)
			}
		}
		if p.Next == "" {
			break
		}
		opt.Cursor = p.Next
	}
	if pages != 19 || len(seen) != len(want) {
		t.Fatalf("%d pages, %d distinct sessions; want 19 and %d", pages, len(seen), len(want))
	}
	for id, n := range seen {
		if n != 1 || want[id].SessionID == "" {
			t.Fatalf("session %s listed %d times (known: %v)", id, n, want[id].SessionID != "")
		}
	}
	// Sessions revoked between pages, the cursor's own included, are not
	// listed; every other session still is.
	p, err = f.Store.ListSessions(ctx, "alice", redisstore.ListOptions{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	revoked := map[string]bool{p.Sessions[9].ID: true}
	for id := range want {
		if len(revoked) == 20 {
			break
		}
		revoked[id] = true
	}
	for id := range revoked {
		if n, err := f.Store.RevokeSession(ctx, "alice", id); n != 1 || err != nil {
			t.Fatalf("RevokeSession = %d, %v", n, err)
		}
	}
	got := map[string]bool{}
	for _, s := range p.Sessions {
		got[s.ID] = true
	}
	opt = redisstore.ListOptions{Cursor: p.Next, Limit: 10}
	for opt.Cursor != "" {
		p, err := f.Store.ListSessions(ctx, "alice", opt)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range p.Sessions {
			if revoked[s.ID] {
				t.Fatalf("revoked session %s listed", s.ID)
			}
			got[s.ID] = true
		}
		opt.Cursor = p.Next
	}
	for id := range want {
		if !revoked[id] && !got[id] {
			t.Fatalf("live session %s missing after revocations between pages", id)
		}
	}
}

// testRevokeSession: RevokeSession ends the named session of the named user
// only, once (1, then 0), with one logout event; its tokens then get
// RevokedError (reason logout) and every other session keeps working.
func testRevokeSession(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	g := f.issue(t, "alice", laptop)
	other := f.issue(t, "alice", laptop)
	bob := f.issue(t, "bob", laptop)
	// Bob cannot revoke Alice's session by its id.
	if n, err := f.Store.RevokeSession(ctx, "bob", g.SessionID); n != 0 || err != nil {
		t.Fatalf("RevokeSession of another user's session = %d, %v", n, err)
	}
	f.TakeEvents()
	if n, err := f.Store.RevokeSession(ctx, "alice", g.SessionID); n != 1 || err != nil {
		t.Fatalf("RevokeSession = %d, %v; want 1", n, err)
	}
	if ev := f.TakeEvents(); len(ev) != 1 || ev[0].Kind != redisstore.EventSessionRevoked || ev[0].Reason != redisstore.ReasonLogout || ev[0].UserID != "alice" {
		t.Errorf("events = %+v", ev)
	}
	if n, err := f.Store.RevokeSession(ctx, "alice", g.SessionID); n != 0 || err != nil {
		t.Fatalf("second RevokeSession = %d, %v; want 0", n, err)
	}
	_, err := f.Store.Rotate(ctx, g.Token, redisstore.Client{})
	var re *redisstore.RevokedError
	if !errors.As(err, &re) || re.Reason != redisstore.ReasonLogout {
		t.Fatalf("Rotate revoked: %v, want RevokedError(logout)", err)
	}
	for _, tok := range []string{other.Token, bob.Token} {
		if _, err := f.Store.Validate(ctx, tok); err != nil {
			t.Fatalf("unrelated session hurt: %v", err)
		}
	}
	if l := f.list(t, "alice"); len(l) != 1 || l[0].ID != other.SessionID {
		t.Errorf("ListSessions after revoke = %+v", l)
	}
}

// testRevokeToken: RevokeToken with any genuine token of a session, a
// rotated one included, ends the session, once (1, then 0).
func testRevokeToken(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	g0 := f.issue(t, "alice", laptop)
	g1 := f.rotate(t, g0.Token)
	// Any genuine token of the session ends it, the rotated one included.
	if n, err := f.Store.RevokeToken(ctx, g0.Token); n != 1 || err != nil {
		t.Fatalf("RevokeToken = %d, %v; want 1", n, err)
	}
	_, err := f.Store.Validate(ctx, g1.Token)
	wantErr(t, "Validate after RevokeToken", err, redisstore.ErrRevoked)
	if n, err := f.Store.RevokeToken(ctx, g1.Token); n != 0 || err != nil {
		t.Fatalf("RevokeToken again = %d, %v; want 0", n, err)
	}
}

// testRevokeAll: RevokeAll ends every session of the user but the one to
// keep, with a logout_all event each, returns how many it ended, and leaves
// other users' sessions alone.
func testRevokeAll(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	var gs []redisstore.Grant
	for i := 0; i < 5; i++ {
		gs = append(gs, f.issue(t, "alice", laptop))
	}
	bob := f.issue(t, "bob", laptop)
	f.TakeEvents()
	n, err := f.Store.RevokeAll(ctx, "alice", gs[2].SessionID)
	if n != 4 || err != nil {
		t.Fatalf("RevokeAll except one = %d, %v; want 4", n, err)
	}
	if ev := f.TakeEvents(); len(ev) != 4 || ev[0].Reason != redisstore.ReasonLogoutAll || ev[0].UserID != "alice" {
		t.Errorf("events = %+v, want 4 logout_all", ev)
	}
	for i, g := range gs {
		_, err := f.Store.Validate(ctx, g.Token)
		if i == 2 && err != nil {
			t.Fatalf("kept session: %v", err)
		}
		var re *redisstore.RevokedError
		if i != 2 && (!errors.As(err, &re) || re.Reason != redisstore.ReasonLogoutAll) {
			t.Fatalf("session %d after RevokeAll: %v", i, err)
		}
	}
	if n, err := f.Store.RevokeAll(ctx, "alice", ""); n != 1 || err != nil {
		t.Fatalf("RevokeAll = %d, %v; want 1", n, err)
	}
	if n, err := f.Store.RevokeAll(ctx, "alice", ""); n != 0 || err != nil {
		t.Fatalf("RevokeAll again = %d, %v; want 0", n, err)
	}
	if _, err := f.Store.Validate(ctx, bob.Token); err != nil {
		t.Fatalf("bob hurt by alice's RevokeAll: %v", err)
	}
}

// testRevokeAllKeep: the session to keep must be a live session of the
// user; otherwise RevokeAll is refused and revokes nothing.
func testRevokeAllKeep(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	a1 := f.issue(t, "alice", laptop)
	f.issue(t, "alice", laptop)
	bob := f.issue(t, "bob", laptop)
	gone := f.issue(t, "alice", laptop)
	f.Store.RevokeSession(ctx, "alice", gone.SessionID)
	before := f.Snapshot(t)
	for name, keep := range map[string]string{
		"another user's session": bob.SessionID,
		"an unknown session":     "123e4567-e89b-12d3-a456-426614174000",
		"a revoked session":      gone.SessionID,
	} {
		n, err := f.Store.RevokeAll(ctx, "alice", keep)
		var ae *redisstore.ArgumentError
		if n != 0 || !errors.As(err, &ae) || ae.Field != "keep" {
			t.Errorf("RevokeAll keeping %s = %d, %v; want 0 and an ArgumentError for keep", name, n, err)
		}
	}
	if d := cmp.Diff(before, f.Snapshot(t)); d != "" {
		t.Errorf("refused RevokeAll changed Redis (-before +after):\n%s", d)
	}
	if n, err := f.Store.RevokeAll(ctx, "alice", a1.SessionID); n != 1 || err != nil {
		t.Fatalf("RevokeAll keeping a1 = %d, %v", n, err)
	}
}

// testRevokeAllBatches: more sessions than one batch.
func testRevokeAllBatches(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{MaxSessions: 1000})
	ctx := context.Background()
	var gs []redisstore.Grant
	for i := 0; i < 300; i++ {
		gs = append(gs, f.issue(t, "alice", redisstore.Client{}))
	}
	f.TakeEvents()
	n, err := f.Store.RevokeAll(ctx, "alice", gs[150].SessionID)
	if n != 299 || err != nil {
		t.Fatalf("RevokeAll of 300 sessions but one = %d, %v", n, err)
	}
	ev := map[string]bool{}
	for _, e := range f.TakeEvents() {
		ev[e.SessionID] = true
	}
	for i, g := range gs {
		_, err := f.Store.Validate(ctx, g.Token)
		if (i == 150) != (err == nil) || (i != 150 && !ev[g.SessionID]) {
			t.Fatalf("session %d after RevokeAll: %v (event %v)", i, err, ev[g.SessionID])
		}
	}
	if l := f.list(t, "alice"); len(l) != 1 || l[0].ID != gs[150].SessionID {
		t.Fatalf("listing after RevokeAll: %v", ids(l))
	}
}

// testMaxSessions: a login past MaxSessions evicts the least recently used
// session (one event; its tokens get RevokedError, reason evicted), and
// expired sessions do not count against the cap.
func testMaxSessions(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{MaxSessions: 3, IdleTTL: time.Second})
	ctx := context.Background()
	var gs []redisstore.Grant
	for i := 0; i < 3; i++ {
		gs = append(gs, f.issue(t, "alice", laptop))
		b.Clock.Advance(5 * time.Millisecond)
	}
	f.rotate(t, gs[0].Token) // session 0 is now the most recently used; 1 is the least
	f.TakeEvents()
	g4 := f.issue(t, "alice", laptop) // all within the idle TTL: 950 ms slack
	ev := f.TakeEvents()
	if len(ev) != 1 || ev[0].Kind != redisstore.EventSessionEvicted || ev[0].SessionID != gs[1].SessionID || ev[0].Reason != redisstore.ReasonEvicted {
		t.Fatalf("events = %+v, want session %s evicted", ev, gs[1].SessionID)
	}
	_, err := f.Store.Validate(ctx, gs[1].Token)
	var re *redisstore.RevokedError
	if !errors.As(err, &re) || re.Reason != redisstore.ReasonEvicted {
		t.Fatalf("evicted session: %v, want RevokedError(evicted)", err)
	}
	if l := f.list(t, "alice"); len(l) != 3 {
		t.Fatalf("ListSessions = %d; want 3", len(l))
	}
	if _, err := f.Store.Validate(ctx, g4.Token); err != nil {
		t.Fatal(err)
	}
	// Expired sessions do not count against the cap.
	b.Clock.Advance(1200 * time.Millisecond)
	for i := 0; i < 3; i++ {
		f.issue(t, "alice", laptop)
	}
	if ev := f.TakeEvents(); len(ev) != 0 {
		t.Errorf("issuing after expiry evicted: %+v", ev)
	}
}

// testMaxSessionsDefault: the zero value caps a user at DefaultMaxSessions.
func testMaxSessionsDefault(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	for i := 0; i <= redisstore.DefaultMaxSessions; i++ {
		f.issue(t, "alice", redisstore.Client{})
	}
	evicted := 0
	for _, e := range f.TakeEvents() {
		if e.Kind == redisstore.EventSessionEvicted {
			evicted++
		}
	}
	if l := f.list(t, "alice"); len(l) != redisstore.DefaultMaxSessions || evicted != 1 {
		t.Fatalf("%d logins with the default cap: %d sessions, %d evicted; want %d and 1",
			redisstore.DefaultMaxSessions+1, len(l), evicted, redisstore.DefaultMaxSessions)
	}
}

// testMaxSessionsLowered: a user far over a cap (it was lowered) comes down
// to it at the next login, in script calls of at most 32 evictions.
func testMaxSessionsLowered(t *testing.T, b *redistest.Backend) {
	uncapped := newFixture(t, b, redisstore.Options{MaxSessions: redisstore.NoSessionCap})
	for i := 0; i < 50; i++ {
		uncapped.issue(t, "alice", redisstore.Client{})
	}
	f := newFixture(t, b, redisstore.Options{MaxSessions: 5})
	for _, want := range []int{5, 5} {
		f.issue(t, "alice", redisstore.Client{})
		if l := f.list(t, "alice"); len(l) != want {
			t.Fatalf("after a login with the cap lowered to 5: %d sessions, want %d", len(l), want)
		}
	}
}

// testEvictionBound: one login at a lowered cap evicts at most 256 sessions
// in all, its first script call's and evict.lua's together, as Store.Issue
// and the README say.
func testEvictionBound(t *testing.T, b *redistest.Backend) {
	uncapped := newFixture(t, b, redisstore.Options{MaxSessions: redisstore.NoSessionCap})
	const before = 320
	for i := 0; i < before; i++ {
		uncapped.issue(t, "alice", redisstore.Client{})
	}
	f := newFixture(t, b, redisstore.Options{MaxSessions: 5})
	f.TakeEvents()
	f.issue(t, "alice", redisstore.Client{})
	evicted := 0
	for _, e := range f.TakeEvents() {
		if e.Kind == redisstore.EventSessionEvicted {
			evicted++
		}
	}
	if l := f.list(t, "alice"); evicted != 256 || len(l) != before+1-256 {
		t.Fatalf("a login at a cap lowered to 5 over %d sessions evicted %d and left %d; want 256 and %d", before, evicted, len(l), before+1-256)
	}
}

// testSpread: every key carries a hash tag, and users spread over a
// cluster's slots (64 users over at least 50) instead of sharing one.
func testSpread(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	slots := map[int64]bool{}
	for i := 0; i < 64; i++ {
		f.issue(t, fmt.Sprintf("user-%d", i), laptop)
	}
	keys, err := b.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		open, close := strings.IndexByte(k, '{'), strings.IndexByte(k, '}')
		if open < 0 || close < open {
			t.Fatalf("key %q has no hash tag", k)
		}
		if b.Kind == redistest.Cluster {
			s, err := b.Client.ClusterKeySlot(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			slots[s] = true
		}
	}
	if b.Kind == redistest.Cluster && len(slots) < 50 {
		t.Fatalf("64 users' keys use %d slots: a global hash tag?", len(slots))
	}
}
