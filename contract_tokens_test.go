package sessioncache_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/internal/tokenlayout"
	"github.com/sessioncache/sessioncache/redisstore"
)

// testIssueValidate: a login hands out a token with the store's prefix that
// validates at once, its session is listed with the login's metadata and
// with deadlines IdleTTL and AbsoluteTTL after a creation time read from
// Redis's clock, and printing the Grant never shows the token.
func testIssueValidate(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{IdleTTL: time.Hour, AbsoluteTTL: 24 * time.Hour})
	ctx := context.Background()
	start := b.Clock.Now()
	g := f.issue(t, "user-1", laptop)
	end := b.Clock.Now()
	if !strings.HasPrefix(g.Token, redisstore.DefaultTokenPrefix) {
		t.Errorf("token %.8s... lacks prefix %q", g.Token, redisstore.DefaultTokenPrefix)
	}
	info, err := f.Store.Validate(ctx, g.Token)
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	wantInfo := redisstore.TokenInfo{SessionID: g.SessionID, UserID: "user-1", ExpiresAt: g.ExpiresAt, SessionExpiresAt: g.SessionExpiresAt}
	if d := cmp.Diff(wantInfo, info); d != "" {
		t.Errorf("Validate (-want +got):\n%s", d)
	}
	l := f.list(t, "user-1")
	if len(l) != 1 {
		t.Fatalf("ListSessions = %d sessions; want 1", len(l))
	}
	s := l[0]
	want := redisstore.Session{
		ID: g.SessionID, UserID: "user-1",
		DeviceID: laptop.DeviceID, DeviceName: laptop.DeviceName, IPAddress: laptop.IPAddress, UserAgent: laptop.UserAgent,
	}
	got := s
	got.CreatedAt, got.LastUsedAt, got.ExpiresAt, got.SessionExpiresAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("listed session (-want +got):\n%s", d)
	}
	if d := s.ExpiresAt.Sub(s.CreatedAt); d != time.Hour {
		t.Errorf("idle lifetime = %v, want 1h", d)
	}
	if d := s.SessionExpiresAt.Sub(s.CreatedAt); d != 24*time.Hour {
		t.Errorf("absolute lifetime = %v, want 24h", d)
	}
	// Deadlines come from Redis's clock: the login happened between the two
	// readings of it.
	if s.CreatedAt.Before(start.Truncate(time.Millisecond)) || s.CreatedAt.After(end) {
		t.Errorf("CreatedAt %v not between %v and %v (Redis's clock)", s.CreatedAt, start, end)
	}
	if !g.ExpiresAt.Equal(s.ExpiresAt) || !g.SessionExpiresAt.Equal(s.SessionExpiresAt) || !s.LastUsedAt.Equal(s.CreatedAt) {
		t.Errorf("grant deadlines %v/%v differ from session %+v", g.ExpiresAt, g.SessionExpiresAt, s)
	}
	if strings.Contains(fmt.Sprint(g), g.Token) || strings.Contains(fmt.Sprintf("%#v", g), g.Token) {
		t.Errorf("printing a Grant shows the token")
	}
}

// testRotateChain: a rotation hands out a new token of the same session,
// slides the idle deadline but not the absolute one, records the caller's IP
// address and user agent, and ends the token it replaced (RevokedError,
// reason rotated), over a chain of any length.
func testRotateChain(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{IdleTTL: time.Hour, AbsoluteTTL: 24 * time.Hour})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	b.Clock.Advance(20 * time.Millisecond)
	moved := redisstore.Client{IPAddress: "2001:db8::1", UserAgent: "Firefox/129.0"}
	g1, err := f.Store.Rotate(ctx, g0.Token, moved)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if g1.Token == g0.Token || g1.SessionID != g0.SessionID || g1.UserID != "user-1" || g1.Replayed {
		t.Fatalf("Rotate grant = %v, want a new token of the same session", g1)
	}
	if !g1.ExpiresAt.After(g0.ExpiresAt) || !g1.SessionExpiresAt.Equal(g0.SessionExpiresAt) {
		t.Errorf("after rotation: idle deadline %v (was %v) must slide, absolute %v (was %v) must not",
			g1.ExpiresAt, g0.ExpiresAt, g1.SessionExpiresAt, g0.SessionExpiresAt)
	}
	info, err := f.Store.Validate(ctx, g1.Token)
	if err != nil || info.SessionID != g0.SessionID || !info.ExpiresAt.Equal(g1.ExpiresAt) {
		t.Fatalf("Validate successor = %+v, %v", info, err)
	}
	l := f.list(t, "user-1")
	if len(l) != 1 {
		t.Fatalf("ListSessions = %d", len(l))
	}
	s := l[0]
	if s.IPAddress != moved.IPAddress || s.UserAgent != moved.UserAgent || s.DeviceName != laptop.DeviceName {
		t.Errorf("after rotation: IP %q UA %q name %q; want IP and UA updated, name kept", s.IPAddress, s.UserAgent, s.DeviceName)
	}
	if !s.LastUsedAt.After(s.CreatedAt) || !s.ExpiresAt.Equal(g1.ExpiresAt) {
		t.Errorf("after rotation: LastUsedAt %v (created %v), ExpiresAt %v (grant %v)", s.LastUsedAt, s.CreatedAt, s.ExpiresAt, g1.ExpiresAt)
	}
	_, err = f.Store.Validate(ctx, g0.Token)
	var re *redisstore.RevokedError
	if !errors.As(err, &re) || re.Reason != redisstore.ReasonRotated {
		t.Fatalf("Validate rotated token: err = %v, want RevokedError(rotated)", err)
	}
	// A long chain keeps working, and each step invalidates the last.
	tok := g1.Token
	for i := 0; i < 20; i++ {
		tok = f.rotate(t, tok).Token
	}
	if _, err := f.Store.Validate(ctx, tok); err != nil {
		t.Fatalf("Validate after 21 rotations: %v", err)
	}
}

// sessionHash returns the hash of the one session key under the prefix.
func sessionHash(t *testing.T, b *redistest.Backend) (string, map[string]string) {
	t.Helper()
	ctx := context.Background()
	keys, err := b.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.Contains(k, "}:s:") {
			h, err := b.Client.HGetAll(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			return k, h
		}
	}
	t.Fatalf("no session key in %v", keys)
	return "", nil
}

// testGraceReplay: within the grace window, the immediate predecessor gets
// the same successor back as a grace replay, with one event, without a write
// to Redis, and the successor rotates normally afterwards.
func testGraceReplay(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: time.Minute})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	g1 := f.rotate(t, g0.Token)
	f.TakeEvents()
	before := f.Snapshot(t)
	b.Clock.Advance(5 * time.Millisecond)
	again, err := f.Store.Rotate(ctx, g0.Token, redisstore.Client{})
	if err != nil {
		t.Fatalf("Rotate predecessor in grace: %v", err)
	}
	if again.Token != g1.Token || !again.Replayed || !again.ExpiresAt.Equal(g1.ExpiresAt) {
		t.Fatalf("grace replay returned a different grant (replayed=%v, same token=%v)", again.Replayed, again.Token == g1.Token)
	}
	if d := cmp.Diff(before, f.Snapshot(t)); d != "" {
		t.Errorf("grace replay wrote to Redis (-before +after):\n%s", d)
	}
	if ev := f.TakeEvents(); len(ev) != 1 || ev[0].Kind != redisstore.EventGraceReplay || ev[0].SessionID != g0.SessionID {
		t.Errorf("events = %v, want one grace_replay", ev)
	}
	// The successor still works, and rotates normally.
	g2 := f.rotate(t, g1.Token)
	if _, err := f.Store.Validate(ctx, g2.Token); err != nil {
		t.Fatalf("Validate after grace: %v", err)
	}
}

// testGraceExpired: after the grace window, the predecessor is reuse: that
// call gets ErrReused with one reuse event, and the whole session, its
// newest token included, is revoked (later calls get RevokedError, reason
// reuse, not ErrReused).
func testGraceExpired(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: 200 * time.Millisecond})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	g1 := f.rotate(t, g0.Token)
	f.TakeEvents()
	b.Clock.Advance(250 * time.Millisecond)
	_, err := f.Store.Rotate(ctx, g0.Token, redisstore.Client{})
	wantErr(t, "Rotate predecessor after grace", err, redisstore.ErrReused)
	ev := f.TakeEvents()
	if len(ev) != 1 || ev[0].Kind != redisstore.EventReuseDetected || ev[0].UserID != "user-1" || ev[0].SessionID != g0.SessionID || ev[0].Reason != redisstore.ReasonReuse {
		t.Errorf("events = %+v, want one reuse_detected for user-1", ev)
	}
	// The whole family is dead, its newest token included.
	_, err = f.Store.Rotate(ctx, g1.Token, redisstore.Client{})
	var re *redisstore.RevokedError
	if !errors.As(err, &re) || re.Reason != redisstore.ReasonReuse {
		t.Fatalf("Rotate newest token after reuse: err = %v, want RevokedError(reuse)", err)
	}
	if errors.Is(err, redisstore.ErrReused) {
		t.Errorf("a later call matches ErrReused: only the call that revoked does")
	}
	_, err = f.Store.Validate(ctx, g1.Token)
	wantErr(t, "Validate newest token after reuse", err, redisstore.ErrRevoked)
	if l := f.list(t, "user-1"); len(l) != 0 {
		t.Errorf("ListSessions after reuse = %d sessions, want 0", len(l))
	}
}

// testGrandparent: a grandparent, or any older token, is never in grace,
// even right after the rotations: presenting it is reuse and revokes the
// session.
func testGrandparent(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: time.Minute})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	g1 := f.rotate(t, g0.Token)
	g2 := f.rotate(t, g1.Token)
	// g0 is the grandparent of the current token: never in grace, even
	// right away.
	_, err := f.Store.Rotate(ctx, g0.Token, redisstore.Client{})
	wantErr(t, "Rotate grandparent", err, redisstore.ErrReused)
	_, err = f.Store.Validate(ctx, g2.Token)
	wantErr(t, "Validate newest after grandparent replay", err, redisstore.ErrRevoked)

	// Any older generation, for as long as the family lives.
	g0 = f.issue(t, "user-1", laptop)
	tok := g0.Token
	for i := 0; i < 5; i++ {
		tok = f.rotate(t, tok).Token
	}
	_, err = f.Store.Rotate(ctx, g0.Token, redisstore.Client{})
	wantErr(t, "Rotate generation 0 after 5 rotations", err, redisstore.ErrReused)
	_, err = f.Store.Validate(ctx, tok)
	wantErr(t, "Validate newest after old replay", err, redisstore.ErrRevoked)
}

// testGraceSameDevice: with GraceSameDevice, only a caller with the
// session's device id gets a grace replay; another device id, or a device id
// on one side only, is reuse.
func testGraceSameDevice(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: time.Minute, GraceSameDevice: true})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	g1, err := f.Store.Rotate(ctx, g0.Token, redisstore.Client{DeviceID: laptop.DeviceID})
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.Store.Rotate(ctx, g0.Token, redisstore.Client{DeviceID: laptop.DeviceID})
	if err != nil || again.Token != g1.Token {
		t.Fatalf("same device in grace: err = %v, same token = %v", err, again.Token == g1.Token)
	}
	_, err = f.Store.Rotate(ctx, g0.Token, redisstore.Client{DeviceID: "other-device"})
	wantErr(t, "other device in grace", err, redisstore.ErrReused)
	_, err = f.Store.Validate(ctx, g1.Token)
	wantErr(t, "Validate after other-device replay", err, redisstore.ErrRevoked)

	// No device id: a caller without one matches only a session created
	// without one.
	for _, tc := range []struct {
		name          string
		login, caller string
		grace         bool
	}{
		{"neither has one", "", "", true},
		{"session has one, caller none", "dev-a", "", false},
		{"caller has one, session none", "", "dev-a", false},
	} {
		g0 := f.issue(t, "user-1", redisstore.Client{DeviceID: tc.login})
		g1, err := f.Store.Rotate(ctx, g0.Token, redisstore.Client{DeviceID: tc.login})
		if err != nil {
			t.Fatal(err)
		}
		again, err := f.Store.Rotate(ctx, g0.Token, redisstore.Client{DeviceID: tc.caller})
		if tc.grace && (err != nil || again.Token != g1.Token) {
			t.Errorf("%s: %v, want a grace replay", tc.name, err)
		}
		if !tc.grace && !errors.Is(err, redisstore.ErrReused) {
			t.Errorf("%s: %v, want ErrReused", tc.name, err)
		}
	}
}

// testGraceOff: with grace off (NoGrace), a second use of a rotated token is
// reuse and revokes its session.
func testGraceOff(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: redisstore.NoGrace})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	g1 := f.rotate(t, g0.Token)
	_, err := f.Store.Rotate(ctx, g0.Token, redisstore.Client{})
	wantErr(t, "second use without grace", err, redisstore.ErrReused)
	_, err = f.Store.Validate(ctx, g1.Token)
	wantErr(t, "Validate successor", err, redisstore.ErrRevoked)
}

// testReusedMatchesRevoked: the call that detects reuse returns an error
// matching both ErrReused and ErrRevoked (the session was just revoked).
func testReusedMatchesRevoked(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: redisstore.NoGrace})
	g0 := f.issue(t, "user-1", laptop)
	f.rotate(t, g0.Token)
	_, err := f.Store.Rotate(context.Background(), g0.Token, redisstore.Client{})
	if !errors.Is(err, redisstore.ErrReused) || !errors.Is(err, redisstore.ErrRevoked) {
		t.Fatalf("reuse: %v; want it to match ErrReused and ErrRevoked", err)
	}
}

// testUserBound: the user id Redis holds is checked against the user hash
// the token carries (MACed). Someone who can write to Redis and holds one
// account cannot make their token report another user's id.
func testUserBound(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: time.Minute})
	ctx := context.Background()
	g0 := f.issue(t, "mallory", laptop)
	g1 := f.rotate(t, g0.Token)
	key, h := sessionHash(t, b)
	stored := h["h"]
	if !strings.HasSuffix(stored, "mallory") {
		t.Fatalf("stored h %q does not end with the user id", stored)
	}
	forged := strings.TrimSuffix(stored, "mallory") + "victim"
	if err := b.Client.HSet(ctx, key, "h", forged).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := f.Store.Validate(ctx, g1.Token)
	wantErr(t, "Validate after the user id was rewritten", err, redisstore.ErrCorrupt)
	_, err = f.Store.Rotate(ctx, g0.Token, redisstore.Client{}) // a grace replay
	wantErr(t, "grace replay after the user id was rewritten", err, redisstore.ErrCorrupt)
	_, err = f.Store.Rotate(ctx, g1.Token, redisstore.Client{})
	wantErr(t, "Rotate after the user id was rewritten", err, redisstore.ErrCorrupt)
	// RevokeToken ends the session (the token is genuine), but its event
	// cannot name the user the token proves (a keyed hash of it), and must
	// not name the stored one.
	n, err := f.Store.RevokeToken(ctx, g1.Token)
	wantErr(t, "RevokeToken after the user id was rewritten", err, redisstore.ErrCorrupt)
	if n != 1 {
		t.Errorf("RevokeToken after the user id was rewritten revoked %d, want 1", n)
	}
	revoked, corrupt := 0, 0
	for _, e := range f.TakeEvents() {
		if e.UserID == "victim" {
			t.Errorf("an event names the forged user: %+v", e)
		}
		switch e.Kind {
		case redisstore.EventSessionRevoked:
			revoked++
		case redisstore.EventCorrupt:
			corrupt++
		}
	}
	if revoked != 1 || corrupt != 4 {
		t.Errorf("%d EventSessionRevoked and %d EventCorrupt, want 1 and 4 (Validate, grace replay, Rotate, RevokeToken)", revoked, corrupt)
	}
}

// forge returns tokens that look right but were never issued: each passes
// the checksum, so only the MAC check can refuse them.
func forge(t *testing.T, real string) []string {
	t.Helper()
	raw, ok := tokenlayout.Decode(real, redisstore.DefaultTokenPrefix)
	if !ok {
		t.Fatalf("not a token: %q", real)
	}
	var out []string
	// Flip the lowest bit of the generation (a forged "old" or "next"
	// token is the dangerous one), a bit of the secret and one of the MAC.
	for _, off := range []int{tokenlayout.Gen + 3, tokenlayout.Secret + 4, tokenlayout.MAC + 2} {
		b := append([]byte(nil), raw...)
		b[off] ^= 1
		out = append(out, tokenlayout.Encode(b, redisstore.DefaultTokenPrefix))
	}
	return out
}

// testForgery: a forged token (a bit flipped in the generation, secret or
// MAC of an old or the current token) is ErrUnknown to Rotate, Validate and
// RevokeToken, as is a token signed under another secret to Rotate, and none
// of them changes Redis or emits an event.
func testForgery(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: redisstore.NoGrace})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	g1 := f.rotate(t, g0.Token)
	g2 := f.rotate(t, g1.Token)
	// A token from a store with another secret.
	other := newFixture(t, b, redisstore.Options{Secret: []byte("another-secret-another-secret-0123456789")})
	foreign := other.issue(t, "user-1", laptop)
	before := f.Snapshot(t)
	// Forgeries of an old generation and of the current one: the old-token
	// ones would revoke the family if the store trusted them.
	for _, forged := range append(forge(t, g0.Token), forge(t, g2.Token)...) {
		_, err := f.Store.Rotate(ctx, forged, redisstore.Client{})
		wantErr(t, "Rotate forged", err, redisstore.ErrUnknown)
		_, err = f.Store.Validate(ctx, forged)
		wantErr(t, "Validate forged", err, redisstore.ErrUnknown)
		n, err := f.Store.RevokeToken(ctx, forged)
		if n != 0 || !errors.Is(err, redisstore.ErrUnknown) {
			t.Fatalf("RevokeToken forged = %d, %v; want 0, ErrUnknown", n, err)
		}
	}
	_, err := f.Store.Rotate(ctx, foreign.Token, redisstore.Client{})
	wantErr(t, "Rotate foreign", err, redisstore.ErrUnknown)
	if d := cmp.Diff(before, f.Snapshot(t)); d != "" {
		t.Errorf("forgeries changed Redis (-before +after):\n%s", d)
	}
	if _, err := f.Store.Validate(ctx, g2.Token); err != nil {
		t.Fatalf("Validate genuine token after forgeries: %v", err)
	}
	if ev := f.TakeEvents(); len(ev) != 0 {
		t.Errorf("forgeries emitted events: %v", ev)
	}
}

// testMalformed: a token that fails the format or the checksum is
// ErrMalformed to Rotate, Validate and RevokeToken, and changes nothing in
// Redis.
func testMalformed(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	g := f.issue(t, "user-1", laptop)
	before := f.Snapshot(t)
	flipped := []byte(g.Token)
	flipped[20] ^= 0x01 // still base64url in most cases; checksum catches it
	if flipped[20] == '-' || flipped[20] == '_' {
		flipped[20] = 'A'
	}
	for _, tok := range []string{
		"", "x", "sct_", g.Token[:len(g.Token)-1], g.Token + "A", "abc_" + g.Token[4:],
		string(flipped), strings.ToUpper(g.Token), g.Token[:40] + "\x00" + g.Token[41:],
		"sct_" + strings.Repeat("A", len(g.Token)-4),
	} {
		_, err := f.Store.Rotate(ctx, tok, redisstore.Client{})
		wantErr(t, fmt.Sprintf("Rotate(%.12q)", tok), err, redisstore.ErrMalformed)
		_, err = f.Store.Validate(ctx, tok)
		wantErr(t, "Validate malformed", err, redisstore.ErrMalformed)
		_, err = f.Store.RevokeToken(ctx, tok)
		wantErr(t, "RevokeToken malformed", err, redisstore.ErrMalformed)
	}
	if d := cmp.Diff(before, f.Snapshot(t)); d != "" {
		t.Errorf("malformed tokens changed Redis (-before +after):\n%s", d)
	}
}

// testBadInput: over-long, malformed or control-character input (client
// metadata, user ids, session ids, list options) is ErrInvalidArgument to
// every call, changes nothing in Redis and leaves the user's token valid.
func testBadInput(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	g := f.issue(t, "user-1", laptop)
	before := f.Snapshot(t)
	long := strings.Repeat("x", 1000)
	for name, c := range map[string]redisstore.Client{
		"long device id":   {DeviceID: long},
		"long device name": {DeviceName: long},
		"long user agent":  {UserAgent: long + long},
		"bad IP":           {IPAddress: "999.1.1.1"},
		"control char":     {DeviceName: "evil\x00name"},
		"invalid UTF-8":    {UserAgent: "\xff\xfe"},
	} {
		_, err := f.Store.Issue(ctx, "user-1", c)
		wantErr(t, "Issue with "+name, err, redisstore.ErrInvalidArgument)
		_, err = f.Store.Rotate(ctx, g.Token, c)
		wantErr(t, "Rotate with "+name, err, redisstore.ErrInvalidArgument)
	}
	var ae *redisstore.ArgumentError
	if _, err := f.Store.Issue(ctx, "user-1", redisstore.Client{IPAddress: "nope"}); !errors.As(err, &ae) || ae.Field != "IP address" {
		t.Fatalf("Issue with a bad IP: %v, want an ArgumentError for the IP address", err)
	}
	for _, user := range []string{"", long, "a\nb", "\xff"} {
		_, err := f.Store.Issue(ctx, user, laptop)
		wantErr(t, fmt.Sprintf("Issue(user %.10q)", user), err, redisstore.ErrInvalidArgument)
		_, err = f.Store.ListSessions(ctx, user, redisstore.ListOptions{})
		wantErr(t, "ListSessions bad user", err, redisstore.ErrInvalidArgument)
		_, err = f.Store.RevokeAll(ctx, user, "")
		wantErr(t, "RevokeAll bad user", err, redisstore.ErrInvalidArgument)
	}
	for _, sid := range []string{"", "not-a-uuid", g.SessionID + "x"} {
		_, err := f.Store.RevokeSession(ctx, "user-1", sid)
		wantErr(t, "RevokeSession bad id", err, redisstore.ErrInvalidArgument)
		_, err = f.Store.RevokeAll(ctx, "user-1", sid+"!")
		wantErr(t, "RevokeAll bad keep id", err, redisstore.ErrInvalidArgument)
	}
	for _, opt := range []redisstore.ListOptions{{Limit: -1}, {Limit: redisstore.MaxListLimit + 1}, {Cursor: "nope"}, {Cursor: g.Token[4:36]}} {
		_, err := f.Store.ListSessions(ctx, "user-1", opt)
		wantErr(t, fmt.Sprintf("ListSessions(%+v)", opt), err, redisstore.ErrInvalidArgument)
	}
	if d := cmp.Diff(before, f.Snapshot(t)); d != "" {
		t.Errorf("bad input changed Redis (-before +after):\n%s", d)
	}
	if _, err := f.Store.Validate(ctx, g.Token); err != nil {
		t.Fatalf("token invalid after bad input: %v", err)
	}
}

// testStoredInput: every stored field has a length cap and a character
// rule. Refusals are ErrInvalidArgument and write nothing; IP addresses are
// stored in canonical form.
func testStoredInput(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	g := f.issue(t, "user-1", laptop)
	before := f.Snapshot(t)
	refused := map[string]redisstore.Client{
		"IPv6 zone, 10 KB":       {IPAddress: "fe80::1%" + strings.Repeat("z", 10<<10)},
		"IPv6 zone":              {IPAddress: "fe80::1%eth0"},
		"zone with NUL":          {IPAddress: "fe80::1%a\x00b"},
		"zone with bad UTF-8":    {IPAddress: "fe80::1%\xff"},
		"zone with newline":      {IPAddress: "fe80::1%a\nb"},
		"IP with spaces":         {IPAddress: " 192.0.2.1"},
		"device name LRO U+202D": {DeviceName: "Firefox \u202don Linux"},
		"device name RLO U+202E": {DeviceName: "iPhone \u202egnp.exe"},
		"device name RLI U+2067": {DeviceName: "a\u2067b"},
		"device name PDI U+2069": {DeviceName: "a\u2069b"},
		"device name RLM U+200F": {DeviceName: "a\u200fb"},
		"device name LS U+2028":  {DeviceName: "line\u2028break"},
		"device id ALM U+061C":   {DeviceID: "a\u061cb"},
		"user agent LRE U+202A":  {UserAgent: "Mozilla/5.0 \u202a"},
		"device name newline":    {DeviceName: "a\nb"},
		"device name DEL":        {DeviceName: "a\x7fb"},
		"device name C1 control": {DeviceName: "a\u0085b"},
	}
	for name, c := range refused {
		_, err := f.Store.Issue(ctx, "user-1", c)
		var ae *redisstore.ArgumentError
		if !errors.As(err, &ae) {
			t.Errorf("Issue with %s: %v, want an ArgumentError", name, err)
		}
		_, err = f.Store.Rotate(ctx, g.Token, c)
		wantErr(t, "Rotate with "+name, err, redisstore.ErrInvalidArgument)
	}
	for _, user := range []string{"a\u202eb", "a\u2066b", "line\u2029sep"} {
		_, err := f.Store.Issue(ctx, user, laptop)
		wantErr(t, fmt.Sprintf("Issue(user %q)", user), err, redisstore.ErrInvalidArgument)
	}
	if d := cmp.Diff(before, f.Snapshot(t)); d != "" {
		t.Errorf("refused input changed Redis (-before +after):\n%s", d)
	}
	// Accepted: canonical IPs as given, others in canonical form; names in
	// any script, with marks, emoji and their skin tones (a joiner, U+200D,
	// is a format character: refused, see testInvisibleText).
	const name = "Телефон 👋🏽 電話 नमस्ते ﷽"
	for in, want := range map[string]string{
		"192.0.2.1": "192.0.2.1", "2001:DB8::0:1": "2001:db8::1", "::ffff:192.0.2.1": "::ffff:192.0.2.1",
		"2001:0db8:0000:0000:0000:0000:0000:0001": "2001:db8::1",
	} {
		g := f.issue(t, "ip-user", redisstore.Client{IPAddress: in, DeviceName: name})
		for _, s := range f.list(t, "ip-user") {
			if s.ID == g.SessionID && (s.IPAddress != want || s.DeviceName != name) {
				t.Errorf("IP %q stored as %q, want %q (name %q)", in, s.IPAddress, want, s.DeviceName)
			}
		}
	}
}

// invisibles are one character of each class the text rule refuses
// (redisstore.Invisible): what shows nothing.
var invisibles = map[string]string{
	"tag letter A U+E0041":       "\U000E0041",
	"zero width space U+200B":    "\u200b",
	"word joiner U+2060":         "\u2060",
	"BOM U+FEFF":                 "\ufeff",
	"soft hyphen U+00AD":         "\u00ad",
	"right-to-left override":     "\u202e",
	"zero width joiner U+200D":   "\u200d",
	"Hangul filler U+3164":       "\u3164",
	"halfwidth filler U+FFA0":    "\uffa0",
	"Hangul choseong filler":     "\u115f",
	"C0 control U+0001":          "\x01",
	"paragraph separator U+2029": "\u2029",
}

// testInvisibleText: every text field the store keeps refuses each class
// of invisible character, on its own ("\u3164" as a user id) and added to
// visible text ("admin\u200b", "iPhone" and tag characters), with
// ErrInvalidArgument, in Issue and in Rotate, and nothing is stored.
func testInvisibleText(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	g := f.issue(t, "admin", laptop)
	before := f.Snapshot(t)
	for class, c := range invisibles {
		for _, v := range []string{c, "admin" + c, "iPhone" + c + c + c} {
			fields := map[string]redisstore.Client{
				"client id":   {ClientID: v},
				"device id":   {DeviceID: v},
				"device name": {DeviceName: v},
				"user agent":  {UserAgent: "Mozilla/5.0 " + v},
				"IP address":  {IPAddress: "192.0.2.1" + v},
			}
			for field, cl := range fields {
				var ae *redisstore.ArgumentError
				if _, err := f.Store.Issue(ctx, "admin", cl); !errors.As(err, &ae) || ae.Field != field {
					t.Errorf("Issue with %s %q (%s): %v, want an ArgumentError on %s", field, v, class, err, field)
				}
				if _, err := f.Store.Rotate(ctx, g.Token, cl); !errors.As(err, &ae) || ae.Field != field {
					t.Errorf("Rotate with %s %q (%s): %v, want an ArgumentError on %s", field, v, class, err, field)
				}
			}
			var ae *redisstore.ArgumentError
			if _, err := f.Store.Issue(ctx, v, laptop); !errors.As(err, &ae) || ae.Field != "user id" {
				t.Errorf("Issue(user %q) (%s): %v, want an ArgumentError on the user id", v, class, err)
			}
			if _, err := f.Store.ListSessions(ctx, v, redisstore.ListOptions{}); !errors.As(err, &ae) || ae.Field != "user id" {
				t.Errorf("ListSessions(user %q) (%s): %v, want an ArgumentError on the user id", v, class, err)
			}
		}
	}
	if d := cmp.Diff(before, f.Snapshot(t)); d != "" {
		t.Errorf("refused text changed Redis (-before +after):\n%s", d)
	}
}

// testKeyRotation: signing keys rotate without logging anyone out: a store
// that signs with a new key rotates tokens of the old one, a store without
// the new key hands out nothing for a replay of a successor signed with it,
// and once the old key is dropped its tokens are ErrUnknown while the
// listing stays whole.
func testKeyRotation(t *testing.T, b *redistest.Backend) {
	k1 := redisstore.Key{ID: 1, Secret: []byte("key-one-key-one-key-one-key-one-key-one")}
	k2 := redisstore.Key{ID: 2, Secret: []byte("key-two-key-two-key-two-key-two-key-two")}
	ctx := context.Background()
	old := newFixture(t, b, redisstore.Options{Keys: []redisstore.Key{k1}, Grace: time.Minute})
	g0 := old.issue(t, "alice", laptop)
	// Deploy with k2 first: old tokens still rotate, successors use k2.
	both := newFixture(t, b, redisstore.Options{Keys: []redisstore.Key{k2, k1}, Grace: time.Minute})
	g1, err := both.Store.Rotate(ctx, g0.Token, redisstore.Client{})
	if err != nil {
		t.Fatalf("rotate a k1 token with [k2 k1]: %v", err)
	}
	// A grace replay against the old deployment (k1 only) cannot re-derive
	// a k2 token: it must not hand out anything else.
	if g, err := old.Store.Rotate(ctx, g0.Token, redisstore.Client{}); err == nil {
		t.Fatalf("k1-only store answered a replay of a k2 successor: replayed=%v", g.Replayed)
	}
	// Drop k1: the k2 token still works, k1 tokens are unknown.
	only2 := newFixture(t, b, redisstore.Options{Keys: []redisstore.Key{k2}})
	if _, err := only2.Store.Validate(ctx, g1.Token); err != nil {
		t.Fatalf("k2 token under [k2]: %v", err)
	}
	_, err = only2.Store.Validate(ctx, g0.Token)
	wantErr(t, "k1 token under [k2]", err, redisstore.ErrUnknown)
	// The user index does not move with the token keys: listing still works.
	if l := only2.list(t, "alice"); len(l) != 1 {
		t.Fatalf("ListSessions after key rotation = %d", len(l))
	}
}

// testNoRawToken: Redis holds no token nor any part of one that would help
// forge it: not its body, its payload, its secret (raw, a prefix of it, or
// in base64) or its MAC.
func testNoRawToken(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	var toks []string
	g := f.issue(t, "alice", laptop)
	toks = append(toks, g.Token)
	for i := 0; i < 3; i++ {
		g = f.rotate(t, g.Token)
		toks = append(toks, g.Token)
	}
	blob := keyspaceText(t, b)
	for i, tok := range toks {
		raw, _ := tokenlayout.Decode(tok, redisstore.DefaultTokenPrefix)
		secretPart, macPart := raw[tokenlayout.Secret:tokenlayout.MAC], raw[tokenlayout.MAC:tokenlayout.CRC]
		for what, needle := range map[string]string{
			"token": tok, "token body": tok[4:], "token payload": string(raw),
			"secret": string(secretPart), "secret prefix": string(secretPart[:12]), "MAC": string(macPart),
			"secret (base64)": base64.RawURLEncoding.EncodeToString(secretPart)[:16],
		} {
			if strings.Contains(blob, needle) {
				t.Errorf("Redis holds the %s of token %d", what, i)
			}
		}
	}
}

// keyspaceText returns every key under b's prefix and all it holds, as one
// string to search.
func keyspaceText(t *testing.T, b *redistest.Backend) string {
	t.Helper()
	d, err := b.Dump(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for k, vs := range d {
		all.WriteString(k)
		for _, v := range vs {
			all.WriteString("\x00" + v)
		}
	}
	return all.String()
}
