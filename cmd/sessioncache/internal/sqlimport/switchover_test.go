package sqlimport

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// TestSwitchOver (issue 21, item 3): while both systems run, the import
// follows the table (Config.Follow) and the revocation feed, and no
// revocation of either system is lost in the other: the old system's
// revoke_family and password reset, sessioncache's logout, log out
// everywhere and reuse detection, a token rotated in both systems, and
// revocations made while the follower was down. Rotations and logins in
// the old system during the window reach sessioncache too: no honest
// client is logged out.
func TestSwitchOver(t *testing.T) {
	pool := pgPool(t)
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		ctx := context.Background()
		o := newOldSystem(t, pool)
		st := legacyStore(t, b, redisstore.Options{Grace: 100 * time.Millisecond})
		const ttl = 7 * 24 * time.Hour
		users := make([]uuid.UUID, 8)
		var fams []*oldFamily
		for i := range users {
			users[i] = uuid.New()
			for j := 0; j < 4; j++ {
				f, err := o.login(ctx, users[i], ttl)
				if err != nil {
					t.Fatal(err)
				}
				fams = append(fams, f)
			}
		}
		w := startFollower(t, o, st, b)
		w.caughtUp(t, o)

		// 1. The old system still serves: it rotates, logs in, revokes.
		rotated, revoked := fams[0:4], fams[4:6]
		for _, f := range rotated {
			if err := o.rotate(ctx, f, ttl); err != nil {
				t.Fatal(err)
			}
		}
		fresh, err := o.login(ctx, users[0], ttl)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range revoked {
			if err := o.revokeFamily(ctx, f.id); err != nil {
				t.Fatal(err)
			}
		}
		if err := o.revokeUser(ctx, users[7]); err != nil { // a password reset: fams[28:32]
			t.Fatal(err)
		}
		w.caughtUp(t, o)
		var converted []redisstore.Grant
		for _, f := range join(rotated, []*oldFamily{fresh}) {
			g, err := st.Rotate(ctx, f.current(), redisstore.Client{})
			if err != nil {
				t.Fatalf("a token the old system issued during the window: %v", err)
			}
			converted = append(converted, g)
		}
		if _, err := st.Rotate(ctx, rotated[0].tokens[0], redisstore.Client{}); !errors.Is(err, redisstore.ErrReused) {
			t.Fatalf("the row the old system rotated during the window: %v, want ErrReused", err)
		}
		lost := 0
		for _, f := range join(revoked, fams[28:32]) {
			if _, err := st.Rotate(ctx, f.current(), redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) && !errors.Is(err, redisstore.ErrUnknown) {
				t.Errorf("family %s revoked in the old system: sessioncache says %v", f.id, err)
				lost++
			}
		}

		// 2. Both run: sessioncache rotates; the old system still revokes.
		more := fams[8:16]
		for _, f := range more {
			g, err := st.Rotate(ctx, f.current(), redisstore.Client{})
			if err != nil {
				t.Fatal(err)
			}
			converted = append(converted, g)
		}
		// The old system revokes a converted family and an unconverted one.
		if err := o.revokeFamily(ctx, more[0].id); err != nil {
			t.Fatal(err)
		}
		if err := o.revokeFamily(ctx, fams[16].id); err != nil {
			t.Fatal(err)
		}
		// sessioncache revokes: a logout, log out everywhere (users[5]:
		// fams[20:24]), a replay after grace, and a fork (the old system
		// rotates a token sessioncache converted).
		if n, err := st.RevokeSession(ctx, more[1].user.String(), more[1].id.String()); n != 1 || err != nil {
			t.Fatalf("RevokeSession = %d, %v", n, err)
		}
		if _, err := st.RevokeAll(ctx, users[5].String(), ""); err != nil {
			t.Fatal(err)
		}
		b.Clock.Advance(150 * time.Millisecond)
		if _, err := st.Rotate(ctx, more[2].current(), redisstore.Client{}); !errors.Is(err, redisstore.ErrReused) {
			t.Fatalf("replay after grace: %v", err)
		}
		if err := o.rotate(ctx, more[3], ttl); err != nil {
			t.Fatalf("the old system rotating a converted token: %v", err)
		}
		w.caughtUp(t, o)
		mustRefuse := map[string]string{
			"converted, then revoked in the old system": converted[5].Token,
			"forked":                    converted[8].Token,
			"revoked in the old system": fams[16].current(),
		}
		for what, tok := range mustRefuse {
			if _, err := st.Rotate(ctx, tok, redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) {
				t.Errorf("%s: sessioncache says %v", what, err)
				lost++
			}
		}
		for _, f := range join(more[1:4], fams[20:24]) {
			if !w.revokedInTable(t, o, f.id) {
				t.Errorf("family %s revoked in sessioncache is live in the table", f.id)
				lost++
			}
		}

		// 3. The follower is down while both systems revoke; started
		// again, it finds both.
		w.stop()
		if err := o.revokeFamily(ctx, fams[17].id); err != nil {
			t.Fatal(err)
		}
		if n, err := st.RevokeSession(ctx, fams[18].user.String(), fams[18].id.String()); n != 1 || err != nil {
			t.Fatalf("RevokeSession = %d, %v", n, err)
		}
		w = startFollower(t, o, st, b)
		w.caughtUp(t, o)
		if _, err := st.Rotate(ctx, fams[17].current(), redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) {
			t.Errorf("revoked in the old system while the follower was down: sessioncache says %v", err)
			lost++
		}
		if !w.revokedInTable(t, o, fams[18].id) {
			t.Errorf("revoked in sessioncache while the follower was down: live in the table")
			lost++
		}
		if lost > 0 {
			t.Fatalf("%d revocations lost in the window", lost)
		}

		// No honest client was logged out: every family nobody revoked
		// still rotates.
		gone := map[*oldFamily]bool{}
		for _, f := range join(revoked, fams[16:19], fams[20:24], fams[28:32], more[:4]) {
			gone[f] = true
		}
		n := 0
		for i, f := range join(fams, []*oldFamily{fresh}) {
			if gone[f] || i < 4 || (i >= 8 && i < 16) || f == fresh {
				continue // converted above (their tokens rotate on below) or revoked
			}
			if _, err := st.Rotate(ctx, f.current(), redisstore.Client{}); err != nil {
				t.Errorf("honest family %d: %v", i, err)
			}
			n++
		}
		for i, g := range converted {
			if i == 0 || i == 5 || i == 6 || i == 7 || i == 8 {
				continue // rotated[0] (its older row was replayed) and more[0:4]: revoked above
			}
			if _, err := st.Rotate(ctx, g.Token, redisstore.Client{}); err != nil {
				t.Errorf("honest converted session %d: %v", i, err)
			}
			n++
		}
		t.Logf("%s: 0 revocations lost (9 families revoked in the old system, 8 in sessioncache, one of them a fork); %d honest sessions rotate on", b.Kind, n)
	})
}

// TestSwitchOverStorm: revocations in both systems at once, from 16
// goroutines, while sessioncache rotates the other families and the
// follower runs: every family revoked in either system is refused by
// sessioncache and revoked in the table, and no other family is.
func TestSwitchOverStorm(t *testing.T) {
	pool := pgPool(t)
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		ctx := context.Background()
		o := newOldSystem(t, pool)
		st := legacyStore(t, b, redisstore.Options{})
		const n, ttl = 240, 7 * 24 * time.Hour
		fams := make([]*oldFamily, n)
		for i := range fams {
			f, err := o.login(ctx, uuid.New(), ttl)
			if err != nil {
				t.Fatal(err)
			}
			fams[i] = f
		}
		w := startFollower(t, o, st, b)
		w.caughtUp(t, o)
		// Family i: i%3 == 0 revoked in the old system, 1 revoked in
		// sessioncache (after its conversion for odd i/3), 2 honest.
		grants := make([]redisstore.Grant, n)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; i < n; i += 16 {
					f := fams[i]
					var err error
					switch i % 3 {
					case 0:
						err = o.revokeFamily(ctx, f.id)
					case 1:
						if (i/3)%2 == 1 {
							if _, err = st.Rotate(ctx, f.current(), redisstore.Client{}); err != nil {
								break
							}
						}
						_, err = st.RevokeSession(ctx, f.user.String(), f.id.String())
					case 2:
						grants[i], err = st.Rotate(ctx, f.current(), redisstore.Client{})
					}
					if err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		w.caughtUp(t, o)
		lost, honest := 0, 0
		for i, f := range fams {
			switch i % 3 {
			case 0, 1:
				if _, err := st.Rotate(ctx, f.current(), redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) && !errors.Is(err, redisstore.ErrUnknown) {
					t.Errorf("family %d revoked in %s: sessioncache says %v", i, []string{"the old system", "sessioncache"}[i%3], err)
					lost++
				}
				if !w.revokedInTable(t, o, f.id) {
					t.Errorf("family %d revoked in %s: live in the table", i, []string{"the old system", "sessioncache"}[i%3])
					lost++
				}
			case 2:
				if _, err := st.Rotate(ctx, grants[i].Token, redisstore.Client{}); err != nil {
					t.Errorf("honest family %d: %v", i, err)
				}
				if gone, _ := o.familyRevoked(ctx, f.id); gone {
					t.Errorf("honest family %d revoked in the table", i)
				}
				honest++
			}
		}
		if lost > 0 {
			t.Fatalf("%d revocations lost", lost)
		}
		t.Logf("%s: %d revocations in each system at once, 0 lost; %d honest families untouched", b.Kind, n/3, honest)
	})
}

// join returns the families of every list, in a new slice.
func join(lists ...[]*oldFamily) []*oldFamily {
	var out []*oldFamily
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// follower runs an Importer with Follow in the background, and tells from
// its log when it has caught up.
type follower struct {
	mu     sync.Mutex
	asOf   time.Time // the latest "caught up"
	cancel context.CancelFunc
	done   chan struct{}
}

func startFollower(t *testing.T, o *oldSystem, st *redistest.Store, b *redistest.Backend) *follower {
	t.Helper()
	w := &follower{done: make(chan struct{})}
	cfg := o.config()
	cfg.Follow, cfg.Overlap = 20*time.Millisecond, time.Second
	cfg.Log = slog.New(&caughtUpLog{w: w})
	im := newImporter(t, o, st, b, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		defer close(w.done)
		im.Run(ctx)
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *follower) stop() {
	w.cancel()
	<-w.done
}

// caughtUp waits until the follower reports it has caught up with
// everything the table holds now.
func (w *follower) caughtUp(t *testing.T, o *oldSystem) {
	t.Helper()
	var now time.Time
	if err := o.pool.QueryRow(context.Background(), "SELECT now()").Scan(&now); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		w.mu.Lock()
		ok := w.asOf.After(now)
		w.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower did not catch up with %v in 30s", now)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// revokedInTable waits, up to a deadline, until every row of the family is
// revoked in the table.
func (w *follower) revokedInTable(t *testing.T, o *oldSystem, family uuid.UUID) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		done, err := o.familyRevoked(context.Background(), family)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// caughtUpLog records the follower's "caught up" lines.
type caughtUpLog struct{ w *follower }

func (h *caughtUpLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *caughtUpLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "caught up" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "as_of" {
			if at, err := time.Parse(time.RFC3339Nano, a.Value.String()); err == nil {
				h.w.mu.Lock()
				h.w.asOf = at
				h.w.mu.Unlock()
			}
		}
		return true
	})
	return nil
}
func (h *caughtUpLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *caughtUpLog) WithGroup(string) slog.Handler      { return h }
