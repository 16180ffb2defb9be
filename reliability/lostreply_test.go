package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// faultOnce returns a proxy rule that hurts the first attempt of every
// other distinct rotation (told apart by the presented token's hash, the
// first 16 bytes of ARGV[1]), and lets every retry through.
func faultOnce(f redistest.Fault) func(args []string) redistest.Fault {
	var mu sync.Mutex
	seen := make(map[string]bool)
	return func(args []string) redistest.Fault {
		// EVALSHA sha 2 KEYS[1] KEYS[2] ARGV[1] ...
		if !isRotate(args) || len(args) < 6 || len(args[5]) < 16 {
			return redistest.Pass
		}
		h := args[5][:16]
		mu.Lock()
		defer mu.Unlock()
		if seen[h] {
			return redistest.Pass
		}
		seen[h] = true
		if h[0]&1 == 0 {
			return redistest.Pass
		}
		return f
	}
}

// TestLostReplyRetry: a proxy between the store and Redis loses the reply
// of a rotation that Redis ran (the connection closed or reset), or cuts
// the connection half way through the command (Redis never ran it).
// go-redis, with its default settings (MaxRetries 3), retries on a new
// connection. The retry must get the same successor (from the grace window
// when Redis had run the first attempt), the session must live on, and no
// reuse may be reported. With grace off, the same fault revokes the
// session: the control that shows the test can fail.
func TestLostReplyRetry(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	cases := []struct {
		name       string
		fault      redistest.Fault
		grace      bool
		ranInRedis bool // the faulted attempt ran in Redis
	}{
		{"DropReply", redistest.DropReply, true, true},
		{"ResetReply", redistest.ResetReply, true, true},
		{"ResetRequest", redistest.ResetRequest, true, false},
		{"DropReplyGraceOff", redistest.DropReply, false, true},
	}
	workers, chains := 8, pick(6, 50)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := redistest.StartProxy(t, srv.Addr, redistest.ProxyConfig{})
			c := redis.NewClient(&redis.Options{Addr: p.Addr}) // go-redis defaults: MaxRetries 3
			t.Cleanup(func() { c.Close() })
			var reuseEvents atomic.Int64
			opt := redisstore.Options{KeyPrefix: redistest.NewPrefix(), OnEvent: func(_ context.Context, e redisstore.Event) {
				if e.Kind == redisstore.EventReuseDetected {
					reuseEvents.Add(1)
				}
			}}
			if !tc.grace {
				opt.Grace = -1
			}
			st := wrap(t, c, opt)
			ctx := bg(t)
			if err := st.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			p.SetRule(faultOnce(tc.fault))

			var n counter
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < chains; i++ {
						g, err := st.Issue(ctx, fmt.Sprintf("user-%d-%d", w, i), redisstore.Client{})
						if err != nil {
							n.add("issue_error", 1)
							continue
						}
						n.add("sessions", 1)
						for r := 0; r < 8; r++ {
							prev := g.Token
							n.add("rotations", 1)
							g, err = st.Rotate(ctx, prev, redisstore.Client{})
							if err != nil {
								n.add("rotate_"+errClass(err), 1)
								break
							}
							if g.Replayed {
								n.add("replayed", 1)
							}
							// The successor is the session's current token, and
							// the presented one is now rotated.
							if _, err := st.Validate(ctx, g.Token); err != nil {
								n.add("successor_invalid", 1)
								break
							}
							if _, err := st.Validate(ctx, prev); !errors.Is(err, redisstore.ErrRevoked) {
								n.add("predecessor_still_valid", 1)
							}
							n.add("same_successor", 1)
						}
						if _, err := st.Validate(ctx, g.Token); err == nil {
							n.add("sessions_alive", 1)
						}
					}
				}()
			}
			wg.Wait()
			ps := p.Stats()
			faulted := ps.Dropped + ps.ResetRequest
			figure(t, "lost_reply/"+tc.name, "rotations", n.get("rotations"), "faulted", faulted,
				"replies_dropped", ps.Dropped, "requests_cut", ps.ResetRequest,
				"same_successor", n.get("same_successor"), "replayed", n.get("replayed"),
				"reuse_errors", n.get("rotate_reused"), "reuse_events", reuseEvents.Load(),
				"errors_surfaced", n.get("rotations")-n.get("same_successor")-n.get("rotate_reused"),
				"sessions", n.get("sessions"), "sessions_alive", n.get("sessions_alive"))
			t.Logf("outcomes: %v", &n)
			if faulted == 0 {
				t.Fatal("the proxy faulted no rotation")
			}
			if !tc.grace {
				// Control: every faulted rotation whose reply was lost is
				// seen as a replay, and its session is revoked.
				if got := n.get("rotate_reused"); int64(got) != faulted {
					t.Errorf("grace off: %d rotations reported reuse, want %d (one per lost reply)", got, faulted)
				}
				return
			}
			if n.get("rotations") != n.get("same_successor") {
				t.Errorf("%d rotations, %d got the same successor; outcomes %v", n.get("rotations"), n.get("same_successor"), &n)
			}
			if n.get("sessions") != n.get("sessions_alive") {
				t.Errorf("%d sessions, %d alive", n.get("sessions"), n.get("sessions_alive"))
			}
			if r := reuseEvents.Load(); r != 0 {
				t.Errorf("%d reuse events", r)
			}
			wantReplayed := int64(0)
			if tc.ranInRedis {
				wantReplayed = faulted
			}
			if got := int64(n.get("replayed")); got != wantReplayed {
				t.Errorf("%d rotations answered from the grace window, want %d", got, wantReplayed)
			}
		})
	}
}

// dropFirst returns a proxy rule that drops the reply of the first command
// that match selects.
func dropFirst(match func(args []string) bool) func(args []string) redistest.Fault {
	var done atomic.Bool
	return func(args []string) redistest.Fault {
		if match(args) && done.CompareAndSwap(false, true) {
			return redistest.DropReply
		}
		return redistest.Pass
	}
}

// TestLostReplyIssue: the reply of a login is lost after Redis created the
// session, and go-redis runs issue.lua again. The caller must get a working
// token, and the user must not be left with a session nobody holds.
func TestLostReplyIssue(t *testing.T) {
	srv := startServer(t)
	p := redistest.StartProxy(t, srv.Addr, redistest.ProxyConfig{})
	c := redis.NewClient(&redis.Options{Addr: p.Addr})
	t.Cleanup(func() { c.Close() })
	st := wrap(t, c, redisstore.Options{KeyPrefix: redistest.NewPrefix()})
	ctx := bg(t)
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	p.SetRule(dropFirst(isIssue))
	g, err := st.Issue(ctx, "alice", redisstore.Client{DeviceID: "phone"})
	l, lerr := st.ListSessions(ctx, "alice")
	if lerr != nil {
		t.Fatal(lerr)
	}
	figure(t, "lost_reply/Issue", "replies_dropped", p.Stats().Dropped, "issue_error", err != nil, "sessions_listed", len(l))
	if p.Stats().Dropped != 1 {
		t.Fatalf("dropped %d replies, want 1", p.Stats().Dropped)
	}
	if err != nil {
		t.Fatalf("Issue retried by go-redis after a lost reply fails (%v) and leaves %d session(s) that no client holds", err, len(l))
	}
	if _, err := st.Validate(ctx, g.Token); err != nil || len(l) != 1 {
		t.Errorf("after a lost reply: Validate = %v, %d sessions listed; want a valid token and 1 session", err, len(l))
	}
}

// TestLostReplyRevoke: the reply of a logout is lost after Redis revoked
// the session, and go-redis runs revoke.lua again. The session must be
// revoked; the count the caller gets should still be 1.
func TestLostReplyRevoke(t *testing.T) {
	srv := startServer(t)
	p := redistest.StartProxy(t, srv.Addr, redistest.ProxyConfig{})
	c := redis.NewClient(&redis.Options{Addr: p.Addr})
	t.Cleanup(func() { c.Close() })
	st := wrap(t, c, redisstore.Options{KeyPrefix: redistest.NewPrefix()})
	ctx := bg(t)
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	g, err := st.Issue(ctx, "bob", redisstore.Client{})
	if err != nil {
		t.Fatal(err)
	}
	p.SetRule(dropFirst(isRevoke))
	n, err := st.RevokeToken(ctx, g.Token)
	_, verr := st.Validate(ctx, g.Token)
	figure(t, "lost_reply/RevokeToken", "replies_dropped", p.Stats().Dropped, "revoked_count", n, "error", err != nil,
		"session_revoked", errors.Is(verr, redisstore.ErrRevoked))
	if p.Stats().Dropped != 1 {
		t.Fatalf("dropped %d replies, want 1", p.Stats().Dropped)
	}
	if err != nil || !errors.Is(verr, redisstore.ErrRevoked) {
		t.Fatalf("RevokeToken after a lost reply: %v; Validate after it: %v", err, verr)
	}
	if n != 1 {
		t.Fatalf("RevokeToken retried by go-redis after a lost reply reports %d sessions revoked, though this call revoked one", n)
	}
}

// TestRetryAfterConcurrentRotation: client A's rotation runs in Redis but
// its reply is lost; before go-redis's retry arrives, tab B presents the
// same token (grace: it gets the successor) and rotates that successor. A's
// retry now presents the grandparent of the current token. It is the same
// request, not a theft, and must not revoke the session.
func TestRetryAfterConcurrentRotation(t *testing.T) {
	srv := startServer(t)
	p := redistest.StartProxy(t, srv.Addr, redistest.ProxyConfig{})
	ca := redis.NewClient(&redis.Options{Addr: p.Addr})
	cb := srv.Client(t)
	t.Cleanup(func() { ca.Close() })
	opt := redisstore.Options{KeyPrefix: redistest.NewPrefix()}
	a, b := wrap(t, ca, opt), wrap(t, cb, opt)
	ctx := bg(t)
	if err := a.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	g0, err := b.Issue(ctx, "carol", redisstore.Client{})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var seen atomic.Int64
	p.SetRule(func(args []string) redistest.Fault {
		if !isRotate(args) {
			return redistest.Pass
		}
		if seen.Add(1) == 1 {
			return redistest.DropReply
		}
		<-release // hold the retry until tab B has rotated twice
		return redistest.Pass
	})
	type res struct {
		g   redisstore.Grant
		err error
	}
	done := make(chan res, 1)
	go func() {
		g, err := a.Rotate(ctx, g0.Token, redisstore.Client{})
		done <- res{g, err}
	}()
	waitFor(t, "the first attempt to run", 10*time.Second, func() bool { return p.Stats().Dropped == 1 })
	g1, err := b.Rotate(ctx, g0.Token, redisstore.Client{})
	if err != nil || !g1.Replayed {
		t.Fatalf("tab B, same token: %v (replayed %v)", err, g1.Replayed)
	}
	g2, err := b.Rotate(ctx, g1.Token, redisstore.Client{})
	if err != nil {
		t.Fatalf("tab B, successor: %v", err)
	}
	close(release)
	r := <-done
	_, verr := b.Validate(ctx, g2.Token)
	figure(t, "lost_reply/RetryAfterConcurrentRotation", "retry_outcome", errClass(r.err), "session_alive", verr == nil)
	if errors.Is(r.err, redisstore.ErrReused) || verr != nil {
		t.Fatalf("a go-redis retry that arrives after another tab rotated twice revokes the session: retry %v, current token %v", r.err, verr)
	}
}
