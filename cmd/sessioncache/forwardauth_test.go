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

// checkValid checks a 200 of /v1/auth for the session g, whose access
// token tok was presented.
func checkValid(t *testing.T, what string, r response, g response, tok string) {
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
		"X-Auth-Expires-At": accessExpiry(t, tok),
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

// /v1/auth accepts a live access token, in a bearer header or in the
// cookie, and refuses every other: missing, malformed, forged, expired, or
// of a session that ended. Requests in flight survive a rotation: the
// access token of before it stays valid until its exp. It writes nothing,
// and a live session in memory costs no Redis command.
func TestForwardAuth(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		e := newTestEnvOn(t, b, withStoreOptions(func(o *redisstore.Options) {
			o.IdleTTL, o.AbsoluteTTL, o.Grace = 3*time.Second, time.Hour, time.Second
		}))
		g := e.login(alice, "laptop")
		tok := g.str("access_token")

		before := e.b.Snapshot(t)
		checkValid(t, "bearer", e.send("GET", "/v1/auth", "", bearer(tok)), g, tok)
		checkValid(t, "lower-case scheme", e.send("GET", "/v1/auth", "", http.Header{"Authorization": {"bearer " + tok}}), g, tok)
		checkValid(t, "cookie", e.send("GET", "/v1/auth", "", cookie("sc_session", tok)), g, tok)
		checkValid(t, "cookie among others", e.send("GET", "/v1/auth", "", http.Header{"Cookie": {"theme=dark; sc_session=" + tok + "; lang=en"}}), g, tok)
		// A gateway that passes the client's query gets the same answer.
		checkValid(t, "query", e.plain().send("GET", "/v1/auth?next=/app&x=1", "", bearer(tok)), g, tok)
		if d := cmp.Diff(before, e.b.Snapshot(t)); d != "" {
			t.Errorf("/v1/auth changed Redis (-before +after):\n%s", d)
		}

		checkRefused(t, "no credential", e.send("GET", "/v1/auth", "", nil), "missing")
		checkRefused(t, "empty bearer", e.send("GET", "/v1/auth", "", http.Header{"Authorization": {"Bearer "}}), "missing")
		checkRefused(t, "another cookie", e.send("GET", "/v1/auth", "", cookie("session", tok)), "missing")
		checkRefused(t, "basic", e.send("GET", "/v1/auth", "", http.Header{"Authorization": {"Basic " + tok}}), "missing")
		checkRefused(t, "garbage", e.send("GET", "/v1/auth", "", bearer("not-a-token")), "malformed")
		checkRefused(t, "too long", e.send("GET", "/v1/auth", "", bearer(strings.Repeat("x", maxAccessTokenLen+1))), "malformed")
		checkRefused(t, "forged", e.send("GET", "/v1/auth", "", bearer(forgeAccess(tok))), "unknown")
		checkRefused(t, "forged cookie", e.send("GET", "/v1/auth", "", cookie("sc_session", forgeAccess(tok))), "unknown")
		// Two credentials that differ are refused, never resolved by a
		// pick: a cookie neither rescues a bearer token nor spoils it.
		both := bearer(forgeAccess(tok))
		both.Set("Cookie", "sc_session="+tok)
		checkRefused(t, "forged bearer, valid cookie", e.send("GET", "/v1/auth", "", both), reasonAmbiguous)
		both = bearer(tok)
		both.Set("Cookie", "sc_session="+forgeAccess(tok))
		checkRefused(t, "valid bearer, forged cookie", e.send("GET", "/v1/auth", "", both), reasonAmbiguous)
		both = bearer(tok)
		both.Set("Cookie", "sc_session="+tok)
		checkValid(t, "bearer and the same cookie", e.send("GET", "/v1/auth", "", both), g, tok)
		// Two cookies of the name: one may come from a sibling subdomain or
		// a longer path, and the first is not the one to trust.
		checkRefused(t, "two cookies", e.send("GET", "/v1/auth", "", http.Header{"Cookie": {"sc_session=" + forgeAccess(tok) + "; sc_session=" + tok}}), reasonAmbiguous)
		checkRefused(t, "two equal cookies", e.send("GET", "/v1/auth", "", http.Header{"Cookie": {"sc_session=" + tok + "; sc_session=" + tok}}), reasonAmbiguous)
		checkRefused(t, "two Cookie headers", e.send("GET", "/v1/auth", "", http.Header{"Cookie": {"sc_session=" + tok, "sc_session=" + forgeAccess(tok)}}), reasonAmbiguous)
		checkRefused(t, "two Authorization headers", e.send("GET", "/v1/auth", "", http.Header{"Authorization": {"Bearer " + tok, "Bearer " + forgeAccess(tok)}}), reasonAmbiguous)
		checkRefused(t, "a bearer and a Basic header", e.send("GET", "/v1/auth", "", http.Header{"Authorization": {"Basic dXNlcjpwdw==", "Bearer " + tok}}), reasonAmbiguous)
		basic := cookie("sc_session", tok)
		basic.Set("Authorization", "Basic dXNlcjpwdw==")
		checkValid(t, "basic auth for the upstream, valid cookie", e.send("GET", "/v1/auth", "", basic), g, tok)

		// A rotation: the access token of before it is still good (requests
		// in flight), and so is the new one.
		next := e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(g.str("refresh_token")))
		checkValid(t, "access token of before a rotation", e.send("GET", "/v1/auth", "", bearer(tok)), g, tok)
		checkValid(t, "access token of the rotation", e.send("GET", "/v1/auth", "", bearer(next.str("access_token"))), next, next.str("access_token"))

		other := e.login(alice, "phone")
		checkValid(t, "phone", e.send("GET", "/v1/auth", "", bearer(other.str("access_token"))), other, other.str("access_token"))
		e.must(http.StatusOK, "POST", "/v1/tokens/revoke", refreshBody(other.str("refresh_token")))
		checkRefused(t, "revoked", e.send("GET", "/v1/auth", "", bearer(other.str("access_token"))), "revoked")

		// The access token lives no longer than the session's idle deadline.
		b.Clock.Advance(4 * time.Second)
		checkRefused(t, "expired", e.send("GET", "/v1/auth", "", bearer(next.str("access_token"))), "expired")

		metrics := e.scrape()
		for _, m := range []string{
			`sessioncache_requests_total{operation="auth",outcome="ok"} 10`,
			`sessioncache_requests_total{operation="auth",outcome="missing"} 4`,
			`sessioncache_requests_total{operation="auth",outcome="malformed"} 2`,
			`sessioncache_requests_total{operation="auth",outcome="unknown"} 2`,
			`sessioncache_requests_total{operation="auth",outcome="ambiguous_credentials"} 7`,
			`sessioncache_requests_total{operation="auth",outcome="revoked"} 1`,
			`sessioncache_requests_total{operation="auth",outcome="expired"} 1`,
		} {
			if !strings.Contains(metrics, m) {
				t.Errorf("/metrics lacks %s", m)
			}
		}
	})
}

// A refresh token has no business at /v1/auth: wherever a request carries
// one (the bearer header, the auth cookie, another cookie, any header), it
// is refused with a reason of its own, counted, and logged with where the
// client is, but never the token; a request that merely mentions the
// prefix, or carries a forged refresh token, is not taken for one.
func TestForwardAuthRefusesRefreshTokens(t *testing.T) {
	e := newTestEnv(t)
	g := e.login(alice, "laptop")
	tok, refresh := g.str("access_token"), g.str("refresh_token")
	places := map[string]http.Header{
		"bearer":                  bearer(refresh),
		"auth cookie":             cookie("sc_session", refresh),
		"beside a valid bearer":   {"Authorization": {"Bearer " + tok}, "Cookie": {"theme=dark; sc_refresh=" + refresh}},
		"another header":          {"Authorization": {"Bearer " + tok}, "X-Refresh-Token": {refresh}},
		"inside a header's value": {"Authorization": {"Bearer " + tok}, "X-Original-Uri": {"/app?rt=" + refresh + "&x=1"}},
	}
	for name, h := range places {
		h.Set("X-Forwarded-For", "203.0.113.9")
		checkRefused(t, name, e.send("GET", "/v1/auth", "", h), "refresh_token")
	}
	for name, h := range map[string]http.Header{
		"the prefix alone":       {"Authorization": {"Bearer " + tok}, "X-Note": {"sct_ is our prefix"}},
		"a forged refresh token": {"Authorization": {"Bearer " + tok}, "X-Refresh-Token": {forge(refresh)}},
	} {
		checkValid(t, name, e.send("GET", "/v1/auth", "", h), g, tok)
	}
	if m := e.scrape(); !strings.Contains(m, "sessioncache_auth_refresh_token_presented_total 5") {
		t.Errorf("/metrics does not count the 5 refresh tokens")
	}
	logs := e.logs.String()
	if n := strings.Count(logs, "refresh token presented to forward auth"); n != 5 || !strings.Contains(logs, `"x_forwarded_for":"203.0.113.9"`) || !strings.Contains(logs, `"in":"Cookie sc_refresh"`) && !strings.Contains(logs, `"in":"cookie sc_refresh"`) {
		t.Errorf("%d warnings; want 5, naming the client and where the token was:\n%s", n, logs)
	}
	for i := 0; i+16 <= len(refresh); i += 8 {
		if strings.Contains(logs, refresh[i:i+16]) {
			t.Fatalf("the log holds the refresh token")
		}
	}
}

// A revocation reaches /v1/auth at once: a logout by session id, a log
// out everywhere, and a reuse detected at a refresh each make the
// session's access tokens refused on the next request, whether the session
// was answered from memory before or not.
func TestForwardAuthRevocations(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		e := newTestEnvOn(t, b)
		live := func(g response) {
			t.Helper()
			for range 3 {
				checkValid(t, "live", e.send("GET", "/v1/auth", "", bearer(g.str("access_token"))), g, g.str("access_token"))
			}
		}
		ended := func(what string, g response) {
			t.Helper()
			checkRefused(t, what, e.send("GET", "/v1/auth", "", bearer(g.str("access_token"))), "revoked")
		}
		a := e.login(alice, "laptop")
		live(a)
		e.must(http.StatusOK, "DELETE", "/v1/users/"+alice+"/sessions/"+a.str("session_id"), "")
		ended("logout", a)

		p1, p2 := e.login(bob, "phone"), e.login(bob, "tablet")
		live(p1)
		live(p2)
		e.must(http.StatusOK, "DELETE", "/v1/users/"+bob+"/sessions", "")
		ended("log out everywhere, first", p1)
		ended("log out everywhere, second", p2)

		c := e.login(alice, "desktop")
		live(c)
		c1 := e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(c.str("refresh_token")))
		e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(c1.str("refresh_token")))
		r := e.do("POST", "/v1/tokens/rotate", refreshBody(c.str("refresh_token")))
		if r.str("reason") != "reused" {
			t.Fatalf("reuse: %d %s", r.status, r.raw)
		}
		ended("reuse", c)
		ended("reuse, a later access token", c1)

		st := e.srv.gate.Stats()
		if st.Memory == 0 {
			t.Errorf("no answer came from memory: %+v", st)
		}
	})
}

// Gateways forward the client's method (Traefik, Envoy) and Envoy appends
// the client's path: every method and every path below /v1/auth/ gets the
// same answer, and a request body is not read.
func TestForwardAuthAnyMethodAndPath(t *testing.T) {
	e := newTestEnv(t)
	g := e.login(alice, "laptop")
	tok := g.str("access_token")
	c := e.plain()
	for _, method := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"} {
		for _, path := range []string{"/v1/auth", "/v1/auth/", "/v1/auth/api/orders/42?expand=items"} {
			h := bearer(tok)
			h.Set("Content-Type", "application/x-www-form-urlencoded")
			checkValid(t, method+" "+path, c.send(method, path, "a=1&b=2", h), g, tok)
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
		g, err := e.srv.store().Issue(context.Background(), tc.id, redisstore.Client{ClientID: testClient})
		if err != nil {
			t.Fatalf("Issue(%q): %v", tc.id, err)
		}
		at, _, err := e.srv.accessToken(g, "")
		if err != nil {
			t.Fatal(err)
		}
		r := e.plain().send("GET", "/v1/auth", "", bearer(at))
		if r.status != http.StatusOK || r.header.Get("X-Auth-User-Id") != tc.header {
			t.Errorf("user %q: %d, X-Auth-User-Id %q, want 200 and %q", tc.id, r.status, r.header.Get("X-Auth-User-Id"), tc.header)
		}
	}
}

// SESSIONCACHE_AUTH_COOKIE names the cookie.
func TestForwardAuthCookieName(t *testing.T) {
	e := newTestEnv(t, func(s *envSetup) { s.server.authCookie = "__Host-sid" })
	g := e.login(alice, "laptop")
	tok := g.str("access_token")
	checkValid(t, "configured cookie", e.send("GET", "/v1/auth", "", cookie("__Host-sid", tok)), g, tok)
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
	tok := g.str("access_token")
	withKey := func(h http.Header, k string) http.Header {
		h = h.Clone()
		if h == nil {
			h = http.Header{}
		}
		h.Set("X-Sessioncache-Key", k)
		return h
	}
	checkValid(t, "key and token", e.send("GET", "/v1/auth", "", withKey(bearer(tok), key)), g, tok)
	checkValid(t, "key and cookie", e.send("GET", "/v1/auth", "", withKey(cookie("sc_session", tok), key)), g, tok)
	checkRefused(t, "key, no token", e.send("GET", "/v1/auth", "", withKey(nil, key)), "missing")
	checkRefused(t, "key, forged token", e.send("GET", "/v1/auth", "", withKey(bearer(forgeAccess(tok)), key)), "unknown")
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
	if m := e.scrape(); !strings.Contains(m, `sessioncache_requests_total{operation="auth",outcome="unauthorized"} 6`) {
		t.Errorf("/metrics does not count the 6 refused keys")
	}

	// The rest of the API: X-Sessioncache-Key as well as Authorization.
	json := http.Header{"Content-Type": {"application/json"}}
	body := `{"user_id":"` + bob + `","client_id":"` + testClient + `"}`
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
	// A key sent twice is refused, whichever comes first: 400 on the API,
	// 403 on /v1/auth (the gateway's configuration is at fault).
	for name, tc := range map[string]struct {
		path   string
		h      http.Header
		status int
	}{
		"two X-Sessioncache-Key on the API":  {"/v1/sessions", http.Header{"Content-Type": {"application/json"}, apiKeyHeader: {key, "wrong-key-0123456789"}}, http.StatusBadRequest},
		"two Authorization on the API":       {"/v1/sessions", http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + key, "Bearer wrong-key-0123456789"}}, http.StatusBadRequest},
		"two X-Sessioncache-Key at /v1/auth": {"/v1/auth", http.Header{apiKeyHeader: {"wrong-key-0123456789", key}}, http.StatusForbidden},
	} {
		method := "POST"
		if tc.path == "/v1/auth" {
			method = "GET"
		}
		r := e.send(method, tc.path, body, tc.h)
		if r.status != tc.status || !strings.HasPrefix(r.str("reason"), "ambiguous_credentials") {
			t.Errorf("%s: %d %s, want %d ambiguous_credentials", name, r.status, r.raw, tc.status)
		}
	}
}

// Without an API key, /v1/auth too answers only requests to a loopback host.
func TestForwardAuthNoKeyLoopbackOnly(t *testing.T) {
	e := newTestEnv(t)
	tok := e.login(alice, "laptop").str("access_token")
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
		tok := e.login(alice, "laptop").str("access_token")
		e.b.Mini.Close()
		// Memory answers until the feed's loss is noticed (a live session
		// cannot be revoked while Redis is down); then Redis is asked.
		var r response
		poll(t, 10*time.Second, "/v1/auth 503 once the revocation feed is lost", func() bool {
			r = e.send("GET", "/v1/auth", "", bearer(tok))
			return r.status != http.StatusOK
		})
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || r.header.Get("Cache-Control") != "no-store" || r.header.Get("X-Auth-User-Id") != "" {
			t.Errorf("Redis down: %d %s %v, want 503 with Retry-After", r.status, r.raw, r.header)
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
			// Without the feed, every forward auth asks Redis, which holds
			// the tampered record (from memory, a session shown live stays
			// live until it is revoked).
			e := newTestEnvOn(t, b, func(s *envSetup) { s.noFeed = true })
			tok := e.login(alice, "laptop").str("access_token")
			tamper(t, b, bob)
			r := e.send("GET", "/v1/auth", "", bearer(tok))
			if r.status != http.StatusInternalServerError || r.str("error") != "server_error" || r.header.Get("X-Auth-User-Id") != "" {
				t.Errorf("corrupt record: %d %s %v, want 500 server_error", r.status, r.raw, r.header)
			}
			if m := e.scrape(); !strings.Contains(m, `sessioncache_requests_total{operation="auth",outcome="corrupt"} 1`) {
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
	tok := e.login(alice, "laptop").str("access_token")
	bad := forgeAccess(tok)
	for _, h := range []http.Header{bearer(tok), cookie("sc_session", tok), bearer(bad), cookie("sc_session", bad)} {
		e.send("GET", "/v1/auth", "", h)
		h.Set("X-Sessioncache-Key", key)
		e.send("GET", "/v1/auth", "", h)
	}
	logs, metrics := e.logs.String(), e.scrape()
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
