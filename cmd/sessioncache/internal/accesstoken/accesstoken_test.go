package accesstoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
)

// TestRoundTrip issues a token, reads every header field and claim with the
// standard library alone, verifies it with go-jose against the published key
// set, and with Verify.
func TestRoundTrip(t *testing.T) {
	for _, alg := range algs {
		t.Run("alg="+alg, func(t *testing.T) {
			c := newClock(t0.Add(123456789 * time.Nanosecond))
			a := newAuthority(t, testConfig(alg, c))
			notAfter := c.Now().Add(time.Hour)
			tok, claims, err := a.Issue("user \"1\" \u00e9\n<&>", "sess-1", "web-app", "", notAfter)
			if err != nil {
				t.Fatal(err)
			}

			header, payload, sig := segments(t, tok)
			set := parseJWKS(t, a.JWKS())
			keys := set.Key(header["kid"].(string))
			if len(keys) != 1 {
				t.Fatalf("the kid of the header names %d keys of the JWKS, want 1", len(keys))
			}
			tp, err := keys[0].Thumbprint(crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			wantHeader := map[string]any{"alg": alg, "kid": base64.RawURLEncoding.EncodeToString(tp), "typ": "at+jwt"}
			if diff := cmp.Diff(wantHeader, header); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			now := t0.Unix()
			jti, _ := payload["jti"].(string)
			if b, err := base64.RawURLEncoding.Strict().DecodeString(jti); err != nil || len(b) != 16 {
				t.Errorf("jti %q is not 16 bytes of base64url", jti)
			}
			wantPayload := map[string]any{
				"iss":       testIssuer,
				"sub":       "user \"1\" \u00e9\n<&>",
				"aud":       testAudience,
				"exp":       json.Number(strconv.FormatInt(now+300, 10)),
				"iat":       json.Number(strconv.FormatInt(now, 10)),
				"jti":       jti,
				"client_id": "web-app",
				"sid":       "sess-1",
			}
			if diff := cmp.Diff(wantPayload, payload); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
			wantClaims := Claims{
				Subject: "user \"1\" \u00e9\n<&>", SessionID: "sess-1", ClientID: "web-app", JTI: jti,
				IssuedAt: time.Unix(now, 0), ExpiresAt: time.Unix(now+300, 0),
			}
			if diff := cmp.Diff(wantClaims, claims); diff != "" {
				t.Errorf("Issue's claims (-want +got):\n%s", diff)
			}
			wantSig := map[string]int{ES256: 64, EdDSA: 64}[alg]
			if len(sig) != wantSig {
				t.Errorf("signature of %d bytes, want %d", len(sig), wantSig)
			}

			// go-jose alone, with the published key set.
			parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
			if err != nil {
				t.Fatal(err)
			}
			var std jwt.Claims
			if err := parsed.Claims(set, &std); err != nil {
				t.Fatalf("go-jose does not verify the token with the JWKS: %v", err)
			}
			if err := std.ValidateWithLeeway(jwt.Expected{Issuer: testIssuer, AnyAudience: jwt.Audience{testAudience}, Time: c.Now()}, 0); err != nil {
				t.Errorf("go-jose: %v", err)
			}

			got, err := a.Verify(tok)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantClaims, got); diff != "" {
				t.Errorf("Verify (-want +got):\n%s", diff)
			}
		})
	}
}

// TestJWKS checks the key set document: three public keys of the configured
// algorithm, each with kid (its thumbprint), alg and use, and no private part.
func TestJWKS(t *testing.T) {
	for _, alg := range algs {
		t.Run("alg="+alg, func(t *testing.T) {
			a := newAuthority(t, testConfig(alg, newClock(t0)))
			var doc struct {
				Keys []map[string]any `json:"keys"`
			}
			if err := json.Unmarshal(a.JWKS(), &doc); err != nil {
				t.Fatal(err)
			}
			if len(doc.Keys) != 3 {
				t.Fatalf("%d keys, want 3", len(doc.Keys))
			}
			want := map[string][]string{
				ES256: {"alg", "crv", "kid", "kty", "use", "x", "y"},
				EdDSA: {"alg", "crv", "kid", "kty", "use", "x"},
			}[alg]
			for i, k := range doc.Keys {
				var fields []string
				for f := range k {
					fields = append(fields, f)
				}
				sort.Strings(fields)
				if diff := cmp.Diff(want, fields); diff != "" {
					t.Errorf("key %d fields (-want +got):\n%s", i, diff)
				}
				if k["alg"] != alg || k["use"] != "sig" {
					t.Errorf("key %d: alg %v use %v", i, k["alg"], k["use"])
				}
			}
			for _, k := range parseJWKS(t, a.JWKS()).Keys {
				switch k.Key.(type) {
				case *ecdsa.PublicKey, ed25519.PublicKey:
				default:
					t.Errorf("key %s is a %T", k.KeyID, k.Key)
				}
				tp, _ := k.Thumbprint(crypto.SHA256)
				if k.KeyID != base64.RawURLEncoding.EncodeToString(tp) {
					t.Errorf("kid %s is not the key's RFC 7638 thumbprint", k.KeyID)
				}
			}
			if got, want := a.JWKSCacheControl(), "public, max-age=3600"; got != want {
				t.Errorf("JWKSCacheControl() = %q, want %q", got, want)
			}
			if a.Alg() != alg {
				t.Errorf("Alg() = %q, want %q", a.Alg(), alg)
			}
		})
	}
}

// TestDerivedKeysAreStable pins the key ids that a secret gives: instances
// of different versions during a rolling upgrade must derive the same keys,
// so a change here is a breaking change.
func TestDerivedKeysAreStable(t *testing.T) {
	for _, tc := range []struct {
		alg   string
		epoch int64
		kid   string
	}{
		{ES256, 0, "9wHMVMeO4XtSGT6obtBfhRMJDZ2WT6MbRWyAX-UYnJ4"},
		{ES256, 22353, "jDuAxZd_K711-cGOMPoGmJnB4ZnTm9TElalUczMXJJo"},
		{EdDSA, 0, "KwtdWdB4i7V-jk7AfBkfcQemksvK22QKZxeT6NjbNVQ"},
		{EdDSA, 22353, "NvlvsteTfz2JAbMGtZ6qjnLHy4-LF1cyjeOlYOQEhKs"},
	} {
		k := deriveKey(testSecret, jose.SignatureAlgorithm(tc.alg), tc.epoch)
		if k.kid != tc.kid {
			t.Errorf("alg %s epoch %d: kid %s, want %s", tc.alg, tc.epoch, k.kid, tc.kid)
		}
	}
}

// TestIssueLifetime checks exp: now + TTL, capped by the session's deadline,
// rounded down, and a refusal when no whole second is left.
func TestIssueLifetime(t *testing.T) {
	now := t0.Add(400 * time.Millisecond)
	a := newAuthority(t, Config{Secret: testSecret, Issuer: testIssuer, Audience: testAudience, TTL: 90 * time.Second, Now: newClock(now).Now})
	for _, tc := range []struct {
		name     string
		notAfter time.Time
		exp      time.Time
		err      error
	}{
		{"far deadline", now.Add(time.Hour), t0.Add(90 * time.Second), nil},
		{"deadline first", now.Add(10*time.Second + 300*time.Millisecond), t0.Add(10 * time.Second), nil},
		{"deadline in 0.7s", now.Add(700 * time.Millisecond), t0.Add(time.Second), nil},
		{"deadline in 0.5s", now.Add(500 * time.Millisecond), time.Time{}, ErrDeadlinePassed},
		{"deadline now", now, time.Time{}, ErrDeadlinePassed},
		{"deadline past", now.Add(-time.Hour), time.Time{}, ErrDeadlinePassed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, c, err := a.Issue("u", "s", "c", "", tc.notAfter)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Issue: %v, want %v", err, tc.err)
			}
			if err != nil {
				if tok != "" {
					t.Errorf("a token with an error")
				}
				return
			}
			if !c.ExpiresAt.Equal(tc.exp) || !c.IssuedAt.Equal(t0) {
				t.Errorf("iat %v exp %v, want %v and %v", c.IssuedAt, c.ExpiresAt, t0, tc.exp)
			}
			if _, err := a.Verify(tok); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

// TestIssueRefusesBadInput checks what Issue will not sign.
func TestIssueRefusesBadInput(t *testing.T) {
	a := newAuthority(t, testConfig(ES256, newClock(t0)))
	far := t0.Add(time.Hour)
	long := strings.Repeat("x", MaxTokenLen)
	for _, tc := range []struct{ name, sub, sid, client string }{
		{"empty subject", "", "s", "c"},
		{"empty session", "u", "", "c"},
		{"empty client", "u", "s", ""},
		{"subject not UTF-8", "u\xff", "s", "c"},
		{"client not UTF-8", "u", "s", "\xc3"},
		{"too long", long, "s", "c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, _, err := a.Issue(tc.sub, tc.sid, tc.client, "", far)
			if err == nil || tok != "" {
				t.Fatalf("Issue(%q, %q, %q) = %q, %v; want an error", tc.sub, tc.sid, tc.client, tok, err)
			}
		})
	}
}

// TestNewValidates checks that New refuses bad configurations with a
// message that names the problem, and applies defaults.
func TestNewValidates(t *testing.T) {
	ok := Config{Secret: testSecret, Issuer: testIssuer, Audience: testAudience}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"short secret", func(c *Config) { c.Secret = testSecret[:31] }, "at least 32"},
		{"no secret", func(c *Config) { c.Secret = nil }, "at least 32"},
		{"HS256", func(c *Config) { c.Alg = "HS256" }, "not supported"},
		{"none", func(c *Config) { c.Alg = "none" }, "not supported"},
		{"RS256", func(c *Config) { c.Alg = "RS256" }, "not supported"},
		{"no issuer", func(c *Config) { c.Issuer = "" }, "issuer is required"},
		{"issuer without scheme", func(c *Config) { c.Issuer = "auth.example.com" }, "not an https://"},
		{"issuer ftp", func(c *Config) { c.Issuer = "ftp://auth.example.com" }, "not an https://"},
		{"issuer query", func(c *Config) { c.Issuer = "https://auth.example.com/?a=b" }, "query"},
		{"issuer empty query", func(c *Config) { c.Issuer = "https://auth.example.com/?" }, "query"},
		{"issuer fragment", func(c *Config) { c.Issuer = "https://auth.example.com/#x" }, "fragment"},
		{"issuer user", func(c *Config) { c.Issuer = "https://u:p@auth.example.com" }, "user"},
		{"no audience", func(c *Config) { c.Audience = "" }, "audience is required"},
		{"TTL too short", func(c *Config) { c.TTL = time.Millisecond }, "TTL"},
		{"TTL too long", func(c *Config) { c.TTL = 2 * time.Hour }, "TTL"},
		{"max-age fraction", func(c *Config) { c.JWKSMaxAge = 1500 * time.Millisecond }, "max-age"},
		{"max-age too long", func(c *Config) { c.JWKSMaxAge = 48 * time.Hour }, "max-age"},
		{"period too short", func(c *Config) { c.Period = 2*(DefaultTTL+DefaultJWKSMaxAge) - time.Second }, "at least 2 x (TTL 5m0s + JWKS max-age 1h0m0s) = 2h10m0s"},
		{"period short for TTL", func(c *Config) { c.TTL, c.Period = time.Hour, 3*time.Hour }, "key period 3h0m0s is too short"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.edit(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	a, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	if a.Alg() != ES256 || a.TTL() != DefaultTTL || a.period != DefaultPeriod || a.maxAge != DefaultJWKSMaxAge || a.cache == nil {
		t.Errorf("defaults: alg %s TTL %v period %v max-age %v cache %v", a.Alg(), a.TTL(), a.period, a.maxAge, a.cache != nil)
	}
	cfg := ok
	cfg.Period = 2 * (DefaultTTL + DefaultJWKSMaxAge)
	cfg.CacheSize = -1
	if a, err := New(cfg); err != nil || a.cache != nil {
		t.Errorf("the shortest period, cache off: %v, cache %v", err, a != nil && a.cache != nil)
	}
}

// testJKT is an RFC 7638 thumbprint: RFC 9449 section 6.1's example.
const testJKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"

// A token of a session bound to a DPoP key carries cnf.jkt (RFC 9449
// section 6.1), and Verify returns it, from the cache too; a bearer token
// has no cnf. Issue refuses what is not a thumbprint.
func TestBoundToken(t *testing.T) {
	for _, alg := range algs {
		t.Run("alg="+alg, func(t *testing.T) {
			c := newClock(t0)
			a := newAuthority(t, testConfig(alg, c))
			tok, claims, err := a.Issue("user-1", "sess-1", "web", testJKT, t0.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			_, payload, _ := segments(t, tok)
			if d := cmp.Diff(map[string]any{"jkt": testJKT}, payload["cnf"]); d != "" || claims.JKT != testJKT {
				t.Errorf("cnf (-want +got):\n%s; claims.JKT %q", d, claims.JKT)
			}
			for _, pass := range []string{"first", "cached"} {
				got, err := a.Verify(tok)
				if err != nil || got.JKT != testJKT {
					t.Errorf("%s Verify: JKT %q, %v; want %q", pass, got.JKT, err, testJKT)
				}
			}
			bearer, _, _ := a.Issue("user-1", "sess-1", "web", "", t0.Add(time.Hour))
			if _, payload, _ := segments(t, bearer); payload["cnf"] != nil {
				t.Errorf("a bearer token carries cnf %v", payload["cnf"])
			}
			for _, bad := range []string{"x", testJKT + "A", testJKT[:42] + "!", testJKT[:42] + "J"} {
				if _, _, err := a.Issue("user-1", "sess-1", "web", bad, t0.Add(time.Hour)); err == nil {
					t.Errorf("Issue with jkt %q succeeded", bad)
				}
			}
		})
	}
}
