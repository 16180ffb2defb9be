package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/clients"
	"github.com/sessioncache/sessioncache/internal/redistest"
)

// tokenForm sends a form to /oauth2/token: no API key, as a public client
// would.
func (e *apiClient) tokenForm(form url.Values, h http.Header) response {
	e.t.Helper()
	if h == nil {
		h = http.Header{}
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return e.send("POST", "/oauth2/token", form.Encode(), h)
}

func refreshForm(tok, client string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}, "client_id": {client}}
}

// checkOAuthError checks an RFC 6749 section 5.2 answer.
func checkOAuthError(t *testing.T, what string, r response, status int, code, reason string) {
	t.Helper()
	if r.status != status || r.str("error") != code || r.str("reason") != reason || r.str("error_description") == "" {
		t.Errorf("%s: %d %s, want %d %s (reason %q) with a description", what, r.status, r.raw, status, code, reason)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("%s: Cache-Control %q", what, r.header.Get("Cache-Control"))
	}
}

// /oauth2/token is RFC 6749 section 6: a form, no API key, section 5.1's
// answer with a new access token and the rotated refresh token, and
// section 5.2's errors. A refresh from another client than the session's
// is refused and changes nothing.
func TestTokenEndpoint(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		e := newTestEnvOn(t, b, withAPIKey("token-endpoint-test-key-0123"))
		g := e.login(alice, "laptop")
		public := &apiClient{t: t, base: e.base, http: e.http}

		r := public.tokenForm(refreshForm(g.str("refresh_token"), testClient), nil)
		if r.status != http.StatusOK {
			t.Fatalf("refresh: %d %s", r.status, r.raw)
		}
		if d := cmp.Diff([]string{"access_token", "expires_in", "refresh_token", "token_type"}, keys(r.body)); d != "" {
			t.Errorf("answer fields (-want +got):\n%s", d)
		}
		if r.str("token_type") != "Bearer" || r.body["expires_in"] != float64(300) || r.str("refresh_token") == g.str("refresh_token") {
			t.Errorf("answer: %s", r.raw)
		}
		for h, want := range map[string]string{"Cache-Control": "no-store", "Pragma": "no-cache", "Content-Type": "application/json"} {
			if got := r.header.Get(h); got != want {
				t.Errorf("%s: %q, want %q", h, got, want)
			}
		}
		claims := accessClaims(t, r.str("access_token"))
		for k, want := range map[string]any{"sub": alice, "sid": g.str("session_id"), "client_id": testClient, "iss": testIssuer, "aud": testIssuer} {
			if claims[k] != want {
				t.Errorf("claim %s = %v, want %v", k, claims[k], want)
			}
		}
		checkValid(t, "the new access token at /v1/auth", e.send("GET", "/v1/auth", "", http.Header{"Authorization": {"Bearer " + r.str("access_token")}, apiKeyHeader: {e.apiKey}}), g, r.str("access_token"))

		// Two tabs: the predecessor within grace gets the same successor.
		again := public.tokenForm(refreshForm(g.str("refresh_token"), testClient), nil)
		if again.status != http.StatusOK || again.str("refresh_token") != r.str("refresh_token") {
			t.Errorf("grace replay: %d %s, want the same successor", again.status, again.raw)
		}

		// Another client: refused, nothing changed.
		before := b.Snapshot(t)
		checkOAuthError(t, "another client", public.tokenForm(refreshForm(r.str("refresh_token"), "other-app"), nil), http.StatusBadRequest, "invalid_grant", "wrong_client")
		if d := cmp.Diff(before, b.Snapshot(t)); d != "" {
			t.Errorf("a refresh by another client changed Redis (-before +after):\n%s", d)
		}

		bad := func(name string, form url.Values, status int, code string) {
			t.Helper()
			got := public.tokenForm(form, nil)
			if got.status != status || got.str("error") != code {
				t.Errorf("%s: %d %s, want %d %s", name, got.status, got.raw, status, code)
			}
		}
		cur := r.str("refresh_token")
		bad("no grant_type", url.Values{"refresh_token": {cur}, "client_id": {testClient}}, 400, "invalid_request")
		bad("password grant", url.Values{"grant_type": {"password"}, "username": {"a"}, "client_id": {testClient}}, 400, "unsupported_grant_type")
		bad("scope", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {cur}, "client_id": {testClient}, "scope": {"admin"}}, 400, "invalid_scope")
		bad("no refresh token", url.Values{"grant_type": {"refresh_token"}, "client_id": {testClient}}, 400, "invalid_request")
		bad("no client", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {cur}}, 400, "invalid_request")
		bad("garbage token", refreshForm("sct_garbage", testClient), 400, "invalid_grant")
		bad("an access token", refreshForm(r.str("access_token"), testClient), 400, "invalid_grant")
		if got := public.send("POST", "/oauth2/token", form2(refreshForm(cur, testClient))+"&client_id=x", http.Header{"Content-Type": {mediaForm}}); got.status != 400 || got.str("error") != "invalid_request" {
			t.Errorf("client_id twice: %d %s", got.status, got.raw)
		}
		if got := public.send("POST", "/oauth2/token", `{"grant_type":"refresh_token"}`, http.Header{"Content-Type": {mediaJSON}}); got.status != 400 || got.str("error") != "invalid_request" {
			t.Errorf("JSON body: %d %s", got.status, got.raw)
		}
		if got := public.plain().send("POST", "/oauth2/token?refresh_token="+cur, form2(refreshForm(cur, testClient)), http.Header{"Content-Type": {mediaForm}}); got.status != 400 || got.str("error") != "invalid_request" {
			t.Errorf("query string: %d %s", got.status, got.raw)
		}
		// The session was not disturbed by the refusals: it refreshes on.
		next := public.tokenForm(refreshForm(cur, testClient), nil)
		if next.status != http.StatusOK {
			t.Fatalf("refresh after the refusals: %d %s", next.status, next.raw)
		}
		// The grandparent is a replay: the session dies, and so do its
		// access tokens.
		b.Clock.Advance(1100 * time.Millisecond)
		checkOAuthError(t, "replay", public.tokenForm(refreshForm(g.str("refresh_token"), testClient), nil), http.StatusBadRequest, "invalid_grant", "reused")
		checkRefused(t, "access token after the reuse", e.send("GET", "/v1/auth", "", http.Header{"Authorization": {"Bearer " + next.str("access_token")}, apiKeyHeader: {e.apiKey}}), "revoked")
	})
}

func form2(v url.Values) string { return v.Encode() }

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Registered clients: a confidential one authenticates with its secret, by
// HTTP Basic or in the form, a public one with its id alone; every other
// way is invalid_client (401), and a login for an unregistered client is
// refused.
func TestTokenEndpointClients(t *testing.T) {
	const secret = "backend-secret-0123456789abcdef0123"
	sum := sha256.Sum256([]byte(secret))
	reg, err := clients.Parse("clients", []byte("web public\nbackend confidential sha256:"+hex.EncodeToString(sum[:])+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, func(s *envSetup) { s.server.clients = reg })
	login := func(client string) response {
		t.Helper()
		return e.must(http.StatusCreated, "POST", "/v1/sessions", `{"user_id":"`+alice+`","client_id":"`+client+`"}`)
	}
	if r := e.do("POST", "/v1/sessions", `{"user_id":"`+alice+`","client_id":"mobile"}`); r.status != 400 || !strings.Contains(r.str("reason"), "not a registered client") {
		t.Errorf("login for an unregistered client: %d %s", r.status, r.raw)
	}
	basic := func(id, pw string) http.Header {
		return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(pw)))}}
	}
	be := login("backend").str("refresh_token")
	onlyToken := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {be}}
	r := e.tokenForm(onlyToken, basic("backend", secret))
	if r.status != http.StatusOK {
		t.Fatalf("client_secret_basic: %d %s", r.status, r.raw)
	}
	be = r.str("refresh_token")
	post := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {be}, "client_id": {"backend"}, "client_secret": {secret}}
	if r = e.tokenForm(post, nil); r.status != http.StatusOK {
		t.Fatalf("client_secret_post: %d %s", r.status, r.raw)
	}
	be = r.str("refresh_token")
	onlyToken.Set("refresh_token", be)
	for name, tc := range map[string]struct {
		form      url.Values
		h         http.Header
		challenge bool
	}{
		"wrong secret, basic":         {onlyToken, basic("backend", secret+"x"), true},
		"wrong secret, post":          {url.Values{"grant_type": {"refresh_token"}, "refresh_token": {be}, "client_id": {"backend"}, "client_secret": {"x"}}, nil, false},
		"confidential without secret": {refreshForm(be, "backend"), nil, false},
		"unknown client, basic":       {onlyToken, basic("mobile", "x"), true},
		"public client with a secret": {url.Values{"grant_type": {"refresh_token"}, "refresh_token": {be}, "client_id": {"web"}, "client_secret": {"x"}}, nil, false},
		"bearer instead of basic":     {refreshForm(be, "backend"), http.Header{"Authorization": {"Bearer " + secret}}, true},
	} {
		got := e.tokenForm(tc.form, tc.h)
		if got.status != http.StatusUnauthorized || got.str("error") != "invalid_client" {
			t.Errorf("%s: %d %s, want 401 invalid_client", name, got.status, got.raw)
		}
		if has := got.header.Get("WWW-Authenticate") != ""; has != tc.challenge {
			t.Errorf("%s: WWW-Authenticate %q", name, got.header.Get("WWW-Authenticate"))
		}
	}
	both := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {be}, "client_secret": {secret}}
	if got := e.tokenForm(both, basic("backend", secret)); got.status != 400 || got.str("error") != "invalid_request" {
		t.Errorf("basic and a secret in the form: %d %s", got.status, got.raw)
	}
	// The session of the confidential client is not the public one's.
	if got := e.tokenForm(refreshForm(be, "web"), nil); got.str("reason") != "wrong_client" {
		t.Errorf("the backend's token from the web client: %d %s", got.status, got.raw)
	}
	w := login("web").str("refresh_token")
	if got := e.tokenForm(refreshForm(w, "web"), nil); got.status != http.StatusOK {
		t.Errorf("public client: %d %s", got.status, got.raw)
	}
}

// With SESSIONCACHE_REFRESH_COOKIE, the token endpoint takes the refresh
// token from that cookie when the form has none, and gives the new one back
// in it (scoped to the endpoint, HttpOnly, Secure, SameSite=Strict), not in
// the body.
func TestRefreshCookie(t *testing.T) {
	e := newTestEnv(t, func(s *envSetup) { s.server.refreshCookie = "sc_refresh" })
	g := e.login(alice, "laptop")
	form := url.Values{"grant_type": {"refresh_token"}, "client_id": {testClient}}
	r := e.tokenForm(form, http.Header{"Cookie": {"sc_refresh=" + g.str("refresh_token")}})
	if r.status != http.StatusOK || r.str("refresh_token") != "" || r.str("access_token") == "" {
		t.Fatalf("refresh from the cookie: %d %s, want an access token and no refresh token in the body", r.status, r.raw)
	}
	resp := &http.Response{Header: r.header}
	cs := resp.Cookies()
	if len(cs) != 1 {
		t.Fatalf("Set-Cookie: %v", r.header["Set-Cookie"])
	}
	c := cs[0]
	if c.Name != "sc_refresh" || c.Path != tokenPath || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Value == g.str("refresh_token") || c.Expires.IsZero() {
		t.Errorf("cookie %+v", c)
	}
	// The new token in the cookie works; one in the form comes back in the
	// body.
	r2 := e.tokenForm(form, http.Header{"Cookie": {"sc_refresh=" + c.Value}})
	if r2.status != http.StatusOK {
		t.Fatalf("refresh with the cookie's new token: %d %s", r2.status, r2.raw)
	}
	g2 := e.login(bob, "phone")
	before := e.b.Snapshot(t)
	// Two credentials that differ are refused, never resolved by a pick:
	// two refresh cookies (one may be tossed from a sibling subdomain or
	// set for a longer path), a cookie and a form token that differ, two
	// Authorization headers. Nothing rotates.
	for name, h := range map[string]http.Header{
		"two cookies":                 {"Cookie": {"sc_refresh=garbage; sc_refresh=" + g2.str("refresh_token")}},
		"two Cookie headers":          {"Cookie": {"sc_refresh=" + g2.str("refresh_token"), "sc_refresh=garbage"}},
		"a cookie unlike the form's":  {"Cookie": {"sc_refresh=garbage"}},
		"two Authorization headers":   {"Authorization": {"Basic dGVzdDo=", "Basic dGVzdDo="}},
		"two cookies, the form's too": {"Cookie": {"sc_refresh=" + g2.str("refresh_token") + "; sc_refresh=" + g2.str("refresh_token")}},
	} {
		r := e.tokenForm(refreshForm(g2.str("refresh_token"), testClient), h)
		if r.status != http.StatusBadRequest || r.str("error") != "invalid_request" || !strings.HasPrefix(r.str("error_description"), "ambiguous_credentials") {
			t.Errorf("%s: %d %s, want 400 invalid_request ambiguous_credentials", name, r.status, r.raw)
		}
	}
	if d := cmp.Diff(before, e.b.Snapshot(t)); d != "" {
		t.Errorf("refused refreshes changed Redis (-before +after):\n%s", d)
	}
	r3 := e.tokenForm(refreshForm(g2.str("refresh_token"), testClient), http.Header{"Cookie": {"sc_refresh=" + g2.str("refresh_token")}})
	if r3.status != http.StatusOK || r3.str("refresh_token") == "" || r3.header.Get("Set-Cookie") != "" {
		t.Errorf("refresh token in the form, the same in the cookie: %d %s %v", r3.status, r3.raw, r3.header)
	}
}

// The metadata document (RFC 8414) points to the token endpoint and the
// keys; the key set holds the key of every access token handed out, and
// both are public and cacheable.
func TestMetadataAndKeys(t *testing.T) {
	e := newTestEnv(t, withAPIKey("metadata-test-key-0123456789"))
	public := &apiClient{t: t, base: e.base, http: e.http}
	md := public.must(http.StatusOK, "GET", metadataPath, "")
	want := map[string]any{
		"issuer":                                    testIssuer,
		"token_endpoint":                            testIssuer + tokenPath,
		"jwks_uri":                                  testIssuer + jwksPath,
		"grant_types_supported":                     []any{"refresh_token"},
		"response_types_supported":                  []any{},
		"token_endpoint_auth_methods_supported":     []any{"none", "client_secret_basic", "client_secret_post"},
		"access_token_signing_alg_values_supported": []any{"ES256"},
		"dpop_signing_alg_values_supported":         []any{"ES256", "ES384", "ES512", "EdDSA", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512"},
	}
	if d := cmp.Diff(want, md.body); d != "" {
		t.Errorf("metadata (-want +got):\n%s", d)
	}
	jwks := public.must(http.StatusOK, "GET", jwksPath, "")
	if ct := jwks.header.Get("Content-Type"); ct != "application/jwk-set+json" || !strings.HasPrefix(jwks.header.Get("Cache-Control"), "public, max-age=") {
		t.Errorf("JWKS headers: %v", jwks.header)
	}
	var set struct {
		Keys []struct{ Kid, Alg, Use, Kty string } `json:"keys"`
	}
	if err := json.Unmarshal([]byte(jwks.raw), &set); err != nil || len(set.Keys) != 3 {
		t.Fatalf("JWKS %s: %v, want 3 keys", jwks.raw, err)
	}
	at := e.login(alice, "laptop").str("access_token")
	hb, _ := base64.RawURLEncoding.DecodeString(strings.Split(at, ".")[0])
	var header struct{ Kid, Alg, Typ string }
	json.Unmarshal(hb, &header)
	found := false
	for _, k := range set.Keys {
		found = found || k.Kid == header.Kid && k.Alg == "ES256" && k.Use == "sig" && k.Kty == "EC"
	}
	if !found || header.Typ != "at+jwt" {
		t.Errorf("the access token's header %+v is not in the key set %s", header, jwks.raw)
	}
}

// An issuer with a path has its metadata at the well-known path followed by
// the issuer's path (RFC 8414 section 3.1), and its endpoints under it.
func TestMetadataOfAnIssuerWithAPath(t *testing.T) {
	const issuer = "https://auth.example.test/sessions"
	e := newTestEnv(t, func(s *envSetup) {
		s.server.tokens, s.server.issuer = newIssuerAuthority(t, s.store.Secret, issuer), issuer
	})
	md := e.plain().must(http.StatusOK, "GET", metadataPath+"/sessions", "")
	if md.str("issuer") != issuer || md.str("token_endpoint") != issuer+tokenPath || md.str("jwks_uri") != issuer+jwksPath {
		t.Errorf("metadata: %s", md.raw)
	}
}
