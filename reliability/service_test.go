package reliability_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/internal/servicetest"
)

// The service-level scenarios build cmd/sessioncache once and drive the
// binary over HTTP against redis-server processes of their own.

// service is a running cmd/sessioncache.
type service struct {
	URL    string
	APIKey string
	env    map[string]string
	proc   *servicetest.Process // the current run
	logs   *servicetest.Buffer  // every run's output
	http   *http.Client

	scanned atomic.Bool
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// startService runs the service on redisAddr with env added to a
// configuration of its own (API key, secret, key prefix), and waits until
// it listens. When the test ends the service is stopped, and its log and
// its /metrics are scanned for every token the suite saw and for its API
// key.
func startService(t testing.TB, redisAddr string, env map[string]string) *service {
	t.Helper()
	s := &service{APIKey: randomHex(32), logs: &servicetest.Buffer{},
		http: &http.Client{Timeout: 10 * time.Second}}
	s.env = map[string]string{
		"SESSIONCACHE_LISTEN": "127.0.0.1:0",
		// A fleet, and one instance across restarts on another port, share
		// one issuer: access tokens name it.
		"SESSIONCACHE_ISSUER":     "https://sessioncache.reliability.test",
		"SESSIONCACHE_REDIS_URL":  "redis://" + redisAddr + "/0",
		"SESSIONCACHE_API_KEY":    s.APIKey,
		"SESSIONCACHE_SECRET":     randomHex(32),
		"SESSIONCACHE_KEY_PREFIX": redistest.NewPrefix(),
	}
	for k, v := range env {
		s.env[k] = v
	}
	s.start(t)
	return s
}

// scan stops the service and checks, once, what it leaked: its log and
// its /metrics (scraped first, if it still runs) must hold no token
// material and not the API key, and it must not have panicked.
func (s *service) scan(t testing.TB) {
	if !s.scanned.CompareAndSwap(false, true) {
		return
	}
	metrics := ""
	if s.alive() {
		if r, err := s.http.Get("http://" + s.proc.MetricsAddr + "/metrics"); err == nil {
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			metrics = string(b)
		}
	}
	s.kill()
	ns := needles()
	for what, text := range map[string]string{"log": s.logs.String(), "metrics": metrics} {
		scannedBytes.Add(int64(len(text)))
		if found := leaks([]byte(text), ns); len(found) > 0 {
			t.Errorf("service %s holds token material: %v", what, found)
		}
		if strings.Contains(text, s.APIKey) {
			t.Errorf("service %s holds the API key", what)
		}
	}
	if strings.Contains(s.logs.String(), "panic") {
		t.Errorf("the service panicked:\n%s", s.logs)
	}
}

// start runs the binary (again, after an exit) with s's environment, its
// output appended to s.logs, and waits until it listens.
func (s *service) start(t testing.TB) {
	t.Helper()
	cmd, _ := servicetest.Command(t, s.env)
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	s.proc = servicetest.Start(t, cmd, s.logs)
	s.URL = "http://" + s.proc.Addr
	// Registered after Start's own cleanup (which kills the process), so
	// it runs first, while the latest run still answers /metrics.
	t.Cleanup(func() { s.scan(t) })
}

func (s *service) alive() bool { return s.proc.Alive() }

func (s *service) kill() { s.proc.Kill() }

// status GETs path and returns the status code (0 on a transport error).
func (s *service) status(path string) int {
	r, err := s.http.Get(s.URL + path)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return r.StatusCode
}

// call sends a JSON request with the API key and decodes a JSON answer.
func (s *service) call(ctx context.Context, method, path string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.APIKey)
	r, err := s.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer r.Body.Close()
	var out map[string]any
	json.NewDecoder(r.Body).Decode(&out)
	if tok, ok := out["refresh_token"].(string); ok {
		remember(tok)
	}
	if tok, ok := out["access_token"].(string); ok {
		remember(tok)
	}
	return r.StatusCode, out, nil
}

// clientID is the OAuth client the suite logs in as: any id will do while
// the service has no clients file.
const clientID = "reliability"

func (s *service) waitReady(t testing.TB) {
	t.Helper()
	waitFor(t, "/readyz 200", 30*time.Second, func() bool { return s.status("/readyz") == 200 })
}

// login issues a session through the service and returns its refresh
// token.
func (s *service) login(t testing.TB, user string) string {
	t.Helper()
	return s.loginGrant(t, user)["refresh_token"].(string)
}

// loginGrant issues a session through the service and returns the whole
// answer: the refresh token, the access token, the session.
func (s *service) loginGrant(t testing.TB, user string) map[string]any {
	t.Helper()
	code, out, err := s.call(context.Background(), "POST", "/v1/sessions", map[string]any{"user_id": user, "client_id": clientID})
	if err != nil || code != 201 {
		t.Fatalf("login: %d %v %v", code, out, err)
	}
	if _, ok := out["access_token"].(string); !ok {
		t.Fatalf("login: no access token in %v", out)
	}
	return out
}

// forwardAuth asks /v1/auth, as a gateway does, about an access token, and
// returns the status and the user it names (0 on a transport error).
func (s *service) forwardAuth(ctx context.Context, access string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/v1/auth", nil)
	if err != nil {
		return 0, ""
	}
	req.Header.Set("Authorization", "Bearer "+access)
	req.Header.Set("X-Sessioncache-Key", s.APIKey)
	r, err := s.http.Do(req)
	if err != nil {
		return 0, ""
	}
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return r.StatusCode, r.Header.Get("X-Auth-User-Id")
}

func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
