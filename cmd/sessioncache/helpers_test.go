package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/accesstoken"
	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/internal/servicetest"
	"github.com/sessioncache/sessioncache/redisstore"
)

var testSecret = []byte("handler-test-secret-0123456789abcdef")

const (
	alice = "0b9a0f4e-8e4b-4d1f-9a53-0f1c2d3e4f50"
	bob   = "5f1e2d3c-4b5a-4968-8776-655443322110"
)

// apiClient talks to a running service over HTTP. Every response it sees
// is checked against openapi.yaml.
type apiClient struct {
	t      *testing.T
	base   string
	apiKey string
	http   *http.Client
	// metricsBase is the URL of the service's operations listener
	// (SESSIONCACHE_METRICS_LISTEN), which serves /metrics and
	// /openapi.yaml; "": unknown.
	metricsBase string
}

// scrape GETs /metrics from the operations listener.
func (e *apiClient) scrape() string {
	e.t.Helper()
	if e.metricsBase == "" {
		e.t.Fatal("scrape: the client knows no metrics listener")
	}
	r := (&apiClient{t: e.t, base: e.metricsBase, http: e.http}).send("GET", "/metrics", "", nil)
	if r.status != http.StatusOK {
		e.t.Fatalf("GET %s/metrics: %d %s", e.metricsBase, r.status, r.raw)
	}
	return r.raw
}

func newAPIClient(t *testing.T, base, apiKey string) *apiClient {
	return &apiClient{t: t, base: base, apiKey: apiKey, http: &http.Client{Transport: newOpenAPICheck(t, http.DefaultTransport)}}
}

// testEnv is the service's handler on a miniredis, behind a real HTTP
// server, with its logs captured.
type testEnv struct {
	*apiClient
	b       *redistest.Backend
	srv     *server
	logs    *syncBuffer
	metrics *metrics
}

// envSetup is what options of newTestEnv may change.
type envSetup struct {
	t      *testing.T
	b      *redistest.Backend
	server serverConfig
	store  redisstore.Options
	rdb    redis.UniversalClient
	noFeed bool // no revocation feed: every forward auth asks Redis
	// dpopNoncePeriod turns DPoP server nonces on.
	dpopNoncePeriod time.Duration
}

type envOption func(*envSetup)

func withAPIKey(key string) envOption {
	return func(s *envSetup) { s.server.apiKeys = [][]byte{[]byte(key)} }
}

// withoutAccessLog turns the per-request log off, as the service's default
// is (the test environment logs every request, for the tests that read
// the log).
func withoutAccessLog() envOption {
	return func(s *envSetup) { s.server.accessLog = false }
}

func withStoreOptions(f func(*redisstore.Options)) envOption {
	return func(s *envSetup) { f(&s.store) }
}

// withFastFailingRedis makes Redis calls fail at once when Redis is down,
// instead of retrying.
func withFastFailingRedis() envOption {
	return func(s *envSetup) {
		c := redis.NewClient(&redis.Options{Addr: s.b.Mini.Addr(), MaxRetries: -1, DialerRetries: 1, DialerRetryTimeout: time.Millisecond})
		s.t.Cleanup(func() { c.Close() })
		s.rdb = c
	}
}

func newTestEnv(t *testing.T, opts ...envOption) *testEnv {
	t.Helper()
	return newTestEnvOn(t, redistest.For(t, redistest.Mini), opts...)
}

// newTestEnvOn is newTestEnv on the given backend.
func newTestEnvOn(t *testing.T, b *redistest.Backend, opts ...envOption) *testEnv {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	set := envSetup{
		t:      t,
		b:      b,
		server: serverConfig{log: log, accessLog: true},
		store:  redisstore.Options{Secret: testSecret, KeyPrefix: b.Prefix},
		rdb:    b.Client,
	}
	for _, o := range opts {
		o(&set)
	}
	m := newMetrics(set.rdb)
	var s *server
	set.store.OnEvent = func(ctx context.Context, e redisstore.Event) { s.onStoreEvent(ctx, e) }
	store, err := redisstore.New(set.rdb, set.store)
	if err != nil {
		t.Fatal(err)
	}
	set.server.store, set.server.metrics = store, m
	if set.server.tokens == nil {
		now := time.Now
		if b.Clock != nil {
			now = b.Clock.Now
		}
		set.server.tokens, set.server.issuer = newTestAuthority(t, set.store.Secret, now), testIssuer
	}
	if set.server.absoluteTTL == 0 {
		set.server.absoluteTTL = set.store.AbsoluteTTL
	}
	if set.server.dpop == nil {
		now := time.Now
		if b.Clock != nil {
			now = b.Clock.Now
		}
		set.server.dpop = newTestDPoP(t, set.rdb, b.Prefix, now, set.store.Secret, set.server.issuer, set.dpopNoncePeriod)
	}
	s = newServer(set.server)
	if !set.noFeed {
		// The revocation feed, as main starts it; the test waits until
		// forward auth may answer from memory.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.watchRevocations(ctx, store, 20*time.Millisecond)
		}()
		t.Cleanup(func() {
			cancel()
			<-done
		})
		deadline := time.Now().Add(10 * time.Second)
		for !s.gate.Trusted() {
			if time.Now().After(deadline) {
				t.Fatal("the revocation feed did not become whole within 10s")
			}
			time.Sleep(time.Millisecond)
		}
	}
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	ops := httptest.NewServer(s.ops())
	t.Cleanup(ops.Close)
	var key string
	if len(set.server.apiKeys) > 0 {
		key = string(set.server.apiKeys[0])
	}
	c := newAPIClient(t, hs.URL, key)
	c.metricsBase = ops.URL
	return &testEnv{apiClient: c, b: b, srv: s, logs: logs, metrics: m}
}

// response is a decoded answer.
type response struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

func (r response) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

// do sends a request with a JSON body (if body is not "") and the
// environment's API key.
func (e *apiClient) do(method, path, body string) response {
	e.t.Helper()
	h := http.Header{}
	if method == "POST" {
		h.Set("Content-Type", "application/json")
	}
	if e.apiKey != "" {
		h.Set("Authorization", "Bearer "+e.apiKey)
	}
	return e.send(method, path, body, h)
}

func (e *apiClient) send(method, path, body string, h http.Header) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			e.t.Fatalf("%s %s: body %q is not JSON: %v", method, path, raw, err)
		}
	}
	return r
}

// must sends a request and fails the test unless the status is want.
func (e *apiClient) must(want int, method, path, body string) response {
	e.t.Helper()
	r := e.do(method, path, body)
	if r.status != want {
		e.t.Fatalf("%s %s %s: status %d %s, want %d", method, path, body, r.status, r.raw, want)
	}
	return r
}

func (e *apiClient) login(user, device string) response {
	e.t.Helper()
	return e.must(http.StatusCreated, "POST", "/v1/sessions", `{"user_id":"`+user+`","client_id":"`+testClient+`","device_id":"`+device+`","device_name":"`+device+`"}`)
}

func refreshBody(tok string) string { return `{"refresh_token":"` + tok + `"}` }

// newTestDPoP is the DPoP machinery of a test service, on the clock now
// (a backend's, which a test on miniredis moves).
func newTestDPoP(t testing.TB, rdb redis.UniversalClient, prefix string, now func() time.Time, secret []byte, issuer string, noncePeriod time.Duration) *dpopGuard {
	t.Helper()
	g, err := newDPoPGuard(dpopSetup{redis: rdb, keyPrefix: prefix, secret: secret, issuer: issuer, noncePeriod: noncePeriod, now: now})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// testIssuer is the iss of the test environment's access tokens.
const testIssuer = "https://sessioncache.test"

// testClient is the client id the tests log in with.
const testClient = "test-app"

// newTestAuthority returns the access-token authority of a test service,
// on the clock of its Redis (so that moving a miniredis clock expires
// access tokens with their sessions).
func newTestAuthority(t testing.TB, secret []byte, now func() time.Time) *accesstoken.Authority {
	t.Helper()
	a, err := accesstoken.New(accesstoken.Config{Secret: secret, Issuer: testIssuer, Audience: testIssuer, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// newIssuerAuthority is newTestAuthority for another issuer.
func newIssuerAuthority(t *testing.T, secret []byte, issuer string) *accesstoken.Authority {
	t.Helper()
	a, err := accesstoken.New(accesstoken.Config{Secret: secret, Issuer: issuer, Audience: issuer})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// accessClaims decodes the claims of an access token, without checking
// it (the service does).
func accessClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("access token %.20q... is not a JWS", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err == nil {
		err = json.Unmarshal(b, &claims)
	}
	if err != nil {
		t.Fatalf("access token claims: %v", err)
	}
	return claims
}

// accessExpiry is the exp of an access token, as X-Auth-Expires-At gives it.
func accessExpiry(t *testing.T, tok string) string {
	t.Helper()
	exp, _ := accessClaims(t, tok)["exp"].(float64)
	return timestamp(time.Unix(int64(exp), 0))
}

// forgeAccess changes one character in the middle of an access token's
// signature: still well formed, no longer genuine.
func forgeAccess(tok string) string {
	i := len(tok) - 20
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

// syncBuffer is a buffer safe for concurrent writers.
type syncBuffer = servicetest.Buffer
