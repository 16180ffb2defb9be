package sessionauth

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/redisstore"
)

// fakeStore is Redis as Check asks it: sessions live unless revoked.
type fakeStore struct {
	mu      sync.Mutex
	revoked map[string]string
	calls   int
	during  func() // runs inside a call, before it answers
	err     error
}

func (f *fakeStore) check(_ context.Context, _, sid string) error {
	f.mu.Lock()
	f.calls++
	during, err, reason := f.during, f.err, f.revoked[sid]
	f.mu.Unlock()
	if during != nil {
		during()
	}
	switch {
	case err != nil:
		return err
	case reason == "gone":
		return redisstore.ErrUnknown
	case reason != "":
		return &redisstore.RevokedError{Reason: redisstore.Reason(reason)}
	}
	return nil
}

func (f *fakeStore) revoke(sid, reason string) {
	f.mu.Lock()
	f.revoked[sid] = reason
	f.mu.Unlock()
}

func (f *fakeStore) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func setup(t *testing.T) (*Gate, *fakeStore, *clock) {
	t.Helper()
	st := &fakeStore{revoked: map[string]string{}}
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	g := New(Config{Check: st.check, Lease: time.Second, Now: clk.Now})
	return g, st, clk
}

const sid1, sid2 = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"

func (g *Gate) mustLive(t *testing.T, sid string, want Source, exp time.Time) {
	t.Helper()
	src, err := g.Check(context.Background(), "alice", sid, exp)
	if err != nil || src != want {
		t.Fatalf("Check(%s) = %v, %v; want live from %v", sid, src, err, want)
	}
}

func (g *Gate) mustEnd(t *testing.T, sid, reason string, want Source, exp time.Time) {
	t.Helper()
	src, err := g.Check(context.Background(), "alice", sid, exp)
	var ee *EndedError
	if !errors.As(err, &ee) || ee.Reason != reason || src != want || !errors.Is(err, ErrEnded) {
		t.Fatalf("Check(%s) = %v, %v; want ended (%s) from %v", sid, src, err, reason, want)
	}
}

// TestMemoryOnlyWhileTheFeedIsWhole: nothing is answered from memory before
// the feed is subscribed and synced, after it is lost, or once the lease of
// the last synced notice has run out; a session seen live in an earlier
// epoch is asked again.
func TestMemoryOnlyWhileTheFeedIsWhole(t *testing.T) {
	g, st, clk := setup(t)
	exp := clk.Now().Add(5 * time.Minute)
	g.mustLive(t, sid1, Redis, exp)
	g.mustLive(t, sid1, Redis, exp)
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSubscribed})
	g.mustLive(t, sid1, Redis, exp) // subscribed, not synced yet: Redis, remembered
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSynced, Time: clk.Now()})
	g.mustLive(t, sid1, Memory, exp)
	g.mustLive(t, sid1, Memory, exp)
	if n := st.callCount(); n != 3 {
		t.Fatalf("Redis asked %d times, want 3", n)
	}
	clk.add(1100 * time.Millisecond) // past the lease
	g.mustLive(t, sid1, Redis, exp)
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSynced, Time: clk.Now()})
	g.mustLive(t, sid1, Memory, exp)
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeLost, Err: errors.New("gone")})
	g.mustLive(t, sid1, Redis, exp)
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSynced, Time: clk.Now()}) // ignored while lost
	g.mustLive(t, sid1, Redis, exp)
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSubscribed})
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSynced, Time: clk.Now()})
	g.mustLive(t, sid1, Redis, exp) // the new epoch asks again
	g.mustLive(t, sid1, Memory, exp)
	if !g.Trusted() {
		t.Fatal("Trusted() = false with a whole, synced feed")
	}
}

// TestRevocationNotice: a revoked session is refused from memory at once,
// with its reason; other sessions are not affected.
func TestRevocationNotice(t *testing.T) {
	g, st, clk := setup(t)
	exp := clk.Now().Add(5 * time.Minute)
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSubscribed})
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSynced, Time: clk.Now()})
	g.mustLive(t, sid1, Redis, exp)
	g.mustLive(t, sid2, Redis, exp)
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeRevoked, Reason: redisstore.ReasonReuse, SessionIDs: []string{sid1}})
	calls := st.callCount()
	g.mustEnd(t, sid1, "reuse", Memory, exp)
	g.mustLive(t, sid2, Memory, exp)
	if st.callCount() != calls {
		t.Fatal("a revoked session was asked of Redis")
	}
	// Lost and back: still refused (it ended for good).
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeLost})
	g.mustEnd(t, sid1, "reuse", Memory, exp)
}

// TestEndedFromRedis: Redis's refusals are remembered; a Redis failure is
// an error, not a refusal, and is not remembered.
func TestEndedFromRedis(t *testing.T) {
	g, st, clk := setup(t)
	exp := clk.Now().Add(5 * time.Minute)
	st.revoke(sid1, "logout")
	st.revoke(sid2, "gone")
	g.mustEnd(t, sid1, "logout", Redis, exp)
	g.mustEnd(t, sid1, "logout", Memory, exp)
	g.mustEnd(t, sid2, "unknown", Redis, exp)
	st.mu.Lock()
	st.err = errors.New("connection refused")
	st.mu.Unlock()
	const sid3 = "00000000-0000-4000-8000-000000000003"
	if _, err := g.Check(context.Background(), "alice", sid3, exp); err == nil || errors.Is(err, ErrEnded) {
		t.Fatalf("Check with Redis down = %v, want Redis's error", err)
	}
	st.mu.Lock()
	st.err = nil
	st.mu.Unlock()
	g.mustLive(t, sid3, Redis, exp)
}

// TestRevocationDuringTheRead: a revocation notice that arrives while Redis
// is asked wins over the read's "live"; so does a feed that is lost and
// subscribed again meanwhile.
func TestRevocationDuringTheRead(t *testing.T) {
	g, st, clk := setup(t)
	exp := clk.Now().Add(5 * time.Minute)
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSubscribed})
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSynced, Time: clk.Now()})
	st.during = func() {
		g.Notice(redisstore.Notice{Kind: redisstore.NoticeRevoked, Reason: redisstore.ReasonLogout, SessionIDs: []string{sid1}})
	}
	g.mustLive(t, sid1, Redis, exp) // the read began before the revocation
	st.during = nil
	g.mustEnd(t, sid1, "logout", Memory, exp)

	st.during = func() {
		g.Notice(redisstore.Notice{Kind: redisstore.NoticeLost})
		g.Notice(redisstore.Notice{Kind: redisstore.NoticeSubscribed})
		g.Notice(redisstore.Notice{Kind: redisstore.NoticeSynced, Time: clk.Now()})
	}
	g.mustLive(t, sid2, Redis, exp)
	st.during = nil
	g.mustLive(t, sid2, Redis, exp) // not remembered from the earlier epoch
	g.mustLive(t, sid2, Memory, exp)
}

// TestBoundedAndSwept: past MaxSessions, new sessions are answered from
// Redis; Sweep forgets sessions whose credentials expired.
func TestBoundedAndSwept(t *testing.T) {
	st := &fakeStore{revoked: map[string]string{}}
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	g := New(Config{Check: st.check, Lease: time.Second, MaxSessions: 1, Now: clk.Now})
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSubscribed})
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSynced, Time: clk.Now()})
	soon, later := clk.Now().Add(time.Minute), clk.Now().Add(time.Hour)
	g.mustLive(t, sid1, Redis, soon)
	g.mustLive(t, sid1, Memory, soon)
	g.mustLive(t, sid2, Redis, later)
	g.mustLive(t, sid2, Redis, later) // no room
	if s := g.Stats(); s.Sessions != 1 {
		t.Fatalf("%d sessions remembered, want 1", s.Sessions)
	}
	clk.add(2 * time.Minute)
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSynced, Time: clk.Now()})
	g.Sweep()
	if s := g.Stats(); s.Sessions != 0 {
		t.Fatalf("after the sweep: %d sessions remembered, want 0", s.Sessions)
	}
	g.mustLive(t, sid2, Redis, later)
	g.mustLive(t, sid2, Memory, later)
}

// TestConcurrentChecks runs checks, notices and sweeps at once (for the race
// detector) and checks that a session revoked before any check began is
// never answered live.
func TestConcurrentChecks(t *testing.T) {
	g, st, clk := setup(t)
	exp := clk.Now().Add(time.Hour)
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSubscribed})
	st.revoke(sid2, "logout")
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeRevoked, Reason: "logout", SessionIDs: []string{sid2}})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 500 {
				if i == 0 && j%50 == 0 {
					g.Notice(redisstore.Notice{Kind: redisstore.NoticeSynced, Time: clk.Now()})
					g.Sweep()
				}
				if _, err := g.Check(context.Background(), "alice", sid1, exp); err != nil {
					t.Errorf("live session: %v", err)
					return
				}
				if _, err := g.Check(context.Background(), "alice", sid2, exp); !errors.Is(err, ErrEnded) {
					t.Errorf("revoked session: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestSaw: a login or a rotation that succeeded makes its session known
// live, with no Redis command for its first check, unless the feed was not
// whole or reported any revocation while the call ran.
func TestSaw(t *testing.T) {
	g, st, clk := setup(t)
	exp := clk.Now().Add(5 * time.Minute)
	m := g.Begin()
	g.Saw(sid1, exp, m) // the feed is not subscribed yet
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSubscribed})
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSynced, Time: clk.Now()})
	g.mustLive(t, sid1, Redis, exp)

	m = g.Begin()
	g.Saw(sid2, exp, m)
	g.mustLive(t, sid2, Memory, exp)

	const sid3, sid4 = "00000000-0000-4000-8000-000000000003", "00000000-0000-4000-8000-000000000004"
	m = g.Begin()
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeRevoked, Reason: "logout", SessionIDs: []string{sid4}})
	g.Saw(sid3, exp, m) // a revocation while the call ran: maybe sid3's
	calls := st.callCount()
	g.mustLive(t, sid3, Redis, exp)
	if st.callCount() != calls+1 {
		t.Fatal("sid3 was not asked of Redis")
	}
	m = g.Begin()
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeLost})
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSubscribed})
	g.Notice(redisstore.Notice{Kind: redisstore.NoticeSynced, Time: clk.Now()})
	g.Saw(sid4, exp, m) // the feed broke while the call ran
	st.revoke(sid4, "logout")
	g.mustEnd(t, sid4, "logout", Redis, exp)
}

// BenchmarkMemoryPerSession reports the heap a remembered session costs
// (the sizing of SESSIONCACHE_AUTH_MEMORY_SESSIONS):
//
//	go test -run '^$' -bench MemoryPerSession ./cmd/sessioncache/internal/sessionauth/
func BenchmarkMemoryPerSession(b *testing.B) {
	const n = 100_000
	var perSession float64
	for b.Loop() {
		st := &fakeStore{revoked: map[string]string{}}
		g := New(Config{Check: st.check, MaxSessions: n})
		g.Notice(redisstore.Notice{Kind: redisstore.NoticeSubscribed})
		g.Notice(redisstore.Notice{Kind: redisstore.NoticeSynced, Time: time.Now()})
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
		}
		exp := time.Now().Add(time.Hour)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for _, id := range ids {
			// The id is the token's, decoded per token: its copy is the
			// session's cost too.
			g.Saw(strings.Clone(id), exp, g.Begin())
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perSession = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(g)
		runtime.KeepAlive(ids)
	}
	b.ReportMetric(perSession, "B/session")
}
