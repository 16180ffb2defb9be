package main

// Handler tests that need what miniredis lacks: INFO (the eviction policy)
// and WAIT (replica acknowledgement).

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

func withEvictionCheck() envOption {
	return func(s *envSetup) { s.server.checkEvict = true }
}

// privateRedis starts a redis-server of this test's own with extra
// arguments, also listening on a Unix socket (the service's unix:// URLs).
func privateRedis(t *testing.T, args ...string) (srv *redistest.Server, socket string, client redis.UniversalClient) {
	t.Helper()
	socket = filepath.Join(t.TempDir(), "redis.sock")
	srv = redistest.StartServer(t, append([]string{"--unixsocket", socket}, args...)...)
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: socket})
	t.Cleanup(func() { c.Close() })
	return srv, socket, c
}

// On a real Redis the service is ready only if the Redis never evicts.
func TestReadinessChecksEvictionPolicy(t *testing.T) {
	safe := newTestEnvOn(t, redistest.For(t, redistest.Real), withEvictionCheck())
	safe.must(http.StatusOK, "GET", "/readyz", "")

	_, _, lru := privateRedis(t, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
	b := &redistest.Backend{Kind: redistest.Real, Client: lru, Prefix: redistest.NewPrefix()}
	unsafe := newTestEnvOn(t, b, withEvictionCheck())
	if r := unsafe.do("GET", "/readyz", ""); r.status != http.StatusServiceUnavailable || r.str("reason") != "unsafe_eviction_policy" {
		t.Errorf("/readyz on allkeys-lru: %d %s, want 503 unsafe_eviction_policy", r.status, r.raw)
	}
	if logs := unsafe.logs.String(); !strings.Contains(logs, envAllowEvicting) {
		t.Errorf("the log does not say how to override: %s", logs)
	}
	// SESSIONCACHE_ALLOW_EVICTING_POLICY=true turns the check off.
	allowed := newTestEnvOn(t, b)
	allowed.must(http.StatusOK, "GET", "/readyz", "")
}

// A Redis that accepts connections but answers nothing (stopped with
// SIGSTOP) gets a 503 within SESSIONCACHE_REDIS_TIMEOUT, not a hung request.
func TestStalledRedis(t *testing.T) {
	srv, sock, _ := privateRedis(t)
	// The client the service itself makes for this URL.
	opts, err := parseRedis(modeStandalone, "unix://"+sock, "")
	if err != nil {
		t.Fatal(err)
	}
	be, err := openRedis(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(be.Close)
	c := be.client
	b := &redistest.Backend{Kind: redistest.Real, Client: c, Prefix: redistest.NewPrefix()}
	e := newTestEnvOn(t, b, func(s *envSetup) { s.server.redisTimeout = 200 * time.Millisecond })
	tok := e.login(alice, "laptop").str("refresh_token")
	srv.Pause(t)
	defer srv.Resume(t)
	for _, path := range []string{"/v1/tokens/rotate", "/v1/tokens/introspect"} {
		start := time.Now()
		r := e.do("POST", path, refreshBody(tok))
		if took := time.Since(start); r.status != http.StatusServiceUnavailable || took > 2*time.Second {
			t.Errorf("%s on a stalled Redis: %d %s after %v, want 503 within about 200ms", path, r.status, r.raw, took)
		}
	}
}

// With revocation replicas asked for and none there, a revocation answers
// 503, yet it is applied.
func TestRevocationNotReplicated(t *testing.T) {
	e := newTestEnvOn(t, redistest.For(t, redistest.Real), withStoreOptions(func(o *redisstore.Options) {
		o.RevocationReplicas = 1
		o.ReplicationTimeout = 20 * time.Millisecond
	}))
	g := e.login(alice, "laptop")
	r := e.do("DELETE", "/v1/users/"+alice+"/sessions/"+g.str("session_id"), "")
	if r.status != http.StatusServiceUnavailable || r.str("error") != "unavailable" {
		t.Fatalf("revocation without replicas: %d %s, want 503", r.status, r.raw)
	}
	if r := e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(g.str("refresh_token"))); r.body["active"] != false {
		t.Errorf("the session is still active after the unacknowledged revocation")
	}
	if m := e.scrape(); !strings.Contains(m, `sessioncache_requests_total{operation="revoke_session",outcome="not_replicated"} 1`) {
		t.Errorf("/metrics does not count the unacknowledged revocation")
	}
}
