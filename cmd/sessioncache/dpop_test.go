package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/clients"
	"github.com/sessioncache/sessioncache/internal/redistest"
)

// dpopKey is a client's DPoP key pair, which signs its proofs (with
// go-jose, as a client library would).
type dpopKey struct {
	signer jose.Signer
	jkt    string
	now    func() time.Time
}

func newDPoPKey(t testing.TB, now func() time.Time) *dpopKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: priv}, (&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	tp, err := (&jose.JSONWebKey{Key: priv.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return &dpopKey{signer: s, jkt: base64.RawURLEncoding.EncodeToString(tp), now: now}
}

// proof signs a proof for method and uri, with the ath of accessToken and
// nonce when they are not "".
func (k *dpopKey) proof(t testing.TB, method, uri, accessToken, nonce string) string {
	t.Helper()
	var jti [16]byte
	rand.Read(jti[:])
	c := map[string]any{"jti": base64.RawURLEncoding.EncodeToString(jti[:]), "htm": method, "htu": uri, "iat": k.now().Unix()}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		c["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	if nonce != "" {
		c["nonce"] = nonce
	}
	b, _ := json.Marshal(c)
	jws, err := k.signer.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// originalHeaders are what an nginx configured as the README says passes
// of the original request GET https://app.example.com/orders?id=7.
func originalHeaders() http.Header {
	return http.Header{
		"X-Original-Method": {"GET"},
		"X-Original-Uri":    {"/orders?id=7"},
		"X-Forwarded-Proto": {"https"},
		"X-Forwarded-Host":  {"app.example.com"},
	}
}

const originalURL = "https://app.example.com/orders"

// checkDPoPRefused checks a 401 of /v1/auth with the DPoP challenge.
func checkDPoPRefused(t *testing.T, what string, r response, errCode, reason string) {
	t.Helper()
	if r.status != http.StatusUnauthorized || r.str("error") != errCode || r.str("reason") != reason || r.str("error_description") == "" {
		t.Errorf("%s: %d %s, want 401 %s %s", what, r.status, r.raw, errCode, reason)
	}
	if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, `DPoP error="`+errCode+`", error_description="`+r.str("error_description")+`", algs="ES256 `) {
		t.Errorf("%s: WWW-Authenticate %q, want the DPoP challenge", what, got)
	}
	if v := r.header.Get("X-Auth-User-Id"); v != "" {
		t.Errorf("%s: a refusal carries X-Auth-User-Id %s", what, v)
	}
}

// Forward auth of a DPoP-bound access token (RFC 9449 section 7), on every
// backend: it passes only as Authorization: DPoP with a fresh proof of its
// key, for the original request the gateway names, carrying the token's
// ath; each of those missing or wrong is refused, a proof is good once,
// and a gateway that names no original request, or two that disagree, gets
// 403 rather than a guess. A passing request costs one Redis key, the
// proof's jti, and writes nothing else.
func TestForwardAuthDPoP(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		const key = "dpop-auth-test-key-0123456789"
		e := newTestEnvOn(t, b, withAPIKey(key))
		ctx := context.Background()
		g := e.login(alice, "laptop")
		k := newDPoPKey(t, b.Clock.Now)
		other := newDPoPKey(t, b.Clock.Now)
		exp := b.Clock.Now().Add(time.Minute)
		tok, _, err := e.srv.tokens.Issue(alice, g.str("session_id"), testClient, k.jkt, exp)
		if err != nil {
			t.Fatal(err)
		}
		unbound := g.str("access_token")
		gw := http.Header{apiKeyHeader: {key}}
		auth := func(h ...http.Header) response {
			t.Helper()
			return e.send("GET", "/v1/auth", "", with(append([]http.Header{gw}, h...)...))
		}
		dpopAuth := func(tok string) http.Header { return http.Header{"Authorization": {"DPoP " + tok}} }
		proofHeader := func(p string) http.Header { return http.Header{"Dpop": {p}} }

		before, err := b.Keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		good := k.proof(t, "GET", originalURL, tok, "")
		checkValid(t, "a bound token with its proof", auth(dpopAuth(tok), proofHeader(good), originalHeaders()), g, tok)
		after, _ := b.Keys(ctx)
		if len(after) != len(before)+1 {
			t.Errorf("forward auth with a proof added %d keys, want 1 (the jti)", len(after)-len(before))
		}
		checkDPoPRefused(t, "the same proof again", auth(dpopAuth(tok), proofHeader(good), originalHeaders()), "invalid_dpop_proof", "replayed")

		traefik := http.Header{"X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/orders?id=7"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"app.example.com:443"}}
		checkValid(t, "X-Forwarded-Method and -Uri (Traefik, Caddy)", auth(dpopAuth(tok), proofHeader(k.proof(t, "GET", originalURL, tok, "")), traefik), g, tok)
		both := with(originalHeaders(), http.Header{"X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/orders?id=7"}})
		checkValid(t, "both pairs, agreeing", auth(dpopAuth(tok), proofHeader(k.proof(t, "GET", originalURL, tok, "")), both), g, tok)

		refusals := []struct {
			what         string
			h            http.Header
			errCode, why string
		}{
			{"as a bearer token", with(bearer(tok), proofHeader(k.proof(t, "GET", originalURL, tok, "")), originalHeaders()), "invalid_token", "dpop_required"},
			{"in the cookie", with(cookie(defaultAuthCookie, tok), originalHeaders()), "invalid_token", "dpop_required"},
			{"an unbound token as DPoP", with(dpopAuth(unbound), proofHeader(k.proof(t, "GET", originalURL, unbound, "")), originalHeaders()), "invalid_token", "not_bound"},
			{"no proof", with(dpopAuth(tok), originalHeaders()), "invalid_dpop_proof", "missing"},
			{"two proofs", with(dpopAuth(tok), http.Header{"Dpop": {k.proof(t, "GET", originalURL, tok, ""), k.proof(t, "GET", originalURL, tok, "")}}, originalHeaders()), "invalid_dpop_proof", "multiple"},
			{"another key's proof", with(dpopAuth(tok), proofHeader(other.proof(t, "GET", originalURL, tok, "")), originalHeaders()), "invalid_dpop_proof", "key_binding"},
			{"no ath", with(dpopAuth(tok), proofHeader(k.proof(t, "GET", originalURL, "", "")), originalHeaders()), "invalid_dpop_proof", "ath"},
			{"the ath of another token", with(dpopAuth(tok), proofHeader(k.proof(t, "GET", originalURL, unbound, "")), originalHeaders()), "invalid_dpop_proof", "ath"},
			{"htm of another method", with(dpopAuth(tok), proofHeader(k.proof(t, "POST", originalURL, tok, "")), originalHeaders()), "invalid_dpop_proof", "htm"},
			{"htu of another path", with(dpopAuth(tok), proofHeader(k.proof(t, "GET", "https://app.example.com/admin", tok, "")), originalHeaders()), "invalid_dpop_proof", "htu"},
			{"htu of another host", with(dpopAuth(tok), proofHeader(k.proof(t, "GET", "https://evil.example.com/orders", tok, "")), originalHeaders()), "invalid_dpop_proof", "htu"},
			{"htu of the service itself", with(dpopAuth(tok), proofHeader(k.proof(t, "GET", e.base+"/v1/auth", tok, "")), originalHeaders()), "invalid_dpop_proof", "htu"},
		}
		for _, rc := range refusals {
			checkDPoPRefused(t, rc.what, auth(rc.h), rc.errCode, rc.why)
		}
		// Two more passed (Traefik's headers, both pairs); no refusal
		// recorded its jti.
		if after2, _ := b.Keys(ctx); len(after2) != len(after)+2 {
			t.Errorf("%d keys more after two passes and the refusals, want 2", len(after2)-len(after))
		}

		gateway := []struct {
			what string
			h    http.Header
		}{
			{"no original method", http.Header{"X-Original-Uri": {"/orders"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"app.example.com"}}},
			{"no original URI", http.Header{"X-Original-Method": {"GET"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"app.example.com"}}},
			{"no X-Forwarded-Host", http.Header{"X-Original-Method": {"GET"}, "X-Original-Uri": {"/orders"}, "X-Forwarded-Proto": {"https"}}},
			{"no X-Forwarded-Proto", http.Header{"X-Original-Method": {"GET"}, "X-Original-Uri": {"/orders"}, "X-Forwarded-Host": {"app.example.com"}}},
			{"methods that disagree", with(originalHeaders(), http.Header{"X-Forwarded-Method": {"POST"}})},
			{"URIs that disagree", with(originalHeaders(), http.Header{"X-Forwarded-Uri": {"/admin"}})},
			{"the method twice", with(originalHeaders(), http.Header{"X-Original-Method": {"POST"}})},
			{"a URI that is not a path", with(http.Header{"X-Original-Method": {"GET"}, "X-Original-Uri": {"https://evil.example.com/orders"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"app.example.com"}})},
		}
		for _, gc := range gateway {
			r := auth(dpopAuth(tok), proofHeader(k.proof(t, "GET", originalURL, tok, "")), gc.h)
			if r.status != http.StatusForbidden || r.str("error") != "forbidden" || !strings.Contains(r.str("reason"), "cannot check the DPoP proof") {
				t.Errorf("%s: %d %s, want 403 naming the missing original request", gc.what, r.status, r.raw)
			}
		}

		// Introspection says the token is bound, and to which key.
		introspect := func(tok string) response {
			return e.send("POST", "/v1/tokens/introspect", "token="+tok, with(bearer(key), http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}))
		}
		if r := introspect(tok); r.str("token_type") != "DPoP" || r.body["cnf"] == nil || r.body["cnf"].(map[string]any)["jkt"] != k.jkt {
			t.Errorf("introspection of a bound token: %s, want token_type DPoP and cnf.jkt %s", r.raw, k.jkt)
		}
		if r := introspect(unbound); r.str("token_type") != "Bearer" || r.body["cnf"] != nil {
			t.Errorf("introspection of a bearer token: %s, want token_type Bearer and no cnf", r.raw)
		}
		// The bearer token of the same session still passes as before.
		checkValid(t, "the session's bearer token", auth(bearer(unbound)), g, unbound)
	})
}

// withoutJTIs is a snapshot of the keyspace without the replay cache's
// keys: what a refused refresh must leave as it was.
func withoutJTIs(m map[string][]string) map[string][]string {
	for k := range m {
		if strings.Contains(k, ":dpop:") {
			delete(m, k)
		}
	}
	return m
}

// tokenURI is the token endpoint's URI as the test service's clients
// reach it: its issuer's.
const tokenURI = testIssuer + tokenPath

// checkBoundGrant checks that an answer hands out an access token bound to
// jkt, as DPoP.
func checkBoundGrant(t *testing.T, what string, r response, jkt string) {
	t.Helper()
	if r.status != http.StatusOK && r.status != http.StatusCreated {
		t.Fatalf("%s: %d %s", what, r.status, r.raw)
	}
	cnf, _ := accessClaims(t, r.str("access_token"))["cnf"].(map[string]any)
	if r.str("token_type") != "DPoP" || cnf == nil || cnf["jkt"] != jkt {
		t.Errorf("%s: token_type %q, cnf %v; want DPoP bound to %s", what, r.str("token_type"), cnf, jkt)
	}
}

// The token endpoint (RFC 9449 section 5), on every backend: a session
// bound at login refreshes only with a proof of its key for POST and the
// token endpoint's URI; a missing proof, another key's, a replayed one, or
// one for another method or URI is refused with invalid_dpop_proof and
// rotates nothing, and a wrong key does not revoke the session either (its
// owner refreshes on); every access token of the session is bound to the
// key.
func TestTokenEndpointDPoP(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		e := newTestEnvOn(t, b, withAPIKey("dpop-token-test-key-0123456789"))
		public := &apiClient{t: t, base: e.base, http: e.http}
		k := newDPoPKey(t, b.Clock.Now)
		thief := newDPoPKey(t, b.Clock.Now)
		g := e.must(http.StatusCreated, "POST", "/v1/sessions", `{"user_id":"`+alice+`","client_id":"`+testClient+`","dpop_jkt":"`+k.jkt+`"}`)
		checkBoundGrant(t, "login with dpop_jkt", g, k.jkt)
		rt := g.str("refresh_token")
		proof := func(key *dpopKey) http.Header {
			return http.Header{"Dpop": {key.proof(t, "POST", tokenURI, "", "")}}
		}

		before := withoutJTIs(b.Snapshot(t))
		replayed := proof(k)
		refusals := []struct {
			what   string
			h      http.Header
			reason string
		}{
			{"no proof", nil, "missing"},
			{"another key's proof", proof(thief), "key_binding"},
			{"a proof for GET", http.Header{"Dpop": {k.proof(t, "GET", tokenURI, "", "")}}, "htm"},
			{"a proof for the service's own address", http.Header{"Dpop": {k.proof(t, "POST", e.base+tokenPath, "", "")}}, "htu"},
			{"a proof an hour old", http.Header{"Dpop": {(&dpopKey{signer: k.signer, now: func() time.Time { return b.Clock.Now().Add(-time.Hour) }}).proof(t, "POST", tokenURI, "", "")}}, "iat"},
			{"two proofs", http.Header{"Dpop": {k.proof(t, "POST", tokenURI, "", ""), k.proof(t, "POST", tokenURI, "", "")}}, "multiple"},
		}
		for _, rc := range refusals {
			checkOAuthError(t, rc.what, public.tokenForm(refreshForm(rt, testClient), rc.h), http.StatusBadRequest, "invalid_dpop_proof", rc.reason)
		}
		if d := cmp.Diff(before, withoutJTIs(b.Snapshot(t))); d != "" {
			t.Fatalf("refused refreshes changed the session (-before +after):\n%s", d)
		}
		// The owner, with the key, goes on: nothing was rotated or revoked.
		for i := range 3 {
			h := replayed
			if i > 0 {
				h = proof(k)
			}
			r := public.tokenForm(refreshForm(rt, testClient), h)
			checkBoundGrant(t, "a refresh with the key", r, k.jkt)
			rt = r.str("refresh_token")
		}
		checkOAuthError(t, "a replayed proof", public.tokenForm(refreshForm(rt, testClient), replayed), http.StatusBadRequest, "invalid_dpop_proof", "replayed")
		if !strings.Contains(e.logs.String(), "refresh token presented with another DPoP key") {
			t.Error("the other key's refresh was not logged")
		}
		// The session lives on, bound.
		list := e.must(http.StatusOK, "GET", "/v1/users/"+alice+"/sessions", "")
		if s := list.body["sessions"].([]any); len(s) != 1 || s[0].(map[string]any)["dpop_bound"] != true {
			t.Errorf("sessions %s, want the one, dpop_bound", list.raw)
		}
	})
}

// A public client's session not bound yet is bound by its first refresh
// with a proof (RFC 9449 section 5), and from then on refreshes only with
// that key; a confidential client's session stays unbound (its refresh
// token is bound to its credentials), and only the access token is bound to
// the proof's key.
func TestTokenEndpointDPoPBinding(t *testing.T) {
	const secret = "backend-secret-0123456789abcdef0123"
	sum := sha256.Sum256([]byte(secret))
	reg, err := clients.Parse("clients", []byte("web public\nbackend confidential sha256:"+hex.EncodeToString(sum[:])+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, func(s *envSetup) { s.server.clients = reg })
	k := newDPoPKey(t, e.b.Clock.Now)
	proof := func() http.Header { return http.Header{"Dpop": {k.proof(t, "POST", tokenURI, "", "")}} }

	web := e.must(http.StatusCreated, "POST", "/v1/sessions", `{"user_id":"`+alice+`","client_id":"web"}`)
	if web.str("token_type") != "Bearer" {
		t.Errorf("an unbound login: token_type %q", web.str("token_type"))
	}
	r := e.tokenForm(refreshForm(web.str("refresh_token"), "web"), proof())
	checkBoundGrant(t, "the public client's first refresh with a proof", r, k.jkt)
	checkOAuthError(t, "then without a proof", e.tokenForm(refreshForm(r.str("refresh_token"), "web"), nil), http.StatusBadRequest, "invalid_dpop_proof", "missing")
	checkBoundGrant(t, "then with the key", e.tokenForm(refreshForm(r.str("refresh_token"), "web"), proof()), k.jkt)

	be := e.must(http.StatusCreated, "POST", "/v1/sessions", `{"user_id":"`+alice+`","client_id":"backend"}`)
	post := func(tok string) url.Values {
		return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}, "client_id": {"backend"}, "client_secret": {secret}}
	}
	r = e.tokenForm(post(be.str("refresh_token")), proof())
	checkBoundGrant(t, "the confidential client's refresh with a proof", r, k.jkt)
	r = e.tokenForm(post(r.str("refresh_token")), nil)
	if r.status != http.StatusOK || r.str("token_type") != "Bearer" {
		t.Errorf("the confidential client's refresh without a proof: %d %s, want 200 Bearer (its session is not bound)", r.status, r.raw)
	}
}

// With server nonces (RFC 9449 section 8), a proof without the nonce, or
// with one gone stale, is refused with use_dpop_nonce and the nonce to
// use; with it, the refresh passes; every answer carries the nonce.
func TestTokenEndpointDPoPNonce(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		e := newTestEnvOn(t, b, withAPIKey("dpop-nonce-test-key-0123456789"), func(s *envSetup) { s.dpopNoncePeriod = time.Second })
		k := newDPoPKey(t, b.Clock.Now)
		g := e.must(http.StatusCreated, "POST", "/v1/sessions", `{"user_id":"`+alice+`","client_id":"`+testClient+`","dpop_jkt":"`+k.jkt+`"}`)
		rt := g.str("refresh_token")
		public := &apiClient{t: t, base: e.base, http: e.http}
		before := withoutJTIs(b.Snapshot(t))
		r := public.tokenForm(refreshForm(rt, testClient), http.Header{"Dpop": {k.proof(t, "POST", tokenURI, "", "")}})
		checkOAuthError(t, "a proof without the nonce", r, http.StatusBadRequest, "use_dpop_nonce", "")
		nonce := r.header.Get("DPoP-Nonce")
		if nonce == "" {
			t.Fatal("use_dpop_nonce without a DPoP-Nonce header")
		}
		if d := cmp.Diff(before, withoutJTIs(b.Snapshot(t))); d != "" {
			t.Fatalf("the refusal changed the session:\n%s", d)
		}
		r = public.tokenForm(refreshForm(rt, testClient), http.Header{"Dpop": {k.proof(t, "POST", tokenURI, "", nonce)}})
		checkBoundGrant(t, "a proof with the nonce", r, k.jkt)
		if r.header.Get("DPoP-Nonce") == "" {
			t.Error("a refresh's answer carries no DPoP-Nonce")
		}
		rt = r.str("refresh_token")
		b.Clock.Advance(2500 * time.Millisecond)
		r = public.tokenForm(refreshForm(rt, testClient), http.Header{"Dpop": {k.proof(t, "POST", tokenURI, "", nonce)}})
		checkOAuthError(t, "a nonce two periods old", r, http.StatusBadRequest, "use_dpop_nonce", "")
		if fresh := r.header.Get("DPoP-Nonce"); fresh == "" || fresh == nonce {
			t.Errorf("DPoP-Nonce %q after two periods, want a new one", fresh)
		} else {
			checkBoundGrant(t, "the new nonce", public.tokenForm(refreshForm(rt, testClient), http.Header{"Dpop": {k.proof(t, "POST", tokenURI, "", fresh)}}), k.jkt)
		}
	})
}

// A login or a rotation through the API binds with a proof the app
// forwards (checked for the method and URI the app names) or a thumbprint
// it checked; bad ones are refused and write nothing.
func TestAPIDPoP(t *testing.T) {
	e := newTestEnv(t)
	k := newDPoPKey(t, e.b.Clock.Now)
	const login = "https://app.example.com/login"
	body := func(extra string) string {
		return `{"user_id":"` + alice + `","client_id":"` + testClient + `"` + extra + `}`
	}
	g := e.must(http.StatusCreated, "POST", "/v1/sessions", body(`,"dpop_proof":"`+k.proof(t, "POST", login, "", "")+`","dpop_htm":"POST","dpop_htu":"`+login+`?next=/"`))
	checkBoundGrant(t, "login with a forwarded proof", g, k.jkt)
	before := withoutJTIs(e.b.Snapshot(t))
	for what, extra := range map[string]string{
		"a proof for another URI":  `,"dpop_proof":"` + k.proof(t, "POST", login, "", "") + `","dpop_htm":"POST","dpop_htu":"https://app.example.com/other"`,
		"a proof without its URI":  `,"dpop_proof":"` + k.proof(t, "POST", login, "", "") + `"`,
		"a proof and a thumbprint": `,"dpop_proof":"` + k.proof(t, "POST", login, "", "") + `","dpop_htm":"POST","dpop_htu":"` + login + `","dpop_jkt":"` + k.jkt + `"`,
		"a bad thumbprint":         `,"dpop_jkt":"` + k.jkt[:42] + `"`,
		"a URI without a proof":    `,"dpop_htu":"` + login + `"`,
	} {
		if r := e.do("POST", "/v1/sessions", body(extra)); r.status != http.StatusBadRequest {
			t.Errorf("login with %s: %d %s, want 400", what, r.status, r.raw)
		}
	}
	if d := cmp.Diff(before, withoutJTIs(e.b.Snapshot(t))); d != "" {
		t.Errorf("refused logins wrote (-before +after):\n%s", d)
	}
	rotate := func(extra string) response {
		return e.do("POST", "/v1/tokens/rotate", `{"refresh_token":"`+g.str("refresh_token")+`"`+extra+`}`)
	}
	if r := rotate(""); r.status != http.StatusBadRequest || r.str("error") != "invalid_dpop_proof" || r.str("reason") != "missing" {
		t.Errorf("rotate of a bound session without a key: %d %s", r.status, r.raw)
	}
	if r := rotate(`,"dpop_jkt":"` + newDPoPKey(t, e.b.Clock.Now).jkt + `"`); r.str("reason") != "key_binding" {
		t.Errorf("rotate with another key: %d %s", r.status, r.raw)
	}
	r := rotate(`,"dpop_jkt":"` + k.jkt + `"`)
	checkBoundGrant(t, "rotate with the session's key", r, k.jkt)
}
