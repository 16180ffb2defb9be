package main

// What every documented gateway configuration must do, checked on a real
// gateway process (nginx_test.go, caddy_test.go): the service on a real
// Redis, the gateway in front of it and of an application that echoes and
// keeps every request it receives.

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

const (
	// gatewayIssuer is the service's issuer behind the gateways: the
	// application's origin, where the gateway serves the token endpoint.
	gatewayIssuer = "https://app.example.com"
	// gatewayRefreshCookie is the service's refresh cookie there.
	gatewayRefreshCookie = "sc_refresh"
)

// echo is what the application behind the gateway received.
type echo struct {
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	Host    string      `json:"host"`
	Header  http.Header `json:"header"`
	Trailer http.Header `json:"trailer"`
	Body    string      `json:"body"`
}

// application is the upstream behind the gateway: it answers every request
// with an echo of it, and keeps them all.
type application struct {
	*httptest.Server
	mu   sync.Mutex
	seen []echo
}

func newApplication(t *testing.T) *application {
	app := &application{}
	app.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body) // the trailer comes after the body
		e := echo{Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Header: r.Header, Trailer: r.Trailer, Body: string(body)}
		app.mu.Lock()
		app.seen = append(app.seen, e)
		app.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(e)
	}))
	t.Cleanup(app.Close)
	return app
}

// requests returns every request the application received.
func (a *application) requests() []echo {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]echo(nil), a.seen...)
}

func (a *application) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seen)
}

// identity is what the service tells the application of a request.
type identity struct{ user, session, expires string }

// gatewayTest is a gateway running in front of the service and the
// application.
type gatewayTest struct {
	name   string
	base   string // the gateway's URL
	client *http.Client
	api    *apiClient // the service, directly, with the API key
	svc    *proc
	key    string
	app    *application
	store  *redisstore.Store // the service's secret: tells a genuine refresh token
	user   string
	// refresh holds every refresh token the test was given.
	refresh []string
	// want counts the forward-auth outcomes the service should have counted.
	want map[string]float64
}

// testGateway starts the service (on a real Redis, with an API key and a
// refresh cookie) and the application, has start run the gateway named name
// in front of them with the README's configuration (svc: the service's
// host:port, upstream: the application's URL) and return its base URL, and
// checks it:
//   - it lets through exactly the requests that carry a live access token,
//     in a bearer header or in the cookie, and gives the application that
//     session's identity, never one (in any spelling) that a client sent,
//     nor the API key;
//   - a refresh token never reaches the application, wherever the client
//     puts it;
//   - a client's Connection header, naming the identity headers in any
//     spelling, never gets a request through without the identity;
//   - the token endpoint and the keys are public, and requests in flight
//     survive a refresh there;
//   - a revocation takes effect at the next request.
func testGateway(t *testing.T, name string, start func(svc, upstream, key string) string) *gatewayTest {
	t.Helper()
	b := redistest.For(t, redistest.Real)
	key, secret := randomHex(16), randomHex(32)
	svc := startService(t, map[string]string{
		envRedisURL:      os.Getenv(redistest.EnvRedisURL),
		envKeyPrefix:     b.Prefix,
		envAPIKey:        key,
		envSecret:        secret,
		envIssuer:        gatewayIssuer,
		envRefreshCookie: gatewayRefreshCookie,
	})
	store, err := redisstore.New(b.Client, redisstore.Options{Secret: []byte(secret), KeyPrefix: b.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	g := &gatewayTest{name: name, client: &http.Client{Timeout: 10 * time.Second}, svc: svc, key: key,
		app: newApplication(t), store: store, user: "auth0|" + uuid.NewString(), want: map[string]float64{}}
	g.api = newAPIClient(t, "http://"+svc.addr, key)
	g.api.metricsBase = "http://" + svc.MetricsAddr
	poll(t, 10*time.Second, "the service to be ready", func() bool {
		return g.api.send("GET", "/readyz", "", nil).status == http.StatusOK
	})
	g.base = start(svc.addr, g.app.URL, key)
	// The gateway's own start-up probes were refused as missing: count
	// from here.
	before := g.authOutcomes(t)
	presented := metricValue(g.api.scrape(), "sessioncache_auth_refresh_token_presented_total")

	laptop, phone := g.login(t, "laptop"), g.login(t, "phone")
	if !store.Genuine(laptop.str("refresh_token")) {
		t.Fatal("the test's store does not recognise the service's refresh tokens: the leak checks would see none")
	}
	t.Run("access tokens", func(t *testing.T) { g.checkAccessTokens(t, laptop, phone) })
	t.Run("refresh tokens never reach the application", func(t *testing.T) { g.checkRefreshTokens(t, laptop) })
	t.Run("Connection", func(t *testing.T) { g.checkConnection(t, laptop, phone) })
	t.Run("token endpoint", func(t *testing.T) { g.checkTokenEndpoint(t, phone) })

	for _, e := range g.app.requests() {
		for _, leak := range g.leaks(e) {
			t.Errorf("the application received %s", leak)
		}
	}
	got := g.authOutcomes(t)
	for outcome := range got {
		got[outcome] -= before[outcome]
		if got[outcome] == 0 {
			delete(got, outcome)
		}
	}
	if d := cmp.Diff(g.want, got); d != "" {
		t.Errorf("forward-auth outcomes the service counted (-want +got):\n%s", d)
	}
	if got := metricValue(g.api.scrape(), "sessioncache_auth_refresh_token_presented_total") - presented; got != g.want["refresh_token"] {
		t.Errorf("sessioncache_auth_refresh_token_presented_total grew by %v, want %v", got, g.want["refresh_token"])
	}
	if got, want := g.app.count(), int(g.want["ok"]); got != want {
		t.Errorf("the application received %d requests, want the %d the service allowed", got, want)
	}
	logs := g.svc.logs.String()
	for _, tok := range append(g.refresh, key) {
		if strings.Contains(logs, tok) {
			t.Errorf("the service logs a refresh token or the API key")
			break
		}
	}
	return g
}

// login creates a session for the test's user, as the application does
// (directly, with the API key).
func (g *gatewayTest) login(t *testing.T, device string) response {
	t.Helper()
	r := g.api.must(http.StatusCreated, "POST", "/v1/sessions", `{"client_id":"`+testClient+`","user_id":"`+g.user+`","device_name":"`+device+`"}`)
	g.refresh = append(g.refresh, r.str("refresh_token"))
	return r
}

// identityOf is the identity the application must get for a request with
// the access token tok of the session of g.
func (g *gatewayTest) identityOf(t *testing.T, grant response, tok string) identity {
	return identity{user: headerValue(g.user), session: grant.str("session_id"), expires: accessExpiry(t, tok)}
}

// authOutcomes returns the service's count of forward-auth answers, by
// outcome.
func (g *gatewayTest) authOutcomes(t *testing.T) map[string]float64 {
	t.Helper()
	const prefix = `sessioncache_requests_total{operation="auth",outcome="`
	out := map[string]float64{}
	for _, line := range strings.Split(g.api.scrape(), "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			outcome, _, _ := strings.Cut(rest, `"`)
			out[outcome] = metricValue(line, prefix+outcome+`"}`)
		}
	}
	return out
}

// do sends a request through the gateway.
func (g *gatewayTest) do(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s through %s: %v", req.Method, req.URL.Path, g.name, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(raw)
}

func (g *gatewayTest) request(t *testing.T, method, path, body string, h http.Header) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, g.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	return req
}

func (g *gatewayTest) send(t *testing.T, method, path, body string, h http.Header) (int, http.Header, string) {
	t.Helper()
	return g.do(t, g.request(t, method, path, body, h))
}

// allowed checks that req reaches the application, unchanged, with the
// identity id and no other X-Auth-* header in any spelling, nor the API key.
func (g *gatewayTest) allowed(t *testing.T, what string, req *http.Request, body string, id identity) {
	t.Helper()
	status, _, raw := g.do(t, req)
	g.checkAllowed(t, what, req, body, status, raw, id)
}

func (g *gatewayTest) checkAllowed(t *testing.T, what string, req *http.Request, body string, status int, raw string, id identity) {
	t.Helper()
	if status != http.StatusOK {
		t.Errorf("%s: %s answered %d %s, want 200 from the application", what, g.name, status, raw)
		return
	}
	g.want["ok"]++
	var got echo
	if err := json.Unmarshal([]byte(raw), &got); err != nil {
		t.Fatalf("%s: not the application's answer: %s", what, raw)
	}
	if got.Method != req.Method || got.Path != req.URL.RequestURI() || got.Body != body {
		t.Errorf("%s: the application got %s %s %q, want %s %s %q", what, got.Method, got.Path, got.Body, req.Method, req.URL.RequestURI(), body)
	}
	want := map[string][]string{"X-Auth-User-Id": {id.user}, "X-Auth-Session-Id": {id.session}, "X-Auth-Expires-At": {id.expires}}
	for k, v := range want {
		if d := cmp.Diff(v, got.Header[k]); d != "" {
			t.Errorf("%s: the application got %s (-want +got):\n%s", what, k, d)
		}
	}
	for k := range got.Header {
		norm := strings.ToLower(strings.NewReplacer("_", "-", ".", "-").Replace(k))
		if strings.HasPrefix(norm, "x-auth-") && want[k] == nil {
			t.Errorf("%s: the application got a client's %s: %q", what, k, got.Header[k])
		}
		if strings.EqualFold(k, apiKeyHeader) || strings.Contains(strings.Join(got.Header[k], " "), g.key) {
			t.Errorf("%s: the application got the API key, in %s", what, k)
		}
	}
}

// refused checks that the gateway answers req with the service's refusal,
// and that it never reached the application; outcome is the service's
// reason, counted in its metrics.
func (g *gatewayTest) refused(t *testing.T, what string, req *http.Request, outcome string) {
	t.Helper()
	before := g.app.count()
	status, header, _ := g.do(t, req)
	g.checkRefused(t, what, status, header, before, outcome)
}

func (g *gatewayTest) checkRefused(t *testing.T, what string, status int, header http.Header, before int, outcome string) {
	t.Helper()
	g.want[outcome]++
	if status != http.StatusUnauthorized {
		// Not the answer: the application's echo may hold a refresh token.
		t.Errorf("%s: %s answered %d, want 401", what, g.name, status)
	}
	if got := header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
		t.Errorf("%s: WWW-Authenticate %q, want the service's", what, got)
	}
	if g.app.count() != before {
		t.Errorf("%s: the request reached the application", what)
	}
}

// forgedIdentity is a client claiming to be someone else, in every
// spelling: an application behind CGI, FastCGI (PHP), WSGI or Rack reads
// X-Auth-User-Id, X_Auth_User_Id and (PHP) X.Auth.User.Id as one variable.
func forgedIdentity() http.Header {
	return http.Header{
		"X-Auth-User-Id":    {"admin"},
		"x-auth-user-id":    {"admin"},
		"X_Auth_User_Id":    {"admin"},
		"x_auth-user_id":    {"admin"},
		"X-Auth_User-Id":    {"admin"},
		"X.Auth.User.Id":    {"admin"},
		"x.auth-user_id":    {"admin"},
		"X-Auth.User-Id":    {"admin"},
		"X-Auth-Session-Id": {"00000000-0000-0000-0000-000000000000"},
		"X_Auth_Session_Id": {"00000000-0000-0000-0000-000000000000"},
		"X-Auth-Expires-At": {"2999-01-01T00:00:00Z"},
		"X.Auth.Expires.At": {"2999-01-01T00:00:00Z"},
	}
}

// with merges headers.
func with(hs ...http.Header) http.Header {
	out := http.Header{}
	for _, h := range hs {
		for k, v := range h {
			out[k] = append(out[k], v...)
		}
	}
	return out
}

// checkAccessTokens: live access tokens pass with the service's identity,
// whatever identity the client claims; nothing else passes.
func (g *gatewayTest) checkAccessTokens(t *testing.T, laptop, phone response) {
	at, pt := laptop.str("access_token"), phone.str("access_token")
	lid, pid := g.identityOf(t, laptop, at), g.identityOf(t, phone, pt)
	get := func(path string, h http.Header) *http.Request { return g.request(t, "GET", path, "", h) }

	g.allowed(t, "bearer", get("/app/data?x=1", bearer(at)), "", lid)
	g.allowed(t, "cookie", get("/app/data", cookie(defaultAuthCookie, pt)), "", pid)
	g.allowed(t, "bearer and a forged identity", get("/app/data", with(bearer(at), forgedIdentity())), "", lid)
	g.allowed(t, "cookie and a forged identity", get("/", with(cookie(defaultAuthCookie, pt), forgedIdentity())), "", pid)
	g.allowed(t, "POST with a body", g.request(t, "POST", "/app/orders", `{"item":42}`,
		with(bearer(at), http.Header{"Content-Type": {"application/json"}})), `{"item":42}`, lid)

	g.refused(t, "no token", get("/app/data", nil), "missing")
	g.refused(t, "no token, a forged identity", get("/app/data", forgedIdentity()), "missing")
	g.refused(t, "garbage", get("/app/data", bearer("not-a-token")), "malformed")
	g.refused(t, "forged token", get("/app/data", bearer(forgeAccess(at))), "unknown")
	g.refused(t, "forged cookie", get("/app/data", cookie(defaultAuthCookie, forgeAccess(at))), "unknown")
	g.refused(t, "the API key as a token", get("/app/data", bearer(g.key)), "malformed")
}

// checkRefreshTokens sends a genuine refresh token in every place a client
// could, always beside a valid access token: the service refuses every
// request where it can see one (reason refresh_token), and the gateway
// passes none to the application, wherever the service cannot see it.
func (g *gatewayTest) checkRefreshTokens(t *testing.T, laptop response) {
	at, rt := laptop.str("access_token"), laptop.str("refresh_token")
	id := g.identityOf(t, laptop, at)
	type place struct {
		path string
		h    http.Header
		// trailer is sent after a chunked body, where no forward auth
		// looks.
		trailer http.Header
		// gatewayDecides: the gateway may drop the token before the
		// service sees it; then the request passes, without the token.
		gatewayDecides bool
	}
	places := map[string]place{
		"bearer":                          {h: with(bearer(rt), cookie(defaultAuthCookie, at))},
		"auth cookie":                     {h: with(bearer(at), cookie(defaultAuthCookie, rt))},
		"refresh cookie":                  {h: with(bearer(at), http.Header{"Cookie": {"theme=dark; " + gatewayRefreshCookie + "=" + rt}})},
		"a second Cookie header":          {h: with(cookie(defaultAuthCookie, at), cookie(gatewayRefreshCookie, rt))},
		"another header":                  {h: with(bearer(at), http.Header{"X-Refresh-Token": {rt}})},
		"inside a header's value":         {h: with(bearer(at), http.Header{"X-Debug": {"state=1;rt=" + rt + ";x=2"}})},
		"query":                           {path: "/app/data?refresh_token=" + rt, h: bearer(at)},
		"path":                            {path: "/app/" + rt + "/data", h: bearer(at)},
		"query, Connection naming":        {path: "/app/data?rt=" + rt, h: with(bearer(at), http.Header{"Connection": {"X-Original-Uri, X-Forwarded-Uri"}})},
		"a second Authorization":          {h: http.Header{"Authorization": {"Bearer " + at, "Bearer " + rt}}, gatewayDecides: true},
		"Proxy-Authorization":             {h: with(bearer(at), http.Header{"Proxy-Authorization": {"Bearer " + rt}}), gatewayDecides: true},
		"a header named with underscores": {h: with(bearer(at), http.Header{"X_Refresh_Token": {rt}}), gatewayDecides: true},
		"a header named with dots":        {h: with(bearer(at), http.Header{"X.Refresh.Token": {rt}}), gatewayDecides: true},
		"trailer":                         {h: bearer(at), trailer: http.Header{"X-Refresh-Token": {rt}}, gatewayDecides: true},
	}
	for what, p := range places {
		path, method, body := p.path, "GET", ""
		if path == "" {
			path = "/app/data"
		}
		req := g.request(t, method, path, body, p.h)
		if p.trailer != nil {
			method, body = "POST", `{"item":42}`
			req = g.request(t, method, path, body, with(p.h, http.Header{"Content-Type": {"application/json"}}))
			req.ContentLength = -1 // chunked, and the trailer after
			req.Trailer = p.trailer
		}
		before := g.app.count()
		status, header, raw := g.do(t, req)
		switch {
		case status == http.StatusOK && p.gatewayDecides:
			g.checkAllowed(t, what, req, body, status, raw, id)
		case status == http.StatusBadRequest && p.gatewayDecides && g.app.count() == before:
			// The gateway refused the request itself.
		default:
			g.checkRefused(t, what, status, header, before, "refresh_token")
		}
	}
}

// checkConnection: a client's Connection header names the identity headers
// (which a proxy that honours it drops as hop-by-hop, after forward auth
// set them) in every spelling: the application gets the service's identity
// every time.
func (g *gatewayTest) checkConnection(t *testing.T, laptop, phone response) {
	at, pt := laptop.str("access_token"), phone.str("access_token")
	lid, pid := g.identityOf(t, laptop, at), g.identityOf(t, phone, pt)
	cases := map[string]http.Header{
		"X-Auth-User-Id":                   {"Connection": {"X-Auth-User-Id"}},
		"X-Auth-Session-Id":                {"Connection": {"X-Auth-Session-Id"}},
		"X-Auth-Expires-At":                {"Connection": {"X-Auth-Expires-At"}},
		"all three":                        {"Connection": {"X-Auth-User-Id, X-Auth-Session-Id, X-Auth-Expires-At"}},
		"other spellings":                  {"Connection": {"X_Auth_User_Id, X.Auth.User.Id, x-auth-user-id, x-auth-session-id,X-AUTH-EXPIRES-AT"}},
		"two Connection headers":           {"Connection": {"keep-alive", "X-Auth-User-Id, X-Auth-Session-Id"}},
		"keep-alive and X-Auth-User-Id":    {"Connection": {"keep-alive, X-Auth-User-Id"}},
		"an upgrade and X-Auth-User-Id":    {"Connection": {"Upgrade, X-Auth-User-Id"}, "Upgrade": {"websocket"}},
		"X-Forwarded-For and X-Auth-*":     {"Connection": {"X-Forwarded-For, X-Auth-User-Id, X-Auth-Expires-At"}},
		"the cookie's session, all three":  {"Connection": {"X-Auth-User-Id, X-Auth-Session-Id, X-Auth-Expires-At"}},
		"the API key and the access token": {"Connection": {"X-Sessioncache-Key, Authorization, Cookie"}},
	}
	for what, h := range cases {
		h = with(h, forgedIdentity())
		id := lid
		if strings.HasPrefix(what, "the cookie's") {
			h, id = with(h, cookie(defaultAuthCookie, pt)), pid
		} else {
			h = with(h, bearer(at))
		}
		req := g.request(t, "GET", "/app/data", "", h)
		before := g.app.count()
		status, header, raw := g.do(t, req)
		switch status {
		case http.StatusOK:
			g.checkAllowed(t, "Connection: "+what, req, "", status, raw, id)
		case http.StatusForbidden:
			// The service did not get the API key: refused, which is safe.
			g.want["unauthorized"]++
			if g.app.count() != before {
				t.Errorf("Connection: %s: a 403 reached the application", what)
			}
		default:
			// The service did not get the access token.
			g.checkRefused(t, "Connection: "+what, status, header, before, "missing")
		}
	}
}

// checkTokenEndpoint: the token endpoint and the keys are served without
// forward auth (a refresh carries a refresh token and no access token),
// requests in flight with the access token of before a refresh still pass,
// the refresh cookie stays on the token endpoint's path, and a revocation
// takes effect at the next request.
func (g *gatewayTest) checkTokenEndpoint(t *testing.T, phone response) {
	hits := g.app.count()
	form := func(v url.Values) (string, http.Header) {
		return v.Encode(), http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	}
	a0 := phone.str("access_token")
	body, h := form(url.Values{"grant_type": {"refresh_token"}, "client_id": {testClient}, "refresh_token": {phone.str("refresh_token")}})
	status, header, raw := g.send(t, "POST", tokenPath, body, h)
	var first tokenBody
	if err := json.Unmarshal([]byte(raw), &first); status != http.StatusOK || err != nil || first.AccessToken == "" || first.RefreshToken == "" {
		t.Fatalf("a refresh through %s: %d %s, want 200 and the tokens", g.name, status, raw)
	}
	if got := header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("the token endpoint through %s: Cache-Control %q, want no-store", g.name, got)
	}
	g.refresh = append(g.refresh, first.RefreshToken)
	// Requests in flight: the access token of before the refresh passes,
	// with its own expiry, and so does the new one.
	g.allowed(t, "the access token of before a refresh", g.request(t, "GET", "/app/data", "", bearer(a0)), "", g.identityOf(t, phone, a0))
	g.allowed(t, "the access token of the refresh", g.request(t, "GET", "/app/data", "", bearer(first.AccessToken)), "", g.identityOf(t, phone, first.AccessToken))

	// A browser refreshes with the refresh cookie, which the service sets
	// again, for the token endpoint's path only.
	body, h = form(url.Values{"grant_type": {"refresh_token"}, "client_id": {testClient}})
	status, header, raw = g.send(t, "POST", tokenPath, body, with(h, cookie(gatewayRefreshCookie, first.RefreshToken)))
	var second tokenBody
	if err := json.Unmarshal([]byte(raw), &second); status != http.StatusOK || err != nil || second.AccessToken == "" || second.RefreshToken != "" {
		t.Fatalf("a refresh with the cookie through %s: %d %s, want 200, an access token and no refresh token", g.name, status, raw)
	}
	cookies := (&http.Response{Header: header}).Cookies()
	if len(cookies) != 1 || cookies[0].Name != gatewayRefreshCookie || !g.store.Genuine(cookies[0].Value) || cookies[0].Path != tokenPath ||
		!cookies[0].HttpOnly || !cookies[0].Secure || cookies[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("a refresh with the cookie through %s set %q, want one %s cookie: a refresh token, Path=%s; HttpOnly; Secure; SameSite=Strict",
			g.name, header.Values("Set-Cookie"), gatewayRefreshCookie, tokenPath)
	}
	g.refresh = append(g.refresh, cookies[0].Value)
	g.allowed(t, "the access token of the cookie's refresh", g.request(t, "GET", "/app/data", "", cookie(defaultAuthCookie, second.AccessToken)), "", g.identityOf(t, phone, second.AccessToken))

	status, _, raw = g.send(t, "GET", metadataPath, "", nil)
	var md metadata
	if err := json.Unmarshal([]byte(raw), &md); status != http.StatusOK || err != nil || md.TokenEndpoint != gatewayIssuer+tokenPath || md.JWKSURI != gatewayIssuer+jwksPath {
		t.Errorf("%s through %s: %d %s, want the service's metadata", metadataPath, g.name, status, raw)
	}
	status, _, raw = g.send(t, "GET", jwksPath, "", nil)
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal([]byte(raw), &jwks); status != http.StatusOK || err != nil || len(jwks.Keys) == 0 {
		t.Errorf("%s through %s: %d %s, want the service's keys", jwksPath, g.name, status, raw)
	}
	if got := g.app.count() - hits; got != 3 {
		t.Errorf("the application received %d requests, want only the 3 with access tokens", got)
	}

	// Logout: every access token of the session is refused at once.
	g.api.must(http.StatusOK, "DELETE", "/v1/users/"+url.PathEscape(g.user)+"/sessions/"+phone.str("session_id"), "")
	for what, tok := range map[string]string{"first": a0, "second": first.AccessToken, "third": second.AccessToken} {
		g.refused(t, "the "+what+" access token of a session logged out", g.request(t, "GET", "/app/data", "", bearer(tok)), "revoked")
	}
}

// leaks returns where e holds a refresh token: one the test was given, or
// any string that the service's store takes for a genuine one.
func (g *gatewayTest) leaks(e echo) []string {
	var out []string
	look := func(where, s string) {
		for _, v := range []string{s, unescape(s)} {
			if g.holdsRefreshToken(v) {
				out = append(out, "a refresh token in "+where)
				return
			}
		}
	}
	look("the path", e.Path)
	look("the Host header", e.Host)
	look("the body", e.Body)
	for kind, h := range map[string]http.Header{"header": e.Header, "trailer": e.Trailer} {
		for k, vs := range h {
			look("the name of a "+kind, k)
			for _, v := range vs {
				look("the "+kind+" "+k, v)
			}
		}
	}
	return out
}

func (g *gatewayTest) holdsRefreshToken(s string) bool {
	for _, tok := range g.refresh {
		if strings.Contains(s, tok) {
			return true
		}
	}
	prefix := redisstore.DefaultTokenPrefix
	for i := strings.Index(s, prefix); i >= 0; {
		end := i + len(prefix)
		for end < len(s) && base64URLChar(s[end]) {
			end++
		}
		if g.store.Genuine(s[i:end]) {
			return true
		}
		next := strings.Index(s[end:], prefix)
		if next < 0 {
			break
		}
		i = end + next
	}
	return false
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// checkDPoP: the gateway passes what a DPoP proof is checked against (the
// original method, URI, scheme and host): a DPoP-bound access token with a
// proof for the request reaches the application with its identity; the
// same proof again, and the token as a bearer token, are refused.
func (g *gatewayTest) checkDPoP(t *testing.T) {
	k := newDPoPKey(t, time.Now)
	r := g.api.must(http.StatusCreated, "POST", "/v1/sessions", `{"client_id":"`+testClient+`","user_id":"`+g.user+`","dpop_jkt":"`+k.jkt+`"}`)
	g.refresh = append(g.refresh, r.str("refresh_token"))
	at := r.str("access_token")
	proof := k.proof(t, "GET", g.base+"/app/data", at, "")
	h := http.Header{"Authorization": {"DPoP " + at}, "Dpop": {proof}}
	g.allowed(t, "a DPoP-bound token with its proof", g.request(t, "GET", "/app/data?x=1", "", h), "", g.identityOf(t, r, at))
	before := g.app.count()
	status, header, _ := g.do(t, g.request(t, "GET", "/app/data?x=1", "", h))
	if status != http.StatusUnauthorized || !strings.HasPrefix(header.Get("WWW-Authenticate"), `DPoP error="invalid_dpop_proof"`) || g.app.count() != before {
		t.Errorf("the same proof again through %s: %d %q, want 401 invalid_dpop_proof", g.name, status, header.Get("WWW-Authenticate"))
	}
	status, header, _ = g.do(t, g.request(t, "GET", "/app/data", "", bearer(at)))
	if status != http.StatusUnauthorized || !strings.HasPrefix(header.Get("WWW-Authenticate"), `DPoP error="invalid_token"`) || g.app.count() != before {
		t.Errorf("a DPoP-bound token as bearer through %s: %d %q, want 401 invalid_token", g.name, status, header.Get("WWW-Authenticate"))
	}
}
