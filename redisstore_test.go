// The contract suite: every operation and outcome of the store, run against
// an in-process miniredis always, a real Redis when
// SESSIONCACHE_TEST_REDIS_URL is set, and a real Redis Cluster when
// SESSIONCACHE_TEST_CLUSTER_ADDRS is set (see internal/redistest).
package sessioncache_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

var secret = []byte("contract-suite-secret-0123456789abcdef")

// fixture is one store on one backend, with the events it emitted.
type fixture struct {
	*redistest.Backend
	store *redisstore.Store
	opt   redisstore.Options

	mu     sync.Mutex
	events []redisstore.Event
}

func newFixture(t *testing.T, b *redistest.Backend, opt redisstore.Options) *fixture {
	t.Helper()
	f := &fixture{Backend: b}
	if opt.Secret == nil {
		opt.Secret = secret
	}
	opt.KeyPrefix = b.Prefix
	if opt.Now == nil {
		opt.Now = b.Clock.Now
	}
	opt.OnEvent = func(_ context.Context, e redisstore.Event) {
		f.mu.Lock()
		f.events = append(f.events, e)
		f.mu.Unlock()
	}
	s, err := redisstore.New(b.Client, opt)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.store, f.opt = s, opt
	return f
}

func (f *fixture) takeEvents() []redisstore.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.events
	f.events = nil
	return e
}

func (f *fixture) issue(t *testing.T, user string, c redisstore.Client) redisstore.Grant {
	t.Helper()
	g, err := f.store.Issue(context.Background(), user, c)
	if err != nil {
		t.Fatalf("Issue(%q): %v", user, err)
	}
	return g
}

func (f *fixture) rotate(t *testing.T, tok string) redisstore.Grant {
	t.Helper()
	g, err := f.store.Rotate(context.Background(), tok, redisstore.Client{})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	return g
}

// snapshot is the whole keyspace under the prefix, to prove that a call
// changed nothing.
func (f *fixture) snapshot(t *testing.T) map[string][]string {
	t.Helper()
	d, err := f.Dump(context.Background())
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	for _, v := range d {
		sortStrings(v)
	}
	return d
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

func TestContract(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		for _, tc := range contract {
			t.Run(tc.name, func(t *testing.T) {
				// Each case gets its own prefix on the shared backend.
				sub := *b
				sub.Prefix = redistest.NewPrefix()
				t.Cleanup(func() { cleanup(&sub) })
				if b.Kind != redistest.Mini {
					now := time.Now()
					sub.Clock = b.Clock // real time; cases that move it do so on their own clock
					_ = now
				}
				tc.run(t, &sub)
			})
		}
	})
}

func cleanup(b *redistest.Backend) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := b.Keys(ctx)
	if err != nil {
		return
	}
	for _, k := range keys {
		b.Client.Del(ctx, k)
	}
}

var contract = []struct {
	name string
	run  func(t *testing.T, b *redistest.Backend)
}{
	{"IssueValidate", testIssueValidate},
	{"RotateChain", testRotateChain},
	{"GraceReplay", testGraceReplay},
	{"GraceExpired", testGraceExpired},
	{"GrandparentNeverInGrace", testGrandparent},
	{"GraceSameDevice", testGraceSameDevice},
	{"GraceOff", testGraceOff},
	{"LateRetryIsNotAReplay", testLateRetry},
	{"ForgeryRevokesNothing", testForgery},
	{"MalformedChangesNothing", testMalformed},
	{"BadInputChangesNothing", testBadInput},
	{"IdleExpiry", testIdleExpiry},
	{"AbsoluteExpiry", testAbsoluteExpiry},
	{"ListSessions", testListSessions},
	{"RevokeSession", testRevokeSession},
	{"RevokeToken", testRevokeToken},
	{"RevokeAll", testRevokeAll},
	{"MaxSessions", testMaxSessions},
	{"KeyRotation", testKeyRotation},
	{"EveryKeyHasTTL", testEveryKeyHasTTL},
	{"NoRawTokenInRedis", testNoRawToken},
	{"RaceOneWinnerGrace", testRaceGrace},
	{"RaceOneWinnerNoGrace", testRaceNoGrace},
	{"ConcurrentLogins", testConcurrentLogins},
	{"ScriptCacheLoss", testScriptCacheLoss},
	{"MemoryFlatInRotations", testMemoryFlat},
	{"NoKeyLeftAfterLifetimes", testNoKeyLeft},
	{"UsersSpreadOverSlots", testSpread},
}

var laptop = redisstore.Client{DeviceID: "dev-laptop", DeviceName: "Firefox on Linux", IPAddress: "192.0.2.10", UserAgent: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}

func testIssueValidate(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{IdleTTL: time.Hour, AbsoluteTTL: 24 * time.Hour})
	ctx := context.Background()
	start := b.Clock.Now()
	g := f.issue(t, "user-1", laptop)
	if !strings.HasPrefix(g.Token, redisstore.DefaultTokenPrefix) {
		t.Errorf("token %.8s... lacks prefix %q", g.Token, redisstore.DefaultTokenPrefix)
	}
	info, err := f.store.Validate(ctx, g.Token)
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	wantInfo := redisstore.TokenInfo{SessionID: g.SessionID, UserID: "user-1", ExpiresAt: g.ExpiresAt, SessionExpiresAt: g.SessionExpiresAt}
	if d := cmp.Diff(wantInfo, info); d != "" {
		t.Errorf("Validate (-want +got):\n%s", d)
	}
	l, err := f.store.ListSessions(ctx, "user-1")
	if err != nil || len(l) != 1 {
		t.Fatalf("ListSessions = %d sessions, %v; want 1", len(l), err)
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
	if s.CreatedAt.Before(start.Add(-time.Second)) || s.CreatedAt.After(b.Clock.Now().Add(time.Second)) {
		t.Errorf("CreatedAt %v not near %v", s.CreatedAt, start)
	}
	if !g.ExpiresAt.Equal(s.ExpiresAt) || !g.SessionExpiresAt.Equal(s.SessionExpiresAt) || !s.LastUsedAt.Equal(s.CreatedAt) {
		t.Errorf("grant deadlines %v/%v differ from session %+v", g.ExpiresAt, g.SessionExpiresAt, s)
	}
	if strings.Contains(fmt.Sprint(g), g.Token) || strings.Contains(fmt.Sprintf("%#v", g), g.Token) {
		t.Errorf("printing a Grant shows the token")
	}
}

func testRotateChain(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{IdleTTL: time.Hour, AbsoluteTTL: 24 * time.Hour})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	b.Clock.Advance(10 * time.Minute)
	moved := redisstore.Client{IPAddress: "2001:db8::1", UserAgent: "Firefox/129.0"}
	g1, err := f.store.Rotate(ctx, g0.Token, moved)
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
	info, err := f.store.Validate(ctx, g1.Token)
	if err != nil || info.SessionID != g0.SessionID || !info.ExpiresAt.Equal(g1.ExpiresAt) {
		t.Fatalf("Validate successor = %+v, %v", info, err)
	}
	l, err := f.store.ListSessions(ctx, "user-1")
	if err != nil || len(l) != 1 {
		t.Fatalf("ListSessions = %d, %v", len(l), err)
	}
	s := l[0]
	if s.IPAddress != moved.IPAddress || s.UserAgent != moved.UserAgent || s.DeviceName != laptop.DeviceName {
		t.Errorf("after rotation: IP %q UA %q name %q; want IP and UA updated, name kept", s.IPAddress, s.UserAgent, s.DeviceName)
	}
	if !s.LastUsedAt.After(s.CreatedAt) || !s.ExpiresAt.Equal(g1.ExpiresAt) {
		t.Errorf("after rotation: LastUsedAt %v (created %v), ExpiresAt %v (grant %v)", s.LastUsedAt, s.CreatedAt, s.ExpiresAt, g1.ExpiresAt)
	}
	_, err = f.store.Validate(ctx, g0.Token)
	var re *redisstore.RevokedError
	if !errors.As(err, &re) || re.Reason != redisstore.ReasonRotated {
		t.Fatalf("Validate rotated token: err = %v, want RevokedError(rotated)", err)
	}
	// A long chain keeps working, and each step invalidates the last.
	tok := g1.Token
	for i := 0; i < 20; i++ {
		tok = f.rotate(t, tok).Token
	}
	if _, err := f.store.Validate(ctx, tok); err != nil {
		t.Fatalf("Validate after 21 rotations: %v", err)
	}
}

func testGraceReplay(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: 10 * time.Second})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	g1 := f.rotate(t, g0.Token)
	f.takeEvents()
	before := f.snapshot(t)
	b.Clock.Advance(5 * time.Second)
	again, err := f.store.Rotate(ctx, g0.Token, redisstore.Client{})
	if err != nil {
		t.Fatalf("Rotate predecessor in grace: %v", err)
	}
	if again.Token != g1.Token || !again.Replayed || !again.ExpiresAt.Equal(g1.ExpiresAt) {
		t.Fatalf("grace replay returned a different grant (replayed=%v, same token=%v)", again.Replayed, again.Token == g1.Token)
	}
	if d := cmp.Diff(before, f.snapshot(t)); d != "" {
		t.Errorf("grace replay wrote to Redis (-before +after):\n%s", d)
	}
	if ev := f.takeEvents(); len(ev) != 1 || ev[0].Kind != redisstore.EventGraceReplay || ev[0].SessionID != g0.SessionID {
		t.Errorf("events = %v, want one grace_replay", ev)
	}
	// The successor still works, and rotates normally.
	g2 := f.rotate(t, g1.Token)
	if _, err := f.store.Validate(ctx, g2.Token); err != nil {
		t.Fatalf("Validate after grace: %v", err)
	}
}

func testGraceExpired(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: 10 * time.Second})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	g1 := f.rotate(t, g0.Token)
	f.takeEvents()
	b.Clock.Advance(11 * time.Second)
	_, err := f.store.Rotate(ctx, g0.Token, redisstore.Client{})
	wantErr(t, "Rotate predecessor after grace", err, redisstore.ErrReused)
	ev := f.takeEvents()
	if len(ev) != 1 || ev[0].Kind != redisstore.EventReuseDetected || ev[0].UserID != "user-1" || ev[0].SessionID != g0.SessionID || ev[0].Reason != redisstore.ReasonReuse {
		t.Errorf("events = %+v, want one reuse_detected for user-1", ev)
	}
	// The whole family is dead, its newest token included.
	_, err = f.store.Rotate(ctx, g1.Token, redisstore.Client{})
	var re *redisstore.RevokedError
	if !errors.As(err, &re) || re.Reason != redisstore.ReasonReuse {
		t.Fatalf("Rotate newest token after reuse: err = %v, want RevokedError(reuse)", err)
	}
	_, err = f.store.Validate(ctx, g1.Token)
	wantErr(t, "Validate newest token after reuse", err, redisstore.ErrRevoked)
	if l, _ := f.store.ListSessions(ctx, "user-1"); len(l) != 0 {
		t.Errorf("ListSessions after reuse = %d sessions, want 0", len(l))
	}
}

func testGrandparent(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: time.Minute})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	g1 := f.rotate(t, g0.Token)
	g2 := f.rotate(t, g1.Token)
	// g0 is the grandparent of the current token: never in grace, even
	// right away.
	_, err := f.store.Rotate(ctx, g0.Token, redisstore.Client{})
	wantErr(t, "Rotate grandparent", err, redisstore.ErrReused)
	_, err = f.store.Validate(ctx, g2.Token)
	wantErr(t, "Validate newest after grandparent replay", err, redisstore.ErrRevoked)

	// Any older generation, long after, for as long as the family lives.
	g0 = f.issue(t, "user-1", laptop)
	tok := g0.Token
	for i := 0; i < 5; i++ {
		tok = f.rotate(t, tok).Token
		b.Clock.Advance(time.Hour)
	}
	_, err = f.store.Rotate(ctx, g0.Token, redisstore.Client{})
	wantErr(t, "Rotate generation 0 after 5 rotations", err, redisstore.ErrReused)
	_, err = f.store.Validate(ctx, tok)
	wantErr(t, "Validate newest after old replay", err, redisstore.ErrRevoked)
}

func testGraceSameDevice(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: time.Minute, GraceSameDevice: true})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	g1, err := f.store.Rotate(ctx, g0.Token, redisstore.Client{DeviceID: laptop.DeviceID})
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.store.Rotate(ctx, g0.Token, redisstore.Client{DeviceID: laptop.DeviceID})
	if err != nil || again.Token != g1.Token {
		t.Fatalf("same device in grace: err = %v, same token = %v", err, again.Token == g1.Token)
	}
	_, err = f.store.Rotate(ctx, g0.Token, redisstore.Client{DeviceID: "other-device"})
	wantErr(t, "other device in grace", err, redisstore.ErrReused)
	_, err = f.store.Validate(ctx, g1.Token)
	wantErr(t, "Validate after other-device replay", err, redisstore.ErrRevoked)
}

func testGraceOff(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: -1})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	g1 := f.rotate(t, g0.Token)
	_, err := f.store.Rotate(ctx, g0.Token, redisstore.Client{})
	wantErr(t, "second use without grace", err, redisstore.ErrReused)
	_, err = f.store.Validate(ctx, g1.Token)
	wantErr(t, "Validate successor", err, redisstore.ErrRevoked)
}

// forge returns tokens that look right but were never issued: each passes
// the checksum, so only the MAC check can refuse them.
func forge(t *testing.T, real string) []string {
	t.Helper()
	body := real[len(redisstore.DefaultTokenPrefix):]
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	// Flip a bit in the generation, the secret, and the MAC; bump the
	// generation down and up (a forged "old" token is the dangerous one).
	for _, off := range []int{33, 50, 80} {
		b := append([]byte(nil), raw...)
		b[off] ^= 1
		out = append(out, redisstore.DefaultTokenPrefix+base64.RawURLEncoding.EncodeToString(fixCRC(b)))
	}
	return out
}

func fixCRC(b []byte) []byte {
	n := len(b) - 4
	c := crc32IEEE(b[:n])
	b[n], b[n+1], b[n+2], b[n+3] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
	return b
}

func testForgery(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: -1})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	g1 := f.rotate(t, g0.Token)
	g2 := f.rotate(t, g1.Token)
	// A token from a store with another secret.
	other := newFixture(t, b, redisstore.Options{Secret: []byte("another-secret-another-secret-0123456789")})
	foreign := other.issue(t, "user-1", laptop)
	before := f.snapshot(t)
	// Forgeries of an old generation and of the current one: the old-token
	// ones would revoke the family if the store trusted them.
	for _, forged := range append(forge(t, g0.Token), forge(t, g2.Token)...) {
		_, err := f.store.Rotate(ctx, forged, redisstore.Client{})
		wantErr(t, "Rotate forged", err, redisstore.ErrUnknown)
		_, err = f.store.Validate(ctx, forged)
		wantErr(t, "Validate forged", err, redisstore.ErrUnknown)
		n, err := f.store.RevokeToken(ctx, forged)
		if n != 0 || !errors.Is(err, redisstore.ErrUnknown) {
			t.Fatalf("RevokeToken forged = %d, %v; want 0, ErrUnknown", n, err)
		}
	}
	_, err := f.store.Rotate(ctx, foreign.Token, redisstore.Client{})
	wantErr(t, "Rotate foreign", err, redisstore.ErrUnknown)
	if d := cmp.Diff(before, f.snapshot(t)); d != "" {
		t.Errorf("forgeries changed Redis (-before +after):\n%s", d)
	}
	if _, err := f.store.Validate(ctx, g2.Token); err != nil {
		t.Fatalf("Validate genuine token after forgeries: %v", err)
	}
	if ev := f.takeEvents(); len(ev) != 0 {
		t.Errorf("forgeries emitted events: %v", ev)
	}
}

func testMalformed(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	g := f.issue(t, "user-1", laptop)
	before := f.snapshot(t)
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
		_, err := f.store.Rotate(ctx, tok, redisstore.Client{})
		wantErr(t, fmt.Sprintf("Rotate(%.12q)", tok), err, redisstore.ErrMalformed)
		_, err = f.store.Validate(ctx, tok)
		wantErr(t, "Validate malformed", err, redisstore.ErrMalformed)
		_, err = f.store.RevokeToken(ctx, tok)
		wantErr(t, "RevokeToken malformed", err, redisstore.ErrMalformed)
	}
	if d := cmp.Diff(before, f.snapshot(t)); d != "" {
		t.Errorf("malformed tokens changed Redis (-before +after):\n%s", d)
	}
}

func testBadInput(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	g := f.issue(t, "user-1", laptop)
	before := f.snapshot(t)
	long := strings.Repeat("x", 1000)
	for name, c := range map[string]redisstore.Client{
		"long device id":   {DeviceID: long},
		"long device name": {DeviceName: long},
		"long user agent":  {UserAgent: long + long},
		"bad IP":           {IPAddress: "999.1.1.1"},
		"control char":     {DeviceName: "evil\x00name"},
		"invalid UTF-8":    {UserAgent: "\xff\xfe"},
	} {
		_, err := f.store.Issue(ctx, "user-1", c)
		wantErr(t, "Issue with "+name, err, redisstore.ErrInvalidArgument)
		_, err = f.store.Rotate(ctx, g.Token, c)
		wantErr(t, "Rotate with "+name, err, redisstore.ErrInvalidArgument)
	}
	var ae *redisstore.ArgumentError
	if _, err := f.store.Issue(ctx, "user-1", redisstore.Client{IPAddress: "nope"}); !errors.As(err, &ae) || ae.Field != "IP address" {
		t.Fatalf("Issue with a bad IP: %v, want an ArgumentError for the IP address", err)
	}
	for _, user := range []string{"", long, "a\nb", "\xff"} {
		_, err := f.store.Issue(ctx, user, laptop)
		wantErr(t, fmt.Sprintf("Issue(user %.10q)", user), err, redisstore.ErrInvalidArgument)
		_, err = f.store.ListSessions(ctx, user)
		wantErr(t, "ListSessions bad user", err, redisstore.ErrInvalidArgument)
		_, err = f.store.RevokeAll(ctx, user, "")
		wantErr(t, "RevokeAll bad user", err, redisstore.ErrInvalidArgument)
	}
	for _, sid := range []string{"", "not-a-uuid", g.SessionID + "x"} {
		_, err := f.store.RevokeSession(ctx, "user-1", sid)
		wantErr(t, "RevokeSession bad id", err, redisstore.ErrInvalidArgument)
		_, err = f.store.RevokeAll(ctx, "user-1", sid+"!")
		wantErr(t, "RevokeAll bad keep id", err, redisstore.ErrInvalidArgument)
	}
	if d := cmp.Diff(before, f.snapshot(t)); d != "" {
		t.Errorf("bad input changed Redis (-before +after):\n%s", d)
	}
	if _, err := f.store.Validate(ctx, g.Token); err != nil {
		t.Fatalf("token invalid after bad input: %v", err)
	}
}

func testIdleExpiry(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{IdleTTL: time.Hour, AbsoluteTTL: 10 * time.Hour})
	ctx := context.Background()
	g0 := f.issue(t, "user-1", laptop)
	b.Clock.Advance(59 * time.Minute)
	g1 := f.rotate(t, g0.Token) // rotation slides the idle deadline
	b.Clock.Advance(59 * time.Minute)
	if _, err := f.store.Validate(ctx, g1.Token); err != nil {
		t.Fatalf("Validate 59m after rotation: %v", err)
	}
	b.Clock.Advance(2 * time.Minute)
	_, err := f.store.Validate(ctx, g1.Token)
	wantErr(t, "Validate after idle TTL", err, redisstore.ErrExpired)
	_, err = f.store.Rotate(ctx, g1.Token, redisstore.Client{})
	wantErr(t, "Rotate after idle TTL", err, redisstore.ErrExpired)
	if l, err := f.store.ListSessions(ctx, "user-1"); err != nil || len(l) != 0 {
		t.Errorf("ListSessions after idle expiry = %d, %v; want none", len(l), err)
	}
	if n, err := f.store.RevokeAll(ctx, "user-1", ""); n != 0 || err != nil {
		t.Errorf("RevokeAll after expiry = %d, %v; want 0", n, err)
	}
}

func testAbsoluteExpiry(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{IdleTTL: time.Hour, AbsoluteTTL: 3 * time.Hour})
	ctx := context.Background()
	g := f.issue(t, "user-1", laptop)
	abs := g.SessionExpiresAt
	for i := 0; i < 6; i++ { // 6 x 35m = 3.5h of regular use
		b.Clock.Advance(35 * time.Minute)
		next, err := f.store.Rotate(ctx, g.Token, redisstore.Client{})
		if b.Clock.Now().Before(abs) {
			if err != nil {
				t.Fatalf("rotation %d before the absolute deadline: %v", i, err)
			}
			if next.ExpiresAt.After(abs) || !next.SessionExpiresAt.Equal(abs) {
				t.Fatalf("rotation %d: deadlines %v/%v pass absolute %v", i, next.ExpiresAt, next.SessionExpiresAt, abs)
			}
			g = next
			continue
		}
		wantErr(t, "Rotate after absolute deadline", err, redisstore.ErrExpired)
		_, err = f.store.Validate(ctx, g.Token)
		wantErr(t, "Validate after absolute deadline", err, redisstore.ErrExpired)
		return
	}
	t.Fatal("the session outlived its absolute deadline")
}

func testListSessions(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{IdleTTL: time.Hour})
	ctx := context.Background()
	phone := redisstore.Client{DeviceID: "dev-phone", DeviceName: "Pixel 9", IPAddress: "198.51.100.7", UserAgent: "App/3.1"}
	gl := f.issue(t, "alice", laptop)
	b.Clock.Advance(time.Minute)
	gp := f.issue(t, "alice", phone)
	b.Clock.Advance(time.Minute)
	gs := f.issue(t, "alice", redisstore.Client{DeviceID: "short-lived"})
	f.issue(t, "bob", laptop)
	b.Clock.Advance(time.Minute)
	f.rotate(t, gl.Token) // the laptop is now the most recently used
	// Idle deadlines: phone t+61m, short-lived t+62m, laptop t+63m.
	l, err := f.store.ListSessions(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range l {
		ids = append(ids, s.ID)
	}
	if d := cmp.Diff([]string{gl.SessionID, gs.SessionID, gp.SessionID}, ids); d != "" {
		t.Fatalf("ListSessions order, most recently used first (-want +got):\n%s", d)
	}
	if l[2].DeviceName != "Pixel 9" || l[2].IPAddress != phone.IPAddress || l[2].UserAgent != phone.UserAgent || l[2].DeviceID != phone.DeviceID {
		t.Errorf("phone session = %+v", l[2])
	}
	// At t+62m+1s only the laptop is live.
	b.Clock.Advance(59*time.Minute + time.Second)
	l, err = f.store.ListSessions(ctx, "alice")
	if err != nil || len(l) != 1 || l[0].ID != gl.SessionID {
		t.Fatalf("after idle expiry: %d sessions, %v; want only the laptop", len(l), err)
	}
	if l, _ := f.store.ListSessions(ctx, "nobody"); len(l) != 0 {
		t.Errorf("ListSessions(nobody) = %d sessions", len(l))
	}
}

func testRevokeSession(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	g := f.issue(t, "alice", laptop)
	other := f.issue(t, "alice", laptop)
	bob := f.issue(t, "bob", laptop)
	// Bob cannot revoke Alice's session by its id.
	if n, err := f.store.RevokeSession(ctx, "bob", g.SessionID); n != 0 || err != nil {
		t.Fatalf("RevokeSession of another user's session = %d, %v", n, err)
	}
	f.takeEvents()
	if n, err := f.store.RevokeSession(ctx, "alice", g.SessionID); n != 1 || err != nil {
		t.Fatalf("RevokeSession = %d, %v; want 1", n, err)
	}
	if ev := f.takeEvents(); len(ev) != 1 || ev[0].Kind != redisstore.EventSessionRevoked || ev[0].Reason != redisstore.ReasonLogout || ev[0].UserID != "alice" {
		t.Errorf("events = %+v", ev)
	}
	if n, err := f.store.RevokeSession(ctx, "alice", g.SessionID); n != 0 || err != nil {
		t.Fatalf("second RevokeSession = %d, %v; want 0", n, err)
	}
	_, err := f.store.Rotate(ctx, g.Token, redisstore.Client{})
	var re *redisstore.RevokedError
	if !errors.As(err, &re) || re.Reason != redisstore.ReasonLogout {
		t.Fatalf("Rotate revoked: %v, want RevokedError(logout)", err)
	}
	for _, tok := range []string{other.Token, bob.Token} {
		if _, err := f.store.Validate(ctx, tok); err != nil {
			t.Fatalf("unrelated session hurt: %v", err)
		}
	}
	if l, _ := f.store.ListSessions(ctx, "alice"); len(l) != 1 || l[0].ID != other.SessionID {
		t.Errorf("ListSessions after revoke = %+v", l)
	}
}

func testRevokeToken(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	g0 := f.issue(t, "alice", laptop)
	g1 := f.rotate(t, g0.Token)
	// Any genuine token of the session ends it, the rotated one included.
	if n, err := f.store.RevokeToken(ctx, g0.Token); n != 1 || err != nil {
		t.Fatalf("RevokeToken = %d, %v; want 1", n, err)
	}
	_, err := f.store.Validate(ctx, g1.Token)
	wantErr(t, "Validate after RevokeToken", err, redisstore.ErrRevoked)
	if n, err := f.store.RevokeToken(ctx, g1.Token); n != 0 || err != nil {
		t.Fatalf("RevokeToken again = %d, %v; want 0", n, err)
	}
}

func testRevokeAll(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	var gs []redisstore.Grant
	for i := 0; i < 5; i++ {
		gs = append(gs, f.issue(t, "alice", laptop))
	}
	bob := f.issue(t, "bob", laptop)
	f.takeEvents()
	n, err := f.store.RevokeAll(ctx, "alice", gs[2].SessionID)
	if n != 4 || err != nil {
		t.Fatalf("RevokeAll except one = %d, %v; want 4", n, err)
	}
	if ev := f.takeEvents(); len(ev) != 4 || ev[0].Reason != redisstore.ReasonLogoutAll {
		t.Errorf("events = %+v, want 4 logout_all", ev)
	}
	for i, g := range gs {
		_, err := f.store.Validate(ctx, g.Token)
		if i == 2 && err != nil {
			t.Fatalf("kept session: %v", err)
		}
		var re *redisstore.RevokedError
		if i != 2 && (!errors.As(err, &re) || re.Reason != redisstore.ReasonLogoutAll) {
			t.Fatalf("session %d after RevokeAll: %v", i, err)
		}
	}
	if n, err := f.store.RevokeAll(ctx, "alice", ""); n != 1 || err != nil {
		t.Fatalf("RevokeAll = %d, %v; want 1", n, err)
	}
	if n, err := f.store.RevokeAll(ctx, "alice", ""); n != 0 || err != nil {
		t.Fatalf("RevokeAll again = %d, %v; want 0", n, err)
	}
	if _, err := f.store.Validate(ctx, bob.Token); err != nil {
		t.Fatalf("bob hurt by alice's RevokeAll: %v", err)
	}
}

func testMaxSessions(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{MaxSessions: 3, IdleTTL: time.Hour})
	ctx := context.Background()
	var gs []redisstore.Grant
	for i := 0; i < 3; i++ {
		gs = append(gs, f.issue(t, "alice", laptop))
		b.Clock.Advance(time.Minute)
	}
	f.rotate(t, gs[0].Token) // session 0 is now the most recently used; 1 is the least
	f.takeEvents()
	g4 := f.issue(t, "alice", laptop)
	ev := f.takeEvents()
	if len(ev) != 1 || ev[0].Kind != redisstore.EventSessionEvicted || ev[0].SessionID != gs[1].SessionID || ev[0].Reason != redisstore.ReasonEvicted {
		t.Fatalf("events = %+v, want session %s evicted", ev, gs[1].SessionID)
	}
	_, err := f.store.Validate(ctx, gs[1].Token)
	var re *redisstore.RevokedError
	if !errors.As(err, &re) || re.Reason != redisstore.ReasonEvicted {
		t.Fatalf("evicted session: %v, want RevokedError(evicted)", err)
	}
	l, err := f.store.ListSessions(ctx, "alice")
	if err != nil || len(l) != 3 {
		t.Fatalf("ListSessions = %d, %v; want 3", len(l), err)
	}
	if _, err := f.store.Validate(ctx, g4.Token); err != nil {
		t.Fatal(err)
	}
	// Expired sessions do not count against the cap.
	b.Clock.Advance(2 * time.Hour)
	for i := 0; i < 3; i++ {
		f.issue(t, "alice", laptop)
	}
	if ev := f.takeEvents(); len(ev) != 0 {
		t.Errorf("issuing after expiry evicted: %+v", ev)
	}
}

func testKeyRotation(t *testing.T, b *redistest.Backend) {
	k1 := redisstore.Key{ID: 1, Secret: []byte("key-one-key-one-key-one-key-one-key-one")}
	k2 := redisstore.Key{ID: 2, Secret: []byte("key-two-key-two-key-two-key-two-key-two")}
	ctx := context.Background()
	old := newFixture(t, b, redisstore.Options{Keys: []redisstore.Key{k1}, Grace: time.Minute})
	g0 := old.issue(t, "alice", laptop)
	// Deploy with k2 first: old tokens still rotate, successors use k2.
	both := newFixture(t, b, redisstore.Options{Keys: []redisstore.Key{k2, k1}, Grace: time.Minute})
	both.store = mustNew(t, b, both.opt, old.opt.KeyPrefix)
	g1, err := both.store.Rotate(ctx, g0.Token, redisstore.Client{})
	if err != nil {
		t.Fatalf("rotate a k1 token with [k2 k1]: %v", err)
	}
	// A grace replay against the old deployment (k1 only) cannot re-derive
	// a k2 token: it must not hand out anything else.
	if g, err := old.store.Rotate(ctx, g0.Token, redisstore.Client{}); err == nil {
		t.Fatalf("k1-only store answered a replay of a k2 successor: replayed=%v", g.Replayed)
	}
	// Drop k1: the k2 token still works, k1 tokens are unknown.
	only2 := mustNew(t, b, redisstore.Options{Keys: []redisstore.Key{k2}, Now: b.Clock.Now}, old.opt.KeyPrefix)
	if _, err := only2.Validate(ctx, g1.Token); err != nil {
		t.Fatalf("k2 token under [k2]: %v", err)
	}
	_, err = only2.Validate(ctx, g0.Token)
	wantErr(t, "k1 token under [k2]", err, redisstore.ErrUnknown)
	// The user index does not move with the token keys: listing still works.
	if l, err := only2.ListSessions(ctx, "alice"); err != nil || len(l) != 1 {
		t.Fatalf("ListSessions after key rotation = %d, %v", len(l), err)
	}
}

func mustNew(t *testing.T, b *redistest.Backend, opt redisstore.Options, prefix string) *redisstore.Store {
	t.Helper()
	if opt.Secret == nil {
		opt.Secret = secret
	}
	opt.KeyPrefix = prefix
	s, err := redisstore.New(b.Client, opt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testEveryKeyHasTTL(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{MaxSessions: 2, Grace: time.Second})
	ctx := context.Background()
	// Exercise every write path: issue, rotate, grace, reuse, eviction,
	// revoke, revoke all.
	g := f.issue(t, "alice", laptop)
	g1 := f.rotate(t, g.Token)
	f.rotate(t, g.Token)
	f.issue(t, "alice", laptop)
	f.issue(t, "alice", laptop) // evicts
	b.Clock.Advance(2 * time.Second)
	f.store.Rotate(ctx, g.Token, redisstore.Client{}) // reuse
	h := f.issue(t, "bob", laptop)
	f.store.RevokeToken(ctx, h.Token)
	f.issue(t, "carol", laptop)
	f.store.RevokeAll(ctx, "carol", "")
	_ = g1
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

func testNoRawToken(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	var toks []string
	g := f.issue(t, "alice", laptop)
	toks = append(toks, g.Token)
	for i := 0; i < 3; i++ {
		g = f.rotate(t, g.Token)
		toks = append(toks, g.Token)
	}
	d, err := b.Dump(ctx)
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
	blob := all.String()
	for i, tok := range toks {
		raw, _ := base64.RawURLEncoding.DecodeString(tok[len(redisstore.DefaultTokenPrefix):])
		secretPart, macPart := raw[46:78], raw[78:94]
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

func testRaceGrace(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: time.Minute})
	g := f.issue(t, "alice", laptop)
	const n = 64
	grants, errs := raceRotate(f, g.Token, n)
	succ, fresh := map[string]int{}, 0
	for i := range grants {
		if errs[i] != nil {
			t.Fatalf("rotation %d: %v", i, errs[i])
		}
		succ[grants[i].Token]++
		if !grants[i].Replayed {
			fresh++
		}
	}
	if len(succ) != 1 || fresh != 1 {
		t.Fatalf("%d concurrent rotations: %d distinct successors, %d created; want 1 and 1", n, len(succ), fresh)
	}
	t.Logf("%s: %d concurrent rotations -> 1 successor created, %d grace replays", b.Kind, n, n-1)
	for tok := range succ {
		if _, err := f.store.Validate(context.Background(), tok); err != nil {
			t.Fatalf("the successor: %v", err)
		}
	}
}

func testRaceNoGrace(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: -1})
	g := f.issue(t, "alice", laptop)
	const n = 64
	grants, errs := raceRotate(f, g.Token, n)
	wins, reused, revoked := 0, 0, 0
	var winner string
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
			winner = grants[i].Token
		case errors.Is(err, redisstore.ErrReused):
			reused++
		case errors.Is(err, redisstore.ErrRevoked):
			revoked++
		default:
			t.Fatalf("rotation %d: %v", i, err)
		}
	}
	if wins != 1 || reused != 1 || revoked != n-2 {
		t.Fatalf("%d concurrent rotations without grace: %d won, %d saw reuse, %d saw revoked; want 1, 1, %d", n, wins, reused, revoked, n-2)
	}
	t.Logf("%s: %d concurrent rotations without grace -> 1 winner, 1 reuse detection, %d refused", b.Kind, n, revoked)
	_, err := f.store.Validate(context.Background(), winner)
	wantErr(t, "winner after the race revoked the family", err, redisstore.ErrRevoked)
}

func raceRotate(f *fixture, tok string, n int) ([]redisstore.Grant, []error) {
	grants, errs := make([]redisstore.Grant, n), make([]error, n)
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			grants[i], errs[i] = f.store.Rotate(context.Background(), tok, redisstore.Client{})
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	return grants, errs
}

func testConcurrentLogins(t *testing.T, b *redistest.Backend) {
	// Logins racing each other and a RevokeAll: the cap holds, and after the
	// RevokeAll no session issued before it survives.
	f := newFixture(t, b, redisstore.Options{MaxSessions: 5})
	ctx := context.Background()
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := f.store.Issue(ctx, "alice", laptop); err != nil {
				failed.Add(1)
				t.Errorf("Issue: %v", err)
			}
		}()
	}
	wg.Wait()
	l, err := f.store.ListSessions(ctx, "alice")
	if err != nil || len(l) != 5 {
		t.Fatalf("after 32 concurrent logins with cap 5: %d sessions, %v", len(l), err)
	}
	evicted := 0
	for _, e := range f.takeEvents() {
		if e.Kind == redisstore.EventSessionEvicted {
			evicted++
		}
	}
	if evicted != 27 {
		t.Errorf("evictions = %d, want 27", evicted)
	}
	if n, err := f.store.RevokeAll(ctx, "alice", ""); n != 5 || err != nil {
		t.Fatalf("RevokeAll = %d, %v; want 5", n, err)
	}
}

func testScriptCacheLoss(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	if err := f.store.Ping(ctx); err != nil {
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
	if _, err := f.store.Validate(ctx, g.Token); err != nil {
		t.Fatal(err)
	}
}

// realisticClient is the metadata a browser session carries.
var realisticClient = redisstore.Client{
	DeviceID:   "5b0d1b5e-7d1c-4d3e-9a56-0c9f5e6b2a11",
	DeviceName: "Chrome on macOS",
	IPAddress:  "203.0.113.77",
	UserAgent:  "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 Chrome/126.0",
}

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
	g, err = f.store.Rotate(ctx, g.Token, rot)
	if err != nil {
		t.Fatal(err)
	}
	after1 := usage()
	for i := 1; i < 1000; i++ {
		if g, err = f.store.Rotate(ctx, g.Token, rot); err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
	}
	after1000 := usage()
	t.Logf("%s: Redis bytes for one session with realistic metadata (session hash + user index, MEMORY USAGE): %d after 1 rotation, %d after 1000", b.Kind, after1, after1000)
	// The generation counter in the state field grows by three digits;
	// nothing else may grow.
	if after1000 > after1+8 {
		t.Fatalf("memory grows with rotations: %d bytes after 1, %d after 1000", after1, after1000)
	}
	if after1000 > 600 {
		t.Errorf("%d bytes per session, over the 600-byte budget", after1000)
	}
}

func testNoKeyLeft(t *testing.T, b *redistest.Backend) {
	// Short lifetimes on the real clock for real servers (Redis expires the
	// keys on its own); on miniredis the clock moves.
	opt := redisstore.Options{IdleTTL: 300 * time.Millisecond, AbsoluteTTL: 900 * time.Millisecond, Grace: 50 * time.Millisecond, MaxSessions: 2}
	if b.Kind != redistest.Mini {
		opt.Now = time.Now
	}
	f := newFixture(t, b, opt)
	ctx := context.Background()
	// Every kind of key: live sessions, rotated ones, a tombstone from each
	// kind of revocation, an eviction, and indexes of several users.
	g := f.issue(t, "alice", laptop)
	g = f.rotate(t, g.Token)
	f.issue(t, "alice", laptop)
	f.issue(t, "alice", laptop) // evicts the first
	h := f.issue(t, "bob", laptop)
	h1 := f.rotate(t, h.Token)
	f.rotate(t, h1.Token)
	f.store.Rotate(ctx, h.Token, redisstore.Client{}) // reuse: tombstone
	c := f.issue(t, "carol", laptop)
	f.store.RevokeToken(ctx, c.Token)
	f.issue(t, "dave", laptop)
	f.store.RevokeAll(ctx, "dave", "")
	keys, err := b.Keys(ctx)
	if err != nil || len(keys) < 6 {
		t.Fatalf("%d keys before expiry (%v): %v", len(keys), err, keys)
	}
	if b.Kind == redistest.Mini {
		b.Clock.Advance(time.Second)
	}
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
		time.Sleep(50 * time.Millisecond)
	}
}

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
		if b.Kind == redistest.Cluster {
			s, err := b.Client.ClusterKeySlot(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			slots[s] = true
		} else {
			slots[int64(len(slots))] = true
			open, close := strings.IndexByte(k, '{'), strings.IndexByte(k, '}')
			if open < 0 || close < open {
				t.Fatalf("key %q has no hash tag", k)
			}
		}
	}
	if b.Kind == redistest.Cluster && len(slots) < 50 {
		t.Fatalf("64 users' keys use %d slots: a global hash tag?", len(slots))
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
	_, err := f.store.Issue(ctx, "alice", laptop)
	check("Issue", err)
	_, err = f.store.Rotate(ctx, g.Token, redisstore.Client{})
	check("Rotate", err)
	_, err = f.store.Validate(ctx, g.Token)
	check("Validate", err)
	_, err = f.store.ListSessions(ctx, "alice")
	check("ListSessions", err)
	_, err = f.store.RevokeSession(ctx, "alice", g.SessionID)
	check("RevokeSession", err)
	_, err = f.store.RevokeToken(ctx, g.Token)
	check("RevokeToken", err)
	_, err = f.store.RevokeAll(ctx, "alice", "")
	check("RevokeAll", err)
	check("Ping", f.store.Ping(ctx))
	// A cancelled context is an error too, returned promptly.
	ctx2, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = f.store.Rotate(ctx2, g.Token, redisstore.Client{})
	check("Rotate with cancelled context", err)
}

func TestEvictionPolicy(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		policy string
		unsafe bool
	}{{"noeviction", false}, {"allkeys-lru", true}, {"volatile-ttl", true}} {
		t.Run(tc.policy, func(t *testing.T) {
			srv := redistest.StartServer(t, "--maxmemory-policy", tc.policy)
			s, err := redisstore.New(srv.Client(t), redisstore.Options{Secret: secret})
			if err != nil {
				t.Fatal(err)
			}
			err = s.CheckEvictionPolicy(ctx)
			if tc.unsafe != errors.Is(err, redisstore.ErrEvictionPolicy) || (!tc.unsafe && err != nil) {
				t.Fatalf("CheckEvictionPolicy on %s = %v", tc.policy, err)
			}
		})
	}
	t.Run("cluster", func(t *testing.T) {
		b := redistest.For(t, redistest.Cluster)
		s, _ := redisstore.New(b.Client, redisstore.Options{Secret: secret})
		if err := s.CheckEvictionPolicy(ctx); err != nil {
			t.Fatalf("CheckEvictionPolicy on the test cluster: %v", err)
		}
	})
	t.Run("miniredis", func(t *testing.T) {
		// miniredis has no INFO memory: the check must fail, not pass.
		b := redistest.For(t, redistest.Mini)
		s, _ := redisstore.New(b.Client, redisstore.Options{Secret: secret})
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
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(rc.Info(ctx, "replication").Val(), "master_link_status:up") {
		if time.Now().After(deadline) {
			t.Fatal("replica never linked")
		}
		time.Sleep(20 * time.Millisecond)
	}
	mc := master.Client(t)
	newStore := func(replicas int) *redisstore.Store {
		s, err := redisstore.New(mc, redisstore.Options{Secret: secret, RevocationReplicas: replicas, ReplicationTimeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return s
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
	rs, _ := redisstore.New(rc, redisstore.Options{Secret: secret})
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

// TestOutOfMemory: at maxmemory with noeviction, logins and rotations fail
// with an error and write nothing; revocations (which free memory) succeed.
func TestOutOfMemory(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartServer(t, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
	rdb := srv.Client(t)
	s, err := redisstore.New(rdb, redisstore.Options{Secret: secret, KeyPrefix: "oom:"})
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := s.Issue(ctx, "alice", laptop)
	bob, _ := s.Issue(ctx, "bob", laptop)
	carol, err := s.Issue(ctx, "carol", laptop)
	if err != nil {
		t.Fatal(err)
	}
	// Fill the server with unrelated data until it refuses writes, then
	// lower maxmemory under what is used, so that it stays over the limit.
	filler := strings.Repeat("x", 64<<10)
	for i := 0; ; i++ {
		if err := rdb.Set(ctx, fmt.Sprintf("filler:%d", i), filler, 0).Err(); err != nil {
			if !strings.Contains(err.Error(), "OOM") {
				t.Fatalf("filling: %v", err)
			}
			break
		}
	}
	used, err := rdb.MemoryUsage(ctx, "filler:0").Result()
	if err != nil {
		t.Fatal(err)
	}
	info := rdb.Info(ctx, "memory").Val()
	var usedMemory int64
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "used_memory:"); ok {
			fmt.Sscan(v, &usedMemory)
		}
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", fmt.Sprint(usedMemory-2*used)).Err(); err != nil {
		t.Fatal(err)
	}
	dump := func() map[string]string {
		keys, _ := rdb.Keys(ctx, "oom:*").Result()
		out := map[string]string{}
		for _, k := range keys {
			out[k] = fmt.Sprint(rdb.HGetAll(ctx, k).Val(), rdb.ZRange(ctx, k, 0, -1).Val())
		}
		return out
	}
	before := dump()
	_, err = s.Issue(ctx, "dave", laptop)
	if err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("Issue at maxmemory: %v, want an OOM error", err)
	}
	_, err = s.Rotate(ctx, alice.Token, redisstore.Client{IPAddress: "192.0.2.99"})
	if err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("Rotate at maxmemory: %v, want an OOM error", err)
	}
	if d := cmp.Diff(before, dump()); d != "" {
		t.Fatalf("failed calls changed the keyspace (-before +after):\n%s", d)
	}
	if _, err := s.Validate(ctx, alice.Token); err != nil {
		t.Fatalf("Validate at maxmemory: %v", err)
	}
	if n, err := s.RevokeToken(ctx, alice.Token); n != 1 || err != nil {
		t.Fatalf("RevokeToken at maxmemory = %d, %v", n, err)
	}
	if n, err := s.RevokeAll(ctx, "bob", ""); n != 1 || err != nil {
		t.Fatalf("RevokeAll at maxmemory = %d, %v", n, err)
	}
	for _, tok := range []string{alice.Token, bob.Token} {
		var re *redisstore.RevokedError
		if _, err := s.Validate(ctx, tok); !errors.As(err, &re) {
			t.Fatalf("revoked at maxmemory, then Validate: %v", err)
		}
	}
	if _, err := s.Validate(ctx, carol.Token); err != nil {
		t.Fatalf("carol: %v", err)
	}
}

// testLateRetry: a rotation whose reply was lost is retried (by go-redis)
// with the arguments of the first attempt, its start time included. If
// another tab rotated the session again meanwhile, the retry presents a
// grandparent; having started before that rotation, it is refused without
// revoking anything. The same token presented later is a replay.
func testLateRetry(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: 10 * time.Second})
	ctx := context.Background()
	g0 := f.issue(t, "alice", laptop)
	// Tab A's call starts now; its rotation runs, its reply is lost.
	started := b.Clock.Now()
	tabA := mustNew(t, b, redisstore.Options{Grace: 10 * time.Second, Now: func() time.Time { return started }}, f.opt.KeyPrefix)
	if _, err := tabA.Rotate(ctx, g0.Token, redisstore.Client{}); err != nil {
		t.Fatal(err)
	}
	// Tab B refreshes with the same token (grace), then once more.
	b.Clock.Advance(time.Second)
	g1, err := f.store.Rotate(ctx, g0.Token, redisstore.Client{})
	if err != nil || !g1.Replayed {
		t.Fatalf("tab B in grace: %v (replayed %v)", err, g1.Replayed)
	}
	g2 := f.rotate(t, g1.Token)
	// Tab A's retry arrives.
	_, err = tabA.Rotate(ctx, g0.Token, redisstore.Client{})
	var re *redisstore.RevokedError
	if !errors.As(err, &re) || re.Reason != redisstore.ReasonRotated {
		t.Fatalf("late retry: %v, want RevokedError(rotated)", err)
	}
	if _, err := f.store.Validate(ctx, g2.Token); err != nil {
		t.Fatalf("the session suffered from a late retry: %v", err)
	}
	// The same token presented after the last rotation is a replay.
	b.Clock.Advance(time.Second)
	_, err = f.store.Rotate(ctx, g0.Token, redisstore.Client{})
	wantErr(t, "replay after the last rotation", err, redisstore.ErrReused)
}

// TestEventContext: events carry the context of the call that caused them,
// so a handler can attach the request's id or trace span.
func TestEventContext(t *testing.T) {
	type key struct{}
	b := redistest.For(t, redistest.Mini)
	var seen []any
	s, err := redisstore.New(b.Client, redisstore.Options{Secret: secret, Grace: -1, OnEvent: func(ctx context.Context, e redisstore.Event) {
		seen = append(seen, ctx.Value(key{}))
	}})
	if err != nil {
		t.Fatal(err)
	}
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
