package reliability_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// TestStalledRedis stops redis-server with SIGSTOP: it keeps its sockets
// and accepts connections, but answers nothing. Every store call with a
// 200ms deadline must return an error within the deadline (plus slack),
// on a client with ContextTimeoutEnabled as the README asks for. With
// go-redis's defaults the socket ignores the context and a call waits for
// ReadTimeout (3s) or longer: measured, as the reason for that setting. After
// SIGCONT the store serves again at once.
func TestStalledRedis(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	const deadline = 200 * time.Millisecond
	slack := 400 * time.Millisecond // a busy 2-core CI machine with the race detector
	clients := []struct {
		name  string
		opt   *redis.Options
		bound time.Duration
	}{
		{"ContextTimeoutEnabled", &redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true}, deadline + slack},
		// ReadTimeout (3s), and for calls queued behind a stuck pool also
		// PoolTimeout (ReadTimeout+1s), measured at about 5s.
		{"go-redis defaults", &redis.Options{Addr: srv.Addr}, 10 * time.Second},
	}
	type subject struct {
		name  string
		bound time.Duration
		st    store
		toks  []string
	}
	ctx := bg(t)
	var subjects []subject
	for _, cl := range clients {
		c := redis.NewClient(cl.opt)
		t.Cleanup(func() { c.Close() })
		st := wrap(t, c, redisstore.Options{KeyPrefix: redistest.NewPrefix()})
		if err := st.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		s := subject{name: cl.name, bound: cl.bound, st: st}
		for i := 0; i < 10; i++ {
			g, err := st.Issue(ctx, fmt.Sprintf("stall-%d", i), redisstore.Client{})
			if err != nil {
				t.Fatal(err)
			}
			s.toks = append(s.toks, g.Token)
		}
		subjects = append(subjects, s)
	}
	calls := map[string]func(ctx context.Context, st store, tok string) error{
		"Issue": func(ctx context.Context, st store, _ string) error {
			_, err := st.Issue(ctx, "stall-new", redisstore.Client{})
			return err
		},
		"Rotate": func(ctx context.Context, st store, tok string) error {
			_, err := st.Rotate(ctx, tok, redisstore.Client{})
			return err
		},
		"Validate": func(ctx context.Context, st store, tok string) error {
			_, err := st.Validate(ctx, tok)
			return err
		},
		"RevokeToken": func(ctx context.Context, st store, tok string) error {
			_, err := st.RevokeToken(ctx, tok)
			return err
		},
		"ListSessions": func(ctx context.Context, st store, _ string) error {
			_, err := st.ListSessions(ctx, "stall-1", redisstore.ListOptions{})
			return err
		},
		"RevokeAll": func(ctx context.Context, st store, _ string) error {
			_, err := st.RevokeAll(ctx, "stall-2", "")
			return err
		},
		"Ping": func(ctx context.Context, st store, _ string) error { return st.Ping(ctx) },
		"CheckEvictionPolicy": func(ctx context.Context, st store, _ string) error {
			return st.CheckEvictionPolicy(ctx)
		},
	}

	srv.Pause(t)
	type result struct {
		subject, call string
		took          time.Duration
		err           error
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	for _, s := range subjects {
		for name, call := range calls {
			for i := 0; i < 5; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), deadline)
					defer cancel()
					start := time.Now()
					err := call(ctx, s.st, s.toks[i])
					r := result{subject: s.name, call: name, took: time.Since(start), err: err}
					mu.Lock()
					results = append(results, r)
					mu.Unlock()
				}()
			}
		}
	}
	wg.Wait()
	srv.Resume(t)
	resumed := time.Now()

	for _, s := range subjects {
		var worst time.Duration
		var classes counter
		n := 0
		for _, r := range results {
			if r.subject != s.name {
				continue
			}
			n++
			classes.add(errClass(r.err), 1)
			if r.took > worst {
				worst = r.took
			}
			if r.err == nil {
				t.Errorf("%s: %s succeeded on a stopped server", s.name, r.call)
			}
			if r.took > s.bound {
				t.Errorf("%s: %s took %v, want at most %v", s.name, r.call, r.took, s.bound)
			}
		}
		// After SIGCONT: how long until a rotation succeeds.
		var recovered time.Duration
		waitFor(t, "a call after SIGCONT", 10*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := s.st.Validate(ctx, s.toks[9])
			recovered = time.Since(resumed)
			return err == nil
		})
		figure(t, "stall/"+s.name, "calls", n, "deadline", ms(deadline), "max_latency", ms(worst),
			"errors", n-classes.get("ok"), "first_ok_after_sigcont", ms(recovered))
		t.Logf("%s: %v", s.name, &classes)
	}
}
