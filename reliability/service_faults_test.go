package reliability_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestServiceStalledRedis stops Redis with SIGSTOP under a running
// service: API calls must answer 503 within SESSIONCACHE_REDIS_TIMEOUT
// (plus slack), /readyz must turn 503, /healthz must stay 200; after
// SIGCONT /readyz is 200 again and the token presented during the stall
// still works (a rotation Redis ran late is answered from the grace
// window).
func TestServiceStalledRedis(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	const timeout = 300 * time.Millisecond
	svc := startService(t, srv.Addr, map[string]string{"SESSIONCACHE_REDIS_TIMEOUT": timeout.String()})
	svc.waitReady(t)
	tok := svc.login(t, newUUID())

	srv.Pause(t)
	t0 := time.Now()
	var mu sync.Mutex
	var worst time.Duration
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			var code int
			switch i % 3 {
			case 0:
				code, _, _ = svc.call(context.Background(), "POST", "/v1/tokens/rotate", map[string]any{"refresh_token": tok})
			case 1:
				code, _, _ = svc.call(context.Background(), "POST", "/v1/tokens/introspect", map[string]any{"refresh_token": tok})
			default:
				code, _, _ = svc.call(context.Background(), "POST", "/v1/sessions", map[string]any{"user_id": newUUID(), "client_id": clientID})
			}
			d := time.Since(start)
			mu.Lock()
			statuses[code]++
			worst = max(worst, d)
			mu.Unlock()
		}()
	}
	wg.Wait()
	var notReady time.Duration
	waitFor(t, "/readyz 503 during the stall", 10*time.Second, func() bool {
		notReady = time.Since(t0)
		return svc.status("/readyz") == 503
	})
	var liveWorst time.Duration
	for i := 0; i < 10; i++ {
		start := time.Now()
		if c := svc.status("/healthz"); c != 200 {
			t.Errorf("/healthz during the stall: %d", c)
		}
		liveWorst = max(liveWorst, time.Since(start))
	}
	srv.Resume(t)
	t1 := time.Now()
	svc.waitReady(t)
	ready := time.Since(t1)
	code, out, err := svc.call(context.Background(), "POST", "/v1/tokens/rotate", map[string]any{"refresh_token": tok})
	figure(t, "service_stall", "requests", 20, "status_503", statuses[503], "max_latency", ms(worst), "timeout", ms(timeout),
		"readyz_503_after", ms(notReady), "healthz_max_latency", ms(liveWorst), "ready_again_after_sigcont", ms(ready),
		"token_after_stall", code)
	if statuses[503] != 20 {
		t.Errorf("statuses during the stall: %v, want 20 x 503", statuses)
	}
	if worst > timeout+700*time.Millisecond {
		t.Errorf("a request took %v during the stall (timeout %v)", worst, timeout)
	}
	if err != nil || code != 200 {
		t.Errorf("rotation after the stall: %d %v %v", code, out, err)
	}
}

// TestServiceEvictingPolicy: the service does not become ready on a Redis
// whose maxmemory-policy may evict, unless told to.
func TestServiceEvictingPolicy(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--maxmemory-policy", "allkeys-lru")
	svc := startService(t, srv.Addr, nil)
	var body string
	waitFor(t, "the service to report its readiness", 10*time.Second, func() bool { return svc.status("/healthz") == 200 })
	// Give readiness every chance: it must stay 503.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if c := svc.status("/readyz"); c != 503 {
			t.Fatalf("/readyz on allkeys-lru: %d", c)
		}
	}
	if r, err := svc.http.Get(svc.URL + "/readyz"); err == nil {
		b := make([]byte, 512)
		n, _ := r.Body.Read(b)
		body = string(b[:n])
		r.Body.Close()
	}
	allowed := startService(t, srv.Addr, map[string]string{"SESSIONCACHE_ALLOW_EVICTING_POLICY": "true"})
	allowed.waitReady(t)
	figure(t, "service_evicting_policy", "readyz", 503, "with_override", 200)
	if !strings.Contains(body, "noeviction") && !strings.Contains(body, "policy") {
		t.Errorf("/readyz body does not say why: %q", body)
	}
}

// TestServiceSIGTERMUnderLoad sends SIGTERM to the service while clients
// rotate tokens as fast as they can, over keep-alive connections. Every
// rotation the service accepted must be answered: a request whose
// connection broke is checked after a restart, and may not have rotated
// the token (that would be a rotation run but lost on the way back). The
// process must exit 0, and every client's session must still work after
// the restart, its access token from before accepted by forward auth.
func TestServiceSIGTERMUnderLoad(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	svc := startService(t, srv.Addr, map[string]string{
		"SESSIONCACHE_SHUTDOWN_DELAY":   "300ms",
		"SESSIONCACHE_SHUTDOWN_TIMEOUT": "10s",
	})
	svc.waitReady(t)
	const clients = 16
	toks := make([]string, clients)
	broken := make([]string, clients) // token presented in a request whose connection broke
	brokenErr := make([]string, clients)
	// The access token of each login: the service signs them with keys
	// derived from its secret, so that the next run accepts them too.
	access, users := make([]string, clients), make([]string, clients)
	for i := range toks {
		users[i] = newUUID()
		g := svc.loginGrant(t, users[i])
		toks[i], access[i] = g["refresh_token"].(string), g["access_token"].(string)
	}
	var ok, refused, brokenN, other, afterTerm atomic.Int64
	var term atomic.Bool
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for svc.alive() {
				code, out, err := svc.call(context.Background(), "POST", "/v1/tokens/rotate", map[string]any{"refresh_token": toks[i]})
				switch {
				case err == nil && code == 200:
					toks[i] = out["refresh_token"].(string)
					ok.Add(1)
					if term.Load() {
						afterTerm.Add(1)
					}
				case err != nil && errors.Is(err, syscall.ECONNREFUSED):
					refused.Add(1)
					time.Sleep(5 * time.Millisecond)
				case err != nil:
					// Stop here, so that the token shows after the restart
					// whether the service ran this rotation.
					brokenN.Add(1)
					broken[i] = toks[i]
					brokenErr[i] = err.Error()
					return
				default:
					other.Add(1)
				}
			}
		}()
	}
	waitFor(t, "load before SIGTERM", 30*time.Second, func() bool { return ok.Load() > 500 })
	t0 := time.Now()
	term.Store(true)
	svc.proc.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-svc.proc.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the service did not exit within 30s of SIGTERM")
	}
	exited := time.Since(t0)
	wg.Wait()
	exitErr := svc.proc.Err()

	// Restart on the same Redis and secret, then check every session.
	svc.start(t)
	svc.waitReady(t)
	lostInFlight, alive, authOK := 0, 0, 0
	for i := range toks {
		if code, user := svc.forwardAuth(context.Background(), access[i]); code == 200 && user == users[i] {
			authOK++
		} else {
			t.Errorf("client %d: the access token from before the restart at /v1/auth: %d naming %q, want 200 naming %s", i, code, user, users[i])
		}
		if broken[i] != "" {
			// The broken request's token is still the client's token: did
			// the service rotate it without answering?
			_, out, err := svc.call(context.Background(), "POST", "/v1/tokens/introspect", map[string]any{"refresh_token": toks[i]})
			if err == nil && out["active"] == false {
				lostInFlight++
				t.Logf("client %d: rotated without an answer: %s", i, brokenErr[i])
			}
		}
		code, _, err := svc.call(context.Background(), "POST", "/v1/tokens/rotate", map[string]any{"refresh_token": toks[i]})
		if err == nil && code == 200 {
			alive++
		}
	}
	figure(t, "service_sigterm", "rotations_ok", ok.Load(), "served_after_sigterm", afterTerm.Load(), "refused_after_close", refused.Load(),
		"broken_connections", brokenN.Load(), "rotated_but_unanswered", lostInFlight, "other_status", other.Load(),
		"exit_after", ms(exited), "exit_error", exitErr, "sessions_alive", alive, "access_tokens_accepted_after_restart", authOK)
	if exitErr != nil {
		t.Errorf("exit after SIGTERM: %v", exitErr)
	}
	if alive != clients {
		t.Errorf("%d of %d sessions work after the restart", alive, clients)
	}
	if afterTerm.Load() == 0 {
		t.Error("no rotation was served after SIGTERM: the drain was not under load")
	}
	if lostInFlight != 0 {
		// Seen in about one full run in five: drain() calls
		// SetKeepAlivesEnabled(false) at SIGTERM, which closes idle
		// connections at once while traffic still flows; a connection that
		// has just read a request is still "idle" (golang/go#65802), so the
		// request runs and its answer is lost. Grace lets the client recover
		// (sessions_alive above), but the rotation was in flight and lost.
		t.Fatalf("%d rotations ran without an answer during the SIGTERM drain", lostInFlight)
	}
}
