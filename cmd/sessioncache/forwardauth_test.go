package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// bearer is the header of a user's token, as a gateway forwards it.
func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func cookie(name, tok string) http.Header {
	return http.Header{"Cookie": {(&http.Cookie{Name: name, Value: tok}).String()}}
}

// plain is e's client without the OpenAPI check, for what the document
// cannot describe: methods other than GET and paths below /v1/auth/.
func (e *apiClient) plain() *apiClient {
	return &apiClient{t: e.t, base: e.base, apiKey: e.apiKey, http: http.DefaultClient}
}

// checkValid checks a 200 of /v1/auth for the session g.
func checkValid(t *testing.T, what string, r response, g response) {
	t.Helper()
	if r.status != http.StatusOK || r.raw != "" {
		t.Fatalf("%s: %d %q, want 200 and no body", what, r.status, r.raw)
	}
	got := map[string]string{}
	for _, h := range []string{"X-Auth-User-Id", "X-Auth-Session-Id", "X-Auth-Expires-At", "Cache-Control", "Content-Type"} {
		got[h] = r.header.Get(h)
	}
	want := map[string]string{
		"X-Auth-User-Id":    g.str("user_id"),
		"X-Auth-Session-Id": g.str("session_id"),
		"X-Auth-Expires-At": g.str("expires_at"),
		"Cache-Control":     "no-store",
		"Content-Type":      "",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("%s: headers (-want +got):\n%s", what, d)
	}
}

// checkRefused checks a 401 of /v1/auth.
func checkRefused(t *testing.T, what string, r response, reason string) {
	t.Helper()
	if r.status != http.StatusUnauthorized || r.str("error") != "invalid_token" || r.str("reason") != reason || r.str("error_description") == "" {
		t.Errorf("%s: %d %s, want 401 invalid_token %s", what, r.status, r.raw, reason)
	}
	if got := r.header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
		t.Errorf("%s: WWW-Authenticate %q", what, got)
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("%s: Cache-Control %q, want no-store", what, got)
	}
	for _, h := range []string{"X-Auth-User-Id", "X-Auth-Session-Id", "X-Auth-Expires-At"} {
		if v := r.header.Get(h); v != "" {
			t.Errorf("%s: a refusal carries %s: %s", what, h, v)
		}
	}
}

// /v1/auth accepts the current token of a live session, in a bearer header
// or in the cookie, and refuses every other: missing, malformed, forged,
// rotated, revoked, expired. It writes nothing.
func TestForwardAuth(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		e := newTestEnvOn(t, b, withStoreOptions(func(o *redisstore.Options) {
			o.IdleTTL, o.AbsoluteTTL, o.Grace = 2*time.Second, time.Hour, time.Second
		}))
		g := e.login(alice, "laptop")
		tok := g.str("refresh_token")

		before := e.b.Snapshot(t)
		checkValid(t, "bearer", e.send("GET", "/v1/auth", "", bearer(tok)), g)
		checkValid(t, "lower-case scheme", e.send("GET", "/v1/auth", "", http.Header{"Authorization": {"bearer " + tok}}), g)
		checkValid(t, "cookie", e.send("GET", "/v1/auth", "", cookie("sc_session", tok)), g)
		checkValid(t, "cookie among others", e.send("GET", "/v1/auth", "", http.Header{"Cookie": {"theme=dark; sc_session=" + tok + "; lang=en"}}), g)
		// A gateway that passes the client's query gets the same answer.
		checkValid(t, "query", e.plain().send("GET", "/v1/auth?next=/app&x=1", "", bearer(tok)), g)
		if d := cmp.Diff(before, e.b.Snapshot(t)); d != "" {
			t.Errorf("/v1/auth changed Redis (-before +after):\n%s", d)
		}

		checkRefused(t, "no credential", e.send("GET", "/v1/auth", "", nil), "missing")
		checkRefused(t, "empty bearer", e.send("GET", "/v1/auth", "", http.Header{"Authorization": {"Bearer "}}), "missing")
		checkRefused(t, "another cookie", e.send("GET", "/v1/auth", "", cookie("session", tok)), "missing")
		checkRefused(t, "basic", e.send("GET", "/v1/auth", "", http.Header{"Authorization": {"Basic " + tok}}), "missing")
		checkRefused(t, "garbage", e.send("GET", "/v1/auth", "", bearer("not-a-token")), "malformed")
		checkRefused(t, "too long", e.send("GET", "/v1/auth", "", bearer(strings.Repeat("x", maxTokenLen+1))), "malformed")
		checkRefused(t, "forged", e.send("GET", "/v1/auth", "", bearer(forge(tok))), "unknown")
		checkRefused(t, "forged cookie", e.send("GET", "/v1/auth", "", cookie("sc_session", forge(tok))), "unknown")
		// The bearer token decides; a cookie does not rescue it, nor spoil it.
		both := bearer(forge(tok))
		both.Set("Cookie", "sc_session="+tok)
		checkRefused(t, "forged bearer, valid cookie", e.send("GET", "/v1/auth", "", both), "unknown")
		both = bearer(tok)
		both.Set("Cookie", "sc_session="+forge(tok))
		checkValid(t, "valid bearer, forged cookie", e.send("GET", "/v1/auth", "", both), g)
		basic := cookie("sc_session", tok)
		basic.Set("Authorization", "Basic dXNlcjpwdw==")
		checkValid(t, "basic auth for the upstream, valid cookie", e.send("GET", "/v1/auth", "", basic), g)

		// A rotated token is refused, even within grace (no replay here),
		// and the rotation was not disturbed by the checks before it.
		next := e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(tok))
		checkRefused(t, "rotated", e.send("GET", "/v1/auth", "", bearer(tok)), "revoked")
		checkValid(t, "successor", e.send("GET", "/v1/auth", "", bearer(next.str("refresh_token"))), next)

		other := e.login(alice, "phone")
		e.must(http.StatusOK, "POST", "/v1/tokens/revoke", refreshBody(other.str("refresh_token")))
		checkRefused(t, "revoked", e.send("GET", "/v1/auth", "", bearer(other.str("refresh_token"))), "revoked")

		b.Clock.Advance(3 * time.Second)
		checkRefused(t, "expired", e.send("GET", "/v1/auth", "", bearer(next.str("refresh_token"))), "expired")

		metrics := e.send("GET", "/metrics", "", nil).raw
		for _, m := range []string{
			`sessioncache_requests_total{operation="auth",outcome="ok"} 8`,
			`sessioncache_requests_total{operation="auth",outcome="missing"} 4`,
			`sessioncache_requests_total{operation="auth",outcome="malformed"} 2`,
			`sessioncache_requests_total{operation="auth",outcome="unknown"} 3`,
			`sessioncache_requests_total{operation="auth",outcome="revoked"} 2`,
			`sessioncache_requests_total{operation="auth",outcome="expired"} 1`,
		} {
			if !strings.Contains(metrics, m) {
				t.Errorf("/metrics lacks %s", m)
			}
		}
	})
}

// Gateways forward the client's method (Traefik, Envoy) and Envoy appends
// the client's path: every method and every path below /v1/auth/ gets the
// same answer, and a request body is not read.
func TestForwardAuthAnyMethodAndPath(t *testing.T) {
	e := newTestEnv(t)
	g := e.login(alice, "laptop")
	tok := g.str("refresh_token")
	c := e.plain()
	for _, method := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"} {
		for _, path := range []string{"/v1/auth", "/v1/auth/", "/v1/auth/api/orders/42?expand=items"} {
			h := bearer(tok)
			h.Set("Content-Type", "application/x-www-form-urlencoded")
			checkValid(t, method+" "+path, c.send(method, path, "a=1&b=2", h), g)
			req, err := http.NewRequest(method, e.base+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s without a token: %d, want 401 with WWW-Authenticate", method, path, resp.StatusCode)
			}
		}
	}
	if r := c.send("GET", "/v1/authx", "", bearer(tok)); r.status != http.StatusNotFound {
		t.Errorf("/v1/authx: %d, want 404", r.status)
	}
}

// User ids are opaque strings: the header carries them percent-encoded,
// unchanged when they are plain ASCII ids, and decodable by any
// percent-decoder.
func TestForwardAuthUserIDHeader(t *testing.T) {
	cases := []struct{ id, header string }{
		{alice, alice},
		{"auth0|507f1f77bcf86cd799439011", "auth0|507f1f77bcf86cd799439011"},
		{"user@example.com", "user@example.com"},
		{"12345", "12345"},
		{"urn:example:user:7", "urn:example:user:7"},
		{"a+b@example.com", "a%2Bb@example.com"},
		{"100% sure", "100%25%20sure"},
		{"Zoë", "Zo%C3%AB"},
		{"用户", "%E7%94%A8%E6%88%B7"},
		{`a"b,c;d\e`, "a%22b%2Cc%3Bd%5Ce"},
		{"%41", "%2541"},
	}
	for _, tc := range cases {
		got := headerValue(tc.id)
		if got != tc.header {
			t.Errorf("headerValue(%q) = %q, want %q", tc.id, got, tc.header)
		}
		for name, unescape := range map[string]func(string) (string, error){"PathUnescape": url.PathUnescape, "QueryUnescape": url.QueryUnescape} {
			if back, err := unescape(got); err != nil || back != tc.id {
				t.Errorf("url.%s(%q) = %q, %v; want %q", name, got, back, err, tc.id)
			}
		}
	}

	// Through the handler, for ids the store takes (whatever the API's
	// rules for user ids are).
	e := newTestEnv(t)
	for _, tc := range cases {
		g, err := e.srv.store().Issue(context.Background(), tc.id, redisstore.Client{})
		if err != nil {
			t.Fatalf("Issue(%q): %v", tc.id, err)
		}
		r := e.plain().send("GET", "/v1/auth", "", bearer(g.Token))
		if r.status != http.StatusOK || r.header.Get("X-Auth-User-Id") != tc.header {
			t.Errorf("user %q: %d, X-Auth-User-Id %q, want 200 and %q", tc.id, r.status, r.header.Get("X-Auth-User-Id"), tc.header)
		}
	}
}

// SESSIONCACHE_AUTH_COOKIE names the cookie.
func TestForwardAuthCookieName(t *testing.T) {
	e := newTestEnv(t, func(s *envSetup) { s.server.authCookie = "__Host-sid" })
	g := e.login(alice, "laptop")
	tok := g.str("refresh_token")
	checkValid(t, "configured cookie", e.send("GET", "/v1/auth", "", cookie("__Host-sid", tok)), g)
	checkRefused(t, "default cookie", e.send("GET", "/v1/auth", "", cookie("sc_session", tok)), "missing")
}

// With an API key, /v1/auth takes it in X-Sessioncache-Key (Authorization
// is the user's) and refuses a missing or wrong key with 403, which a
// gateway cannot mistake for a bad user token (401). The other endpoints
// take the key in either header.
func TestForwardAuthAPIKey(t *testing.T) {
	const key = "gateway-api-key-0123456789"
	e := newTestEnv(t, withAPIKey(key))
	g := e.login(alice, "laptop")
	tok := g.str("refresh_token")
	withKey := func(h http.Header, k string) http.Header {
		h = h.Clone()
		if h == nil {
			h = http.Header{}
		}
		h.Set("X-Sessioncache-Key", k)
		return h
	}
	checkValid(t, "key and token", e.send("GET", "/v1/auth", "", withKey(bearer(tok), key)), g)
	checkValid(t, "key and cookie", e.send("GET", "/v1/auth", "", withKey(cookie("sc_session", tok), key)), g)
	checkRefused(t, "key, no token", e.send("GET", "/v1/auth", "", withKey(nil, key)), "missing")
	checkRefused(t, "key, forged token", e.send("GET", "/v1/auth", "", withKey(bearer(forge(tok)), key)), "unknown")
	keyAsBearer := cookie("sc_session", tok)
	keyAsBearer.Set("Authorization", "Bearer "+key)
	for name, h := range map[string]http.Header{
		"no key":                        bearer(tok),
		"wrong key":                     withKey(bearer(tok), key+"x"),
		"empty key":                     withKey(bearer(tok), ""),
		"key prefix":                    withKey(bearer(tok), key[:16]),
		"key as bearer":                 bearer(key),
		"key as bearer, token a cookie": keyAsBearer,
	} {
		r := e.send("GET", "/v1/auth", "", h)
		if r.status != http.StatusForbidden || r.str("error") != "forbidden" || r.header.Get("WWW-Authenticate") != "" || r.header.Get("X-Auth-User-Id") != "" {
			t.Errorf("%s: %d %s %v, want 403 forbidden without WWW-Authenticate", name, r.status, r.raw, r.header)
		}
	}
	if m := e.send("GET", "/metrics", "", nil).raw; !strings.Contains(m, `sessioncache_requests_total{operation="auth",outcome="unauthorized"} 6`) {
		t.Errorf("/metrics does not count the 6 refused keys")
	}

	// The rest of the API: X-Sessioncache-Key as well as Authorization.
	json := http.Header{"Content-Type": {"application/json"}}
	body := `{"user_id":"` + bob + `"}`
	if r := e.send("POST", "/v1/sessions", body, withKey(json, key)); r.status != http.StatusCreated {
		t.Errorf("X-Sessioncache-Key on the API: %d %s, want 201", r.status, r.raw)
	}
	// X-Sessioncache-Key, when sent, decides.
	h := withKey(json, "wrong-key-0123456789")
	h.Set("Authorization", "Bearer "+key)
	if r := e.send("POST", "/v1/sessions", body, h); r.status != http.StatusUnauthorized || r.str("error") != "unauthorized" {
		t.Errorf("wrong X-Sessioncache-Key, right Authorization: %d %s, want 401", r.status, r.raw)
	}
	if r := e.send("POST", "/v1/sessions", body, withKey(json, "wrong-key-0123456789")); r.status != http.StatusUnauthorized {
		t.Errorf("wrong X-Sessioncache-Key: %d %s, want 401", r.status, r.raw)
	}
}

// Without an API key, /v1/auth too answers only requests to a loopback host.
func TestForwardAuthNoKeyLoopbackOnly(t *testing.T) {
	e := newTestEnv(t)
	tok := e.login(alice, "laptop").str("refresh_token")
	for host, want := range map[string]int{"127.0.0.1:8080": http.StatusOK, "api.example.com": http.StatusForbidden} {
		r := httptest.NewRequest("GET", "/v1/auth", nil)
		r.Host = host
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("Host %s: %d, want %d", host, w.Code, want)
		}
	}
}

// Redis down: 503 with Retry-After, which a gateway must not take for a
// refusal; a record that contradicts its token: 500.
func TestForwardAuthFailures(t *testing.T) {
	t.Run("redis down", func(t *testing.T) {
		e := newTestEnv(t, withFastFailingRedis())
		tok := e.login(alice, "laptop").str("refresh_token")
		e.b.Mini.Close()
		r := e.send("GET", "/v1/auth", "", bearer(tok))
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || r.header.Get("Cache-Control") != "no-store" || r.header.Get("X-Auth-User-Id") != "" {
			t.Errorf("Redis down: %d %s %v, want 503 with Retry-After", r.status, r.raw, r.header)
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
			e := newTestEnvOn(t, b)
			tok := e.login(alice, "laptop").str("refresh_token")
			tamper(t, b, bob)
			r := e.send("GET", "/v1/auth", "", bearer(tok))
			if r.status != http.StatusInternalServerError || r.str("error") != "server_error" || r.header.Get("X-Auth-User-Id") != "" {
				t.Errorf("corrupt record: %d %s %v, want 500 server_error", r.status, r.raw, r.header)
			}
			if m := e.send("GET", "/metrics", "", nil).raw; !strings.Contains(m, `sessioncache_requests_total{operation="auth",outcome="corrupt"} 1`) {
				t.Errorf("/metrics does not count the corrupt record")
			}
		})
	})
}

// Neither the token (in a header or a cookie) nor the API key reaches the
// logs or the metrics.
func TestForwardAuthNoSecretsInLogs(t *testing.T) {
	const key = "leak-test-gateway-key-0123456789"
	e := newTestEnv(t, withAPIKey(key))
	tok := e.login(alice, "laptop").str("refresh_token")
	bad := forge(tok)
	for _, h := range []http.Header{bearer(tok), cookie("sc_session", tok), bearer(bad), cookie("sc_session", bad)} {
		e.send("GET", "/v1/auth", "", h)
		h.Set("X-Sessioncache-Key", key)
		e.send("GET", "/v1/auth", "", h)
	}
	logs, metrics := e.logs.String(), e.send("GET", "/metrics", "", nil).raw
	if !strings.Contains(logs, `"operation":"auth"`) {
		t.Fatalf("no access log of /v1/auth:\n%s", logs)
	}
	secrets := []string{key}
	for _, tk := range []string{tok, bad} {
		for i := 0; i+16 <= len(tk); i += 8 {
			secrets = append(secrets, tk[i:i+16])
		}
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) || strings.Contains(metrics, s) {
			t.Errorf("the logs or metrics hold %q", s)
		}
	}
	for _, s := range []string{"sc_session", "Cookie", "Bearer"} {
		if strings.Contains(logs, s) {
			t.Errorf("the logs mention %s:\n%s", s, logs)
		}
	}
}
