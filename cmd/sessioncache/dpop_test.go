package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

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
	if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, `DPoP error="`+errCode+`", algs="ES256 `) {
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
