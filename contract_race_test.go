package sessioncache_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// testRaceGrace: of 64 concurrent rotations of one token with grace on,
// exactly one creates a successor and the other 63 get that successor as
// grace replays.
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
		if _, err := f.Store.Validate(context.Background(), tok); err != nil {
			t.Fatalf("the successor: %v", err)
		}
	}
}

// testRaceNoGrace: of 64 concurrent rotations of one token with grace off,
// exactly one wins, one detects reuse and revokes the session, and the other
// 62 find it revoked.
func testRaceNoGrace(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{Grace: redisstore.NoGrace})
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
	_, err := f.Store.Validate(context.Background(), winner)
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
			grants[i], errs[i] = f.Store.Rotate(context.Background(), tok, redisstore.Client{})
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	return grants, errs
}

// testConcurrentLogins: concurrent logins of one user past the cap all
// succeed, the cap holds, and each login past it evicts exactly one session.
func testConcurrentLogins(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{MaxSessions: 5})
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := f.Store.Issue(ctx, "alice", laptop); err != nil {
				t.Errorf("Issue: %v", err)
			}
		}()
	}
	wg.Wait()
	if l := f.list(t, "alice"); len(l) != 5 {
		t.Fatalf("after 32 concurrent logins with cap 5: %d sessions", len(l))
	}
	evicted := 0
	for _, e := range f.TakeEvents() {
		if e.Kind == redisstore.EventSessionEvicted {
			evicted++
		}
	}
	if evicted != 27 {
		t.Errorf("evictions = %d, want 27", evicted)
	}
	if n, err := f.Store.RevokeAll(ctx, "alice", ""); n != 5 || err != nil {
		t.Fatalf("RevokeAll = %d, %v; want 5", n, err)
	}
}

// testCappedLoginStorm: 64 callers log one user in at the cap, again and
// again. No login fails (the bar was ErrContention in under 1% of calls;
// logins no longer give up at all), the cap holds once they are done, and
// every login past the cap evicted exactly one session.
func testCappedLoginStorm(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{MaxSessions: 10})
	ctx := context.Background()
	const callers, each = 64, 20
	var failed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < each; j++ {
				if _, err := f.Store.Issue(ctx, "alice", laptop); err != nil {
					failed.Add(1)
					t.Errorf("Issue: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	total := int64(callers * each)
	evicted := 0
	for _, e := range f.TakeEvents() {
		if e.Kind == redisstore.EventSessionEvicted {
			evicted++
		}
	}
	l := f.list(t, "alice")
	t.Logf("%s: %d capped logins (cap 10) by %d concurrent callers: %d failed; %d evictions; %d sessions left", b.Kind, total, callers, failed.Load(), evicted, len(l))
	if len(l) != 10 || int64(evicted) != total-failed.Load()-10 {
		t.Fatalf("after the storm: %d sessions (want 10), %d evicted (want %d)", len(l), evicted, total-failed.Load()-10)
	}
}

// testRevokeAllUnderLogins: "log out everywhere" while an attacker holding
// the password logs in as fast as 16 loops can. RevokeAll succeeds on its
// first call every time, and every session whose login had returned before
// it was called is refused once it returns.
func testRevokeAllUnderLogins(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var issued []redisstore.Grant
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				g, err := f.Store.Issue(ctx, "victim", redisstore.Client{DeviceName: "attacker"})
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("attacker login: %v", err)
					}
					return
				}
				mu.Lock()
				issued = append(issued, g)
				mu.Unlock()
			}
		}()
	}
	checked, revokedTotal := 0, 0
	for round := 0; round < 20; round++ {
		// Wait for the attacker to have logged in a few more times.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			mu.Lock()
			n := len(issued)
			mu.Unlock()
			if n >= checked+20 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the login loops stalled at %d logins", round, n)
			}
		}
		mu.Lock()
		before := append([]redisstore.Grant(nil), issued[checked:]...)
		mu.Unlock()
		n, err := f.Store.RevokeAll(context.Background(), "victim", "")
		if err != nil {
			t.Fatalf("round %d: RevokeAll failed on its first call: %v", round, err)
		}
		revokedTotal += n
		// Every session whose login had returned: none is listed any more,
		// and the newest of them (the likeliest to slip through) and a
		// spread of older ones are refused.
		live := map[string]bool{}
		for _, s := range f.list(t, "victim") {
			live[s.ID] = true
		}
		for i, g := range before {
			if live[g.SessionID] {
				t.Fatalf("round %d: session %s, logged in before RevokeAll, still listed after it", round, g.SessionID)
			}
			if i%max(len(before)/8, 1) != 0 && i < len(before)-8 {
				continue
			}
			if _, err := f.Store.Validate(context.Background(), g.Token); !errors.Is(err, redisstore.ErrRevoked) {
				t.Fatalf("round %d: a session that existed before RevokeAll: Validate = %v, want revoked", round, err)
			}
		}
		checked += len(before)
	}
	cancel()
	wg.Wait()
	t.Logf("%s: 20 of 20 RevokeAll calls succeeded first time under 16 login loops; %d sessions revoked, %d pre-existing ones checked refused", b.Kind, revokedTotal, checked)
}
