package accesstoken

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	golangjwt "github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/sessioncache/sessioncache/internal/nodetest"
)

// joseDir is where testdata/jose lives in this package.
const joseDir = "testdata/jose"

// TestInteropNodeJose verifies issued tokens with code nobody here wrote:
// Node.js and the npm package jose (panva/jose), as a gateway would, with
// createRemoteJWKSet against the key set served over HTTP and jwtVerify
// with typ at+jwt, the issuer and the audience. The same script derives the
// signing keys from the secret with Node's crypto, as the package doc says,
// and must find the published kids.
func TestInteropNodeJose(t *testing.T) {
	dir := nodetest.Install(t, joseDir)
	for _, alg := range algs {
		t.Run("alg="+alg, func(t *testing.T) {
			c := newClock(t0)
			a := newAuthority(t, testConfig(alg, c))
			var requests atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				if r.URL.Path != "/.well-known/jwks.json" {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Cache-Control", a.JWKSCacheControl())
				w.Write(a.JWKS())
			}))
			defer srv.Close()

			tok, claims, err := a.Issue("user-1", "sess-1", "web", "", t0.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(tok, ".")
			tampered := forge(t, a.keyring(t0).signing(), goodHeader(a, a.keyring(t0).signing()), goodClaims(a))
			tampered = strings.Join(strings.Split(tampered, ".")[:2], ".") + "." + parts[2]
			otherAlg := map[string]string{ES256: EdDSA, EdDSA: ES256}[alg]
			ocfg := testConfig(otherAlg, c)
			otherTok, _ := issue(t, newAuthority(t, ocfg))
			jwtTyped := forge(t, a.keyring(t0).signing(), map[string]any{"alg": alg, "kid": a.keyring(t0).signing().kid, "typ": "JWT"}, goodClaims(a))
			expired := forge(t, a.keyring(t0).signing(), goodHeader(a, a.keyring(t0).signing()), func() map[string]any {
				m := goodClaims(a)
				m["iat"], m["exp"] = t0.Unix()-600, t0.Unix()-300
				return m
			}())

			in := map[string]any{
				"jwksURL":  srv.URL + "/.well-known/jwks.json",
				"issuer":   testIssuer,
				"audience": testAudience,
				"alg":      alg,
				"nowMs":    t0.Add(time.Second).UnixMilli(),
				"token":    tok,
				"refused":  []string{tampered, otherTok, jwtTyped, expired},
				"secret":   base64.RawURLEncoding.EncodeToString(testSecret),
				"epoch":    epochOf(t0, DefaultPeriod),
			}
			var out struct {
				ProtectedHeader map[string]any `json:"protectedHeader"`
				Payload         map[string]any `json:"payload"`
				Refused         []string       `json:"refused"`
				Published       []string       `json:"published"`
				Derived         []string       `json:"derived"`
			}
			nodetest.Run(t, dir, "verify.mjs", in, &out)

			header, payload, _ := segments(t, tok)
			for k, v := range payload {
				if n, ok := v.(json.Number); ok {
					payload[k], _ = n.Float64()
				}
			}
			if diff := cmp.Diff(header, out.ProtectedHeader); diff != "" {
				t.Errorf("jose's protected header (-ours +jose):\n%s", diff)
			}
			if diff := cmp.Diff(payload, out.Payload); diff != "" {
				t.Errorf("jose's payload (-ours +jose):\n%s", diff)
			}
			if out.Payload["sid"] != claims.SessionID || out.Payload["client_id"] != claims.ClientID {
				t.Errorf("jose read sid %v client_id %v", out.Payload["sid"], out.Payload["client_id"])
			}
			want := []string{"ERR_JWS_SIGNATURE_VERIFICATION_FAILED", "ERR_JOSE_ALG_NOT_ALLOWED", "ERR_JWT_CLAIM_VALIDATION_FAILED", "ERR_JWT_EXPIRED"}
			if diff := cmp.Diff(want, out.Refused); diff != "" {
				t.Errorf("jose's answers to tampered, other-algorithm, typ JWT and expired tokens (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(kids(t, a.JWKS()), out.Published); diff != "" {
				t.Errorf("the kids jose's fetch saw (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(kids(t, a.JWKS()), out.Derived); diff != "" {
				t.Errorf("kids derived in Node.js from the package doc (-published +derived):\n%s", diff)
			}
			if requests.Load() == 0 {
				t.Error("jose never fetched the key set")
			}
		})
	}
}

// TestInteropGolangJWT verifies issued tokens with golang-jwt/jwt/v5, a
// second verifier nobody here wrote, that needs no Node.js: the key is picked
// from the published key set by kid, the method must be the configured one,
// and iss, aud, exp and iat are golang-jwt's to check.
func TestInteropGolangJWT(t *testing.T) {
	for _, alg := range algs {
		t.Run("alg="+alg, func(t *testing.T) {
			c := newClock(t0)
			a := newAuthority(t, testConfig(alg, c))
			set := parseJWKS(t, a.JWKS())
			tok, want, err := a.Issue("user-1", "sess-1", "web", "", t0.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				golangjwt.RegisteredClaims
				ClientID string `json:"client_id"`
				Sid      string `json:"sid"`
			}
			parsed, err := golangjwt.ParseWithClaims(tok, &got, func(tk *golangjwt.Token) (any, error) {
				kid, _ := tk.Header["kid"].(string)
				keys := set.Key(kid)
				if len(keys) != 1 {
					return nil, errors.New("unknown kid")
				}
				return keys[0].Key, nil
			},
				golangjwt.WithValidMethods([]string{alg}),
				golangjwt.WithIssuer(testIssuer),
				golangjwt.WithAudience(testAudience),
				golangjwt.WithExpirationRequired(),
				golangjwt.WithIssuedAt(),
				golangjwt.WithTimeFunc(func() time.Time { return t0.Add(time.Second) }),
			)
			if err != nil {
				t.Fatalf("golang-jwt: %v", err)
			}
			if typ := parsed.Header["typ"]; typ != "at+jwt" {
				t.Errorf("typ %v", typ)
			}
			if got.Subject != want.Subject || got.Sid != want.SessionID || got.ClientID != want.ClientID || got.ID != want.JTI ||
				!got.ExpiresAt.Time.Equal(want.ExpiresAt) || !got.IssuedAt.Time.Equal(want.IssuedAt) {
				t.Errorf("golang-jwt read %+v, Issue said %+v", got, want)
			}
		})
	}
}
