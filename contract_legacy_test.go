package sessioncache_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/lua"
	"github.com/sessioncache/sessioncache/redisstore"
)

// Legacy tokens: the refresh tokens of a SQL table the store replaces,
// imported with ImportLegacy and accepted by Rotate (issue 21). The cases
// run on miniredis, a real Redis and a real 3-master cluster, where the
// lookup key and the session sit on different slots.

func TestLegacy(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		for _, tc := range legacyCases {
			t.Run(tc.name, func(t *testing.T) { tc.run(t, b.Isolated(t)) })
		}
	})
}

var legacyCases = []struct {
	name string
	run  func(t *testing.T, b *redistest.Backend)
}{
	{"Convert", testLegacyConvert},
	{"TwoTabsAndRetry", testLegacyTwoTabs},
	{"RaceOneSuccessor", testLegacyRace},
	{"ReplayAfterGrace", testLegacyReplay},
	{"OlderRows", testLegacyOlderRows},
	{"LostReply", testLegacyLostReply},
	{"Refused", testLegacyRefused},
	{"ImportIdempotent", testLegacyIdempotent},
	{"Deadlines", testLegacyDeadlines},
	{"Advance", testLegacyAdvance},
	{"Fork", testLegacyFork},
	{"RevokedInEither", testLegacyRevokedInEither},
	{"UserSeesImported", testLegacyUserSees},
	{"RevokeToken", testLegacyRevokeToken},
	{"KeysAndSecrets", testLegacyKeys},
	{"ScriptCacheLoss", testLegacyScriptCacheLoss},
	{"ClientBinding", testLegacyClientBinding},
	{"KeyBinding", testLegacyKeyBinding},
	{"Damaged", testLegacyDamaged},
}

// legacyHash is the old table's hash: SHA-256 of the token.
func legacyHash(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

var legacyOpt = redisstore.Options{LegacyHash: legacyHash, Grace: 10 * time.Second}

// legacyFamily is a family of the old table, with its tokens (oldest
// first, as the rows).
type legacyFamily struct {
	redisstore.LegacyFamily
	tokens []string
}

// current is the family's current token.
func (f *legacyFamily) current() string { return f.tokens[len(f.tokens)-1] }

// newLegacyFamily returns a family of user with rows rows, the newest
// created an hour before now and valid for a week after its creation.
func newLegacyFamily(user string, rows int, now time.Time) *legacyFamily {
	f := &legacyFamily{LegacyFamily: redisstore.LegacyFamily{
		SessionID: uuid.NewString(), UserID: user, Client: laptop,
		CreatedAt: now.Add(-time.Duration(rows) * time.Hour),
	}}
	for i := 0; i < rows; i++ {
		f.addRow(now.Add(-time.Duration(rows-i) * time.Hour))
	}
	return f
}

// addRow adds a newer row, as the old system's rotation does.
func (f *legacyFamily) addRow(created time.Time) {
	var b [32]byte
	rand.Read(b[:])
	tok := "pgt_" + base64.RawURLEncoding.EncodeToString(b[:])
	f.tokens = append(f.tokens, tok)
	f.Rows = append(f.Rows, redisstore.LegacyRow{Digest: legacyHash(tok), CreatedAt: created, ExpiresAt: created.Add(7 * 24 * time.Hour)})
}

func (fx *fixture) importLegacy(t *testing.T, f *legacyFamily, want redisstore.ImportOutcome) redisstore.ImportResult {
	t.Helper()
	r, err := fx.Store.ImportLegacy(context.Background(), f.LegacyFamily)
	if err != nil {
		t.Fatalf("ImportLegacy: %v", err)
	}
	if r.Outcome != want {
		t.Fatalf("ImportLegacy = %v, want %v", r.Outcome, want)
	}
	return r
}

// testLegacyConvert: the family's current legacy token, presented for
// rotation, becomes a token of this store of the family's session, which
// rotates on as any; the session keeps the family's user, device, login
// time and deadlines.
func testLegacyConvert(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, legacyOpt)
	ctx := context.Background()
	now := b.Clock.Now()
	fam := newLegacyFamily("alice", 3, now)
	res := fx.importLegacy(t, fam, redisstore.ImportCreated)
	listed := fx.list(t, "alice")
	cur := fam.Rows[2]
	want := redisstore.Session{ID: fam.SessionID, UserID: "alice", DeviceID: laptop.DeviceID, DeviceName: laptop.DeviceName,
		IPAddress: laptop.IPAddress, UserAgent: laptop.UserAgent, CreatedAt: fam.CreatedAt.Truncate(time.Millisecond),
		LastUsedAt: cur.CreatedAt.Truncate(time.Millisecond), ExpiresAt: cur.ExpiresAt.Truncate(time.Millisecond),
		SessionExpiresAt: res.SessionExpiresAt}
	if d := cmp.Diff([]redisstore.Session{want}, listed); d != "" {
		t.Errorf("the imported session as listed (-want +got):\n%s", d)
	}
	if got, want := res.SessionExpiresAt, fam.CreatedAt.Add(redisstore.DefaultAbsoluteTTL).Truncate(time.Millisecond); !got.Equal(want) {
		t.Errorf("absolute deadline %v, want login + AbsoluteTTL = %v", got, want)
	}

	g, err := fx.Store.Rotate(ctx, fam.current(), redisstore.Client{IPAddress: "198.51.100.4"})
	if err != nil {
		t.Fatalf("Rotate(legacy token): %v", err)
	}
	if !strings.HasPrefix(g.Token, redisstore.DefaultTokenPrefix) || g.SessionID != fam.SessionID || g.UserID != "alice" || g.Replayed ||
		!g.SessionExpiresAt.Equal(res.SessionExpiresAt) {
		t.Fatalf("conversion grant %v: want a token of this store for session %s of alice", g, fam.SessionID)
	}
	if info, err := fx.Store.Validate(ctx, g.Token); err != nil || info.SessionID != fam.SessionID {
		t.Fatalf("Validate(converted) = %+v, %v", info, err)
	}
	g2 := fx.rotate(t, g.Token)
	g3 := fx.rotate(t, g2.Token)
	if g3.SessionID != fam.SessionID {
		t.Fatalf("rotations left the session: %v", g3)
	}
	l := fx.list(t, "alice")
	if len(l) != 1 || l[0].IPAddress != "198.51.100.4" || !l[0].CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("after conversion and rotations: %+v", l)
	}
	if _, err := fx.Store.Validate(ctx, g.Token); !errors.Is(err, redisstore.ErrRevoked) {
		t.Errorf("Validate(the converted token after rotations) = %v, want rotated", err)
	}
}

// testLegacyTwoTabs: the legacy token presented again within grace (a
// second tab) gets the same successor, marked Replayed; and a retry of the
// conversion after one more rotation (a late retry) is refused as what it
// then is, a replay, only outside grace.
func testLegacyTwoTabs(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, legacyOpt)
	ctx := context.Background()
	fam := newLegacyFamily("alice", 2, b.Clock.Now())
	fx.importLegacy(t, fam, redisstore.ImportCreated)
	g1, err := fx.Store.Rotate(ctx, fam.current(), redisstore.Client{})
	if err != nil {
		t.Fatal(err)
	}
	g2, err := fx.Store.Rotate(ctx, fam.current(), redisstore.Client{})
	if err != nil {
		t.Fatalf("second tab: %v", err)
	}
	if g2.Token != g1.Token || !g2.Replayed || g1.Replayed || !g2.ExpiresAt.Equal(g1.ExpiresAt) {
		t.Fatalf("second tab got %v, want the first tab's successor (Replayed)", g2)
	}
	if ev := eventsOf(fx.TakeEvents(), redisstore.EventGraceReplay); len(ev) != 1 || ev[0].SessionID != fam.SessionID {
		t.Errorf("grace replay events %v", ev)
	}
	fx.rotate(t, g1.Token)
	if _, err := fx.Store.Rotate(ctx, fam.current(), redisstore.Client{}); !errors.Is(err, redisstore.ErrReused) {
		t.Fatalf("legacy token after its successor was rotated: %v, want ErrReused", err)
	}
}

// testLegacyRace: 64 concurrent presentations of one legacy token make one
// successor (with grace: all get it), or (grace off) one winner and no
// second successor.
func testLegacyRace(t *testing.T, b *redistest.Backend) {
	for _, grace := range []time.Duration{time.Minute, redisstore.NoGrace} {
		fx := newFixture(t, b.Isolated(t), redisstore.Options{LegacyHash: legacyHash, Grace: grace})
		fam := newLegacyFamily("alice", 1, b.Clock.Now())
		fx.importLegacy(t, fam, redisstore.ImportCreated)
		grants, errs := raceRotate(fx, fam.current(), 64)
		succ, fresh, reused := map[string]bool{}, 0, 0
		for i, err := range errs {
			switch {
			case err == nil:
				succ[grants[i].Token] = true
				if !grants[i].Replayed {
					fresh++
				}
			case errors.Is(err, redisstore.ErrReused):
				reused++
			case !errors.Is(err, redisstore.ErrRevoked):
				t.Fatalf("grace %v: rotation %d: %v", grace, i, err)
			}
		}
		if fresh != 1 || len(succ) != 1 {
			t.Fatalf("grace %v: %d successors created, %d distinct handed out; want 1 and 1", grace, fresh, len(succ))
		}
		if grace > 0 && reused > 0 {
			t.Fatalf("grace %v: %d concurrent presentations detected as reuse", grace, reused)
		}
		if grace < 0 && reused != 1 {
			t.Fatalf("grace off: %d reuse detections, want 1", reused)
		}
	}
}

// testLegacyReplay: the converted legacy token presented after grace is a
// replay: the session is revoked, the successor refused, a reuse event.
func testLegacyReplay(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, redisstore.Options{LegacyHash: legacyHash, Grace: 200 * time.Millisecond})
	ctx := context.Background()
	fam := newLegacyFamily("alice", 1, b.Clock.Now())
	fx.importLegacy(t, fam, redisstore.ImportCreated)
	g, err := fx.Store.Rotate(ctx, fam.current(), redisstore.Client{})
	if err != nil {
		t.Fatal(err)
	}
	fx.TakeEvents()
	b.Clock.Advance(300 * time.Millisecond)
	r, err := fx.Store.Rotate(ctx, fam.current(), redisstore.Client{})
	if !errors.Is(err, redisstore.ErrReused) || r.SessionID != fam.SessionID || r.UserID != "alice" || r.Token != "" {
		t.Fatalf("replay after grace: %v, %v; want ErrReused naming the session", r, err)
	}
	var re *redisstore.RevokedError
	if _, err := fx.Store.Rotate(ctx, g.Token, redisstore.Client{}); !errors.As(err, &re) || re.Reason != redisstore.ReasonReuse {
		t.Fatalf("the successor after the replay: %v, want revoked for reuse", err)
	}
	if ev := eventsOf(fx.TakeEvents(), redisstore.EventReuseDetected); len(ev) != 1 || ev[0].SessionID != fam.SessionID {
		t.Errorf("reuse events %v", ev)
	}
	if n := len(fx.list(t, "alice")); n != 0 {
		t.Errorf("%d sessions listed after the reuse", n)
	}
}

// testLegacyOlderRows: a rotated row of the family (older than the current
// one) is a replay, before the conversion and after it.
func testLegacyOlderRows(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, legacyOpt)
	ctx := context.Background()
	before := newLegacyFamily("alice", 4, b.Clock.Now())
	fx.importLegacy(t, before, redisstore.ImportCreated)
	if _, err := fx.Store.Rotate(ctx, before.tokens[1], redisstore.Client{}); !errors.Is(err, redisstore.ErrReused) {
		t.Fatalf("an older row before the conversion: %v, want ErrReused", err)
	}
	if _, err := fx.Store.Rotate(ctx, before.current(), redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) {
		t.Fatalf("the current row after its family's replay: %v, want revoked", err)
	}
	after := newLegacyFamily("alice", 3, b.Clock.Now())
	fx.importLegacy(t, after, redisstore.ImportCreated)
	g, err := fx.Store.Rotate(ctx, after.current(), redisstore.Client{})
	if err != nil {
		t.Fatal(err)
	}
	// Within grace too: only the converted token is in grace.
	if _, err := fx.Store.Rotate(ctx, after.tokens[0], redisstore.Client{}); !errors.Is(err, redisstore.ErrReused) {
		t.Fatalf("an older row after the conversion: %v, want ErrReused", err)
	}
	if _, err := fx.Store.Rotate(ctx, g.Token, redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) {
		t.Fatalf("the converted token after the replay: %v, want revoked", err)
	}
}

// testLegacyLostReply: a conversion whose reply is lost, retried by
// go-redis, returns the successor the first attempt made, with no grace
// replay and no reuse (grace off).
func testLegacyLostReply(t *testing.T, b *redistest.Backend) {
	opt := redisstore.Options{LegacyHash: legacyHash, Grace: redisstore.NoGrace}
	rule, drops := redistest.DropFirst(func(a []string) bool { return redistest.RunsScript(a, lua.Legacy) })
	st, _ := b.FaultyStore(t, opt, rule)
	fx := &fixture{Backend: b, Store: st}
	fam := newLegacyFamily("alice", 2, b.Clock.Now())
	fx.importLegacy(t, fam, redisstore.ImportCreated)
	g, err := fx.Store.Rotate(context.Background(), fam.current(), redisstore.Client{})
	if err != nil {
		t.Fatalf("conversion with a lost reply: %v", err)
	}
	if drops() != 1 || g.Replayed {
		t.Fatalf("dropped %d replies, Replayed %v", drops(), g.Replayed)
	}
	if ev := fx.TakeEvents(); len(ev) != 0 {
		t.Errorf("events of a retried conversion: %v", ev)
	}
	if _, err := fx.Store.Validate(context.Background(), g.Token); err != nil {
		t.Fatalf("the retry's successor: %v", err)
	}
}

// testLegacyRefused: tokens of families that are not imported (never,
// revoked, expired), forgeries and tokens with the store's prefix change
// nothing; with the legacy path off, a legacy token is malformed.
func testLegacyRefused(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, legacyOpt)
	ctx := context.Background()
	now := b.Clock.Now()
	live := newLegacyFamily("alice", 2, now)
	fx.importLegacy(t, live, redisstore.ImportCreated)
	revoked := newLegacyFamily("alice", 2, now)
	revoked.Revoked = true
	fx.importLegacy(t, revoked, redisstore.ImportUnchanged)
	expired := newLegacyFamily("alice", 2, now.Add(-30*24*time.Hour))
	fx.importLegacy(t, expired, redisstore.ImportExpired)
	before := b.Snapshot(t)
	for what, tok := range map[string]string{
		"revoked family": revoked.current(), "expired family": expired.current(), "never imported": "pgt_never-issued",
		"old row of a revoked family": revoked.tokens[0],
	} {
		if _, err := fx.Store.Rotate(ctx, tok, redisstore.Client{}); !errors.Is(err, redisstore.ErrUnknown) {
			t.Errorf("%s: %v, want ErrUnknown", what, err)
		}
	}
	for what, tok := range map[string]string{"prefixed garbage": redisstore.DefaultTokenPrefix + "x", "empty": "", "long": strings.Repeat("x", 4096)} {
		if _, err := fx.Store.Rotate(ctx, tok, redisstore.Client{}); !errors.Is(err, redisstore.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", what, err)
		}
	}
	if d := cmp.Diff(before, b.Snapshot(t)); d != "" {
		t.Errorf("refused tokens changed Redis (-before +after):\n%s", d)
	}
	off := newFixture(t, b, redisstore.Options{})
	if _, err := off.Store.Rotate(ctx, live.current(), redisstore.Client{}); !errors.Is(err, redisstore.ErrMalformed) {
		t.Errorf("the legacy path off: %v, want ErrMalformed", err)
	}
	if _, err := off.Store.ImportLegacy(ctx, live.LegacyFamily); !errors.Is(err, redisstore.ErrInvalidArgument) {
		t.Errorf("ImportLegacy with the legacy path off: %v, want ErrInvalidArgument", err)
	}
	if _, err := fx.Store.Rotate(ctx, live.current(), redisstore.Client{}); err != nil {
		t.Errorf("the live family after all that: %v", err)
	}
}

// testLegacyIdempotent: importing a family again changes nothing, before
// and after its conversion.
func testLegacyIdempotent(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, legacyOpt)
	fam := newLegacyFamily("alice", 3, b.Clock.Now())
	fx.importLegacy(t, fam, redisstore.ImportCreated)
	before := b.Snapshot(t)
	fx.importLegacy(t, fam, redisstore.ImportUnchanged)
	if d := cmp.Diff(before, b.Snapshot(t)); d != "" {
		t.Errorf("a second import changed Redis (-before +after):\n%s", d)
	}
	fx.rotate(t, fam.current())
	before = b.Snapshot(t)
	fx.importLegacy(t, fam, redisstore.ImportUnchanged)
	if d := cmp.Diff(before, b.Snapshot(t)); d != "" {
		t.Errorf("an import after the conversion changed Redis (-before +after):\n%s", d)
	}
}

// testLegacyDeadlines: the idle deadline is the current row's expiry; the
// absolute one the login plus AbsoluteTTL, or the row's expiry if later,
// but at most AbsoluteTTL from the import.
func testLegacyDeadlines(t *testing.T, b *redistest.Backend) {
	ctx := context.Background()
	const abs = 48 * time.Hour
	fx := newFixture(t, b, redisstore.Options{LegacyHash: legacyHash, IdleTTL: time.Hour, AbsoluteTTL: abs})
	now := b.Clock.Now().Truncate(time.Millisecond)
	for _, tc := range []struct {
		name           string
		login, expires time.Time
		want           time.Time
	}{
		{"recent login", now.Add(-time.Hour), now.Add(time.Hour), now.Add(-time.Hour + abs)},
		{"old login", now.Add(-100 * time.Hour), now.Add(time.Hour), now.Add(time.Hour)},
		{"row outlives the lifetime", now.Add(-time.Hour), now.Add(1000 * time.Hour), now.Add(abs)},
	} {
		fam := newLegacyFamily("alice", 1, now)
		fam.CreatedAt, fam.Rows[0].CreatedAt, fam.Rows[0].ExpiresAt = tc.login, tc.login, tc.expires
		res := fx.importLegacy(t, fam, redisstore.ImportCreated)
		// The last case's "now" is Redis's, a little later than ours.
		if d := res.SessionExpiresAt.Sub(tc.want); d < 0 || d > 5*time.Second {
			t.Errorf("%s: absolute deadline %v, want %v", tc.name, res.SessionExpiresAt, tc.want)
		}
	}
	// The idle deadline is the row's expiry, by Redis's clock.
	fam := newLegacyFamily("bob", 1, now)
	fam.Rows[0].ExpiresAt = now.Add(time.Second)
	fx.importLegacy(t, fam, redisstore.ImportCreated)
	b.Clock.Advance(1100 * time.Millisecond)
	if _, err := fx.Store.Rotate(ctx, fam.current(), redisstore.Client{}); !errors.Is(err, redisstore.ErrExpired) {
		t.Fatalf("past the row's expiry: %v, want ErrExpired", err)
	}
	// The converted token lives IdleTTL.
	fam = newLegacyFamily("carol", 1, now)
	fx.importLegacy(t, fam, redisstore.ImportCreated)
	g := fx.rotate(t, fam.current())
	if d := g.ExpiresAt.Sub(b.Clock.Now()); d < 59*time.Minute || d > time.Hour {
		t.Errorf("converted token's idle lifetime %v, want 1h", d)
	}
}

// testLegacyAdvance: a family rotated in the old system after its import
// (a newer row) is brought up to date by the next import: the newer row
// converts, the one before it is a replay.
func testLegacyAdvance(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, legacyOpt)
	ctx := context.Background()
	now := b.Clock.Now()
	fam := newLegacyFamily("alice", 2, now)
	fx.importLegacy(t, fam, redisstore.ImportCreated)
	fam.addRow(now.Add(-time.Minute))
	fx.importLegacy(t, fam, redisstore.ImportAdvanced)
	fx.importLegacy(t, fam, redisstore.ImportUnchanged)
	l := fx.list(t, "alice")
	if len(l) != 1 || !l[0].ExpiresAt.Equal(fam.Rows[2].ExpiresAt.Truncate(time.Millisecond)) {
		t.Fatalf("after the advance: %+v, want the newest row's expiry", l)
	}
	if _, err := fx.Store.Rotate(ctx, fam.current(), redisstore.Client{}); err != nil {
		t.Fatalf("the newest row: %v", err)
	}
	fam2 := newLegacyFamily("alice", 1, now)
	fx.importLegacy(t, fam2, redisstore.ImportCreated)
	fam2.addRow(now.Add(-time.Minute))
	fx.importLegacy(t, fam2, redisstore.ImportAdvanced)
	if _, err := fx.Store.Rotate(ctx, fam2.tokens[0], redisstore.Client{}); !errors.Is(err, redisstore.ErrReused) {
		t.Fatalf("the row the advance superseded: %v, want ErrReused", err)
	}
}

// testLegacyFork: a family converted here and rotated in the old system
// too is a replay: the next import revokes the session for reuse.
func testLegacyFork(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, legacyOpt)
	ctx := context.Background()
	now := b.Clock.Now()
	fam := newLegacyFamily("alice", 2, now)
	fx.importLegacy(t, fam, redisstore.ImportCreated)
	g := fx.rotate(t, fam.current())
	fam.addRow(now)
	fx.importLegacy(t, fam, redisstore.ImportForked)
	var re *redisstore.RevokedError
	if _, err := fx.Store.Rotate(ctx, g.Token, redisstore.Client{}); !errors.As(err, &re) || re.Reason != redisstore.ReasonReuse {
		t.Fatalf("the converted token after a fork: %v, want revoked for reuse", err)
	}
	if _, err := fx.Store.Rotate(ctx, fam.current(), redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) {
		t.Fatalf("the old system's newer row after a fork: %v, want revoked", err)
	}
	fx.importLegacy(t, fam, redisstore.ImportEnded)
}

// testLegacyRevokedInEither: a family revoked in the old system after its
// import is revoked here by the next import (converted or not); a session
// revoked here is reported ended, and never brought back.
func testLegacyRevokedInEither(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, legacyOpt)
	ctx := context.Background()
	now := b.Clock.Now()
	plain := newLegacyFamily("alice", 2, now)
	converted := newLegacyFamily("alice", 2, now)
	fx.importLegacy(t, plain, redisstore.ImportCreated)
	fx.importLegacy(t, converted, redisstore.ImportCreated)
	g := fx.rotate(t, converted.current())
	for _, fam := range []*legacyFamily{plain, converted} {
		fam.Revoked = true
		fx.importLegacy(t, fam, redisstore.ImportRevoked)
		fx.importLegacy(t, fam, redisstore.ImportUnchanged)
	}
	for what, tok := range map[string]string{"legacy": plain.current(), "converted": g.Token} {
		if _, err := fx.Store.Rotate(ctx, tok, redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) {
			t.Errorf("%s token after its family was revoked in the old system: %v", what, err)
		}
	}
	here := newLegacyFamily("alice", 2, now)
	fx.importLegacy(t, here, redisstore.ImportCreated)
	if n, err := fx.Store.RevokeSession(ctx, "alice", here.SessionID); n != 1 || err != nil {
		t.Fatalf("RevokeSession = %d, %v", n, err)
	}
	fx.importLegacy(t, here, redisstore.ImportEnded)
	if _, err := fx.Store.Rotate(ctx, here.current(), redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) {
		t.Fatalf("legacy token of a session revoked here: %v", err)
	}
	if n := len(fx.list(t, "alice")); n != 0 {
		t.Errorf("%d sessions listed, want 0", n)
	}
}

// testLegacyUserSees: imported sessions are listed, counted for the cap and
// ended by log out everywhere like any other.
func testLegacyUserSees(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, redisstore.Options{LegacyHash: legacyHash, MaxSessions: 3})
	ctx := context.Background()
	now := b.Clock.Now()
	var fams []*legacyFamily
	for i := 0; i < 3; i++ {
		fam := newLegacyFamily("alice", 2, now.Add(time.Duration(i)*time.Minute))
		fx.importLegacy(t, fam, redisstore.ImportCreated)
		fams = append(fams, fam)
	}
	if n := len(fx.list(t, "alice")); n != 3 {
		t.Fatalf("%d sessions listed, want 3", n)
	}
	// A login at the cap evicts the least recently used: the oldest import.
	fx.issue(t, "alice", laptop)
	if _, err := fx.Store.Rotate(ctx, fams[0].current(), redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) {
		t.Fatalf("the least recently used imported session after a login at the cap: %v", err)
	}
	fx.rotate(t, fams[1].current())
	n, err := fx.Store.RevokeAll(ctx, "alice", "")
	if n != 3 || err != nil {
		t.Fatalf("RevokeAll = %d, %v; want 3 (two imported, one login)", n, err)
	}
	if _, err := fx.Store.Rotate(ctx, fams[2].current(), redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) {
		t.Fatalf("an imported session after log out everywhere: %v", err)
	}
}

// testLegacyRevokeToken: RevokeToken takes a legacy token too.
func testLegacyRevokeToken(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, legacyOpt)
	ctx := context.Background()
	fam := newLegacyFamily("alice", 2, b.Clock.Now())
	fx.importLegacy(t, fam, redisstore.ImportCreated)
	if n, err := fx.Store.RevokeToken(ctx, fam.tokens[0]); n != 1 || err != nil {
		t.Fatalf("RevokeToken(an older legacy row) = %d, %v; want 1", n, err)
	}
	if _, err := fx.Store.Rotate(ctx, fam.current(), redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) {
		t.Fatalf("after RevokeToken: %v", err)
	}
	if n, err := fx.Store.RevokeToken(ctx, "pgt_unknown"); n != 0 || !errors.Is(err, redisstore.ErrUnknown) {
		t.Fatalf("RevokeToken(unknown legacy) = %d, %v", n, err)
	}
}

// testLegacyKeys: every key has a TTL no later than the absolute deadline,
// and Redis holds neither a legacy token nor the digest the old table
// holds, in any spelling.
func testLegacyKeys(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, legacyOpt)
	ctx := context.Background()
	fam := newLegacyFamily("alice", 3, b.Clock.Now())
	res := fx.importLegacy(t, fam, redisstore.ImportCreated)
	fx.rotate(t, fam.current())
	keys, err := b.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The 3 rows' lookup entries sit in 3 of 65,536 buckets (or fewer,
	// once in 20,000 runs).
	if len(keys) < 2+1 || len(keys) > 2+3 {
		t.Errorf("%d keys, want a session, an index and up to 3 lookup hashes: %v", len(keys), keys)
	}
	for _, k := range keys {
		ttl, err := fx.Client.PTTL(ctx, k).Result()
		if err != nil || ttl <= 0 || b.Clock.Now().Add(ttl).After(res.SessionExpiresAt.Add(time.Second)) {
			t.Errorf("key %s: TTL %v (%v), want one up to the absolute deadline", k, ttl, err)
		}
	}
	blob := keyspaceText(t, b)
	for i, tok := range fam.tokens {
		dg := legacyHash(tok)
		for what, needle := range map[string]string{"token": tok, "token body": tok[4:], "digest": string(dg[:12]),
			"digest (hex)": hex.EncodeToString(dg)[:16], "digest (base64)": base64.StdEncoding.EncodeToString(dg)[:16],
			"digest (base64url)": base64.RawURLEncoding.EncodeToString(dg)[:16]} {
			if strings.Contains(blob, needle) {
				t.Errorf("Redis holds the %s of legacy row %d", what, i)
			}
		}
	}
}

// testLegacyScriptCacheLoss: after SCRIPT FLUSH, the import (import.lua and
// its lookup entries' lookup.lua, sent in a pipeline) and the conversion
// heal the cache.
func testLegacyScriptCacheLoss(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, legacyOpt)
	fam := newLegacyFamily("alice", 3, b.Clock.Now())
	flushScripts(t, b)
	fx.importLegacy(t, fam, redisstore.ImportCreated)
	flushScripts(t, b)
	fx.rotate(t, fam.current())
}

// testLegacyClientBinding: a family imported for a client (LegacyFamily's
// Client.ClientID) is bound to it, through an advance and the conversion;
// one imported without is bound to none.
func testLegacyClientBinding(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, legacyOpt)
	ctx := context.Background()
	now := b.Clock.Now()
	bound := newLegacyFamily("alice", 1, now)
	bound.Client.ClientID = "web-app"
	fx.importLegacy(t, bound, redisstore.ImportCreated)
	bound.addRow(now.Add(-time.Minute))
	fx.importLegacy(t, bound, redisstore.ImportAdvanced)
	if _, err := fx.Store.Rotate(ctx, bound.current(), redisstore.Client{ClientID: "other-app"}); !errors.Is(err, redisstore.ErrWrongClient) {
		t.Fatalf("another client: %v, want ErrWrongClient", err)
	}
	g, err := fx.Store.Rotate(ctx, bound.current(), redisstore.Client{ClientID: "web-app"})
	if err != nil || g.ClientID != "web-app" {
		t.Fatalf("its client: %v, %v", g, err)
	}
	if _, err := fx.Store.Rotate(ctx, g.Token, redisstore.Client{ClientID: "other-app"}); !errors.Is(err, redisstore.ErrWrongClient) {
		t.Fatalf("the converted token, another client: %v, want ErrWrongClient", err)
	}
	open := newLegacyFamily("alice", 1, now)
	fx.importLegacy(t, open, redisstore.ImportCreated)
	if g, err := fx.Store.Rotate(ctx, open.current(), redisstore.Client{ClientID: "any-app"}); err != nil || g.ClientID != "" {
		t.Fatalf("an unbound family: %v, %v", g, err)
	}
}

// testLegacyKeyBinding: a conversion with BindJKT binds the session to the
// caller's DPoP key (RFC 9449 section 5, a public client's refresh); the
// legacy token presented again without the key, or with another, is
// refused and revokes nothing (as rotate.lua refuses a bound session's
// tokens); with the key, outside grace, it is a replay.
func testLegacyKeyBinding(t *testing.T, b *redistest.Backend) {
	fx := newFixture(t, b, redisstore.Options{LegacyHash: legacyHash, Grace: 200 * time.Millisecond})
	ctx := context.Background()
	key := jkt("the client's key")
	fam := newLegacyFamily("alice", 2, b.Clock.Now())
	fx.importLegacy(t, fam, redisstore.ImportCreated)
	g, err := fx.Store.Rotate(ctx, fam.current(), redisstore.Client{JKT: key, BindJKT: true})
	if err != nil || g.JKT != key {
		t.Fatalf("conversion with BindJKT: %v, %v", g, err)
	}
	if tab, err := fx.Store.Rotate(ctx, fam.current(), redisstore.Client{JKT: key}); err != nil || tab.Token != g.Token {
		t.Fatalf("second tab with the key: %v, %v", tab, err)
	}
	b.Clock.Advance(300 * time.Millisecond)
	for what, c := range map[string]redisstore.Client{"without the key": {}, "with another key": {JKT: jkt("thief key")}} {
		want := map[string]error{"without the key": redisstore.ErrKeyRequired, "with another key": redisstore.ErrWrongKey}[what]
		if _, err := fx.Store.Rotate(ctx, fam.current(), c); !errors.Is(err, want) {
			t.Fatalf("legacy token %s: %v, want %v", what, err, want)
		}
		if _, err := fx.Store.Rotate(ctx, fam.tokens[0], c); !errors.Is(err, want) {
			t.Fatalf("an older row %s: %v, want %v", what, err, want)
		}
	}
	if info, err := fx.Store.Validate(ctx, g.Token); err != nil || !info.KeyBound {
		t.Fatalf("the session after refusals: %+v, %v; want alive and bound", info, err)
	}
	if _, err := fx.Store.Rotate(ctx, fam.current(), redisstore.Client{JKT: key}); !errors.Is(err, redisstore.ErrReused) {
		t.Fatalf("the legacy token with the key after grace: %v, want ErrReused", err)
	}
}

// testLegacyDamaged: an imported session whose hash was damaged by hand is
// answered by the conversion with ErrCorrupt and an EventCorrupt, never a
// raw script error, and nothing is written.
func testLegacyDamaged(t *testing.T, b *redistest.Backend) {
	for name, damage := range map[string]func(h map[string]string) (string, *string){
		"s deleted":   func(map[string]string) (string, *string) { return "s", nil },
		"s garbage":   func(map[string]string) (string, *string) { return "s", ptr("garbage") },
		"h truncated": func(h map[string]string) (string, *string) { return "h", ptr(h["h"][:12]) },
		"h binding overflow": func(h map[string]string) (string, *string) {
			return "h", ptr(h["h"][:16] + "\x02\x40ab")
		},
		"x garbage": func(map[string]string) (string, *string) { return "x", ptr("soon") },
	} {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			b := b.Isolated(t)
			fx := newFixture(t, b, legacyOpt)
			ctx := context.Background()
			fam := newLegacyFamily("alice", 2, b.Clock.Now())
			fx.importLegacy(t, fam, redisstore.ImportCreated)
			damageSession(t, b, sessionKeyOf(t, b, fam.SessionID), damage)
			fx.TakeEvents()
			before := fx.Snapshot(t)
			_, err := fx.Store.Rotate(ctx, fam.current(), redisstore.Client{})
			wantErr(t, "Rotate(legacy token) of a damaged session", err, redisstore.ErrCorrupt)
			if d := cmp.Diff(before, fx.Snapshot(t)); d != "" {
				t.Errorf("the refused conversion changed Redis (-before +after):\n%s", d)
			}
			n := 0
			for _, e := range fx.TakeEvents() {
				if e.Kind == redisstore.EventCorrupt && e.SessionID == fam.SessionID {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%d EventCorrupt for the session, want 1", n)
			}
		})
	}
}
