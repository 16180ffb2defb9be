package dpop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"
)

// The example proof of RFC 9449 section 4.1, made by someone else with a
// key of theirs, verifies, and its thumbprint is the one the RFC's section
// 6.1 example binds to.
func TestVerifyRFC9449Example(t *testing.T) {
	const proof = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6Ik" +
		"VDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCR" +
		"nMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JE" +
		"QSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIj" +
		"oiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwia" +
		"WF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg" +
		"4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
	now := time.Unix(1562262616, 0)
	v := verifierAt(&now, nil)
	p, err := v.Verify([]string{proof}, Request{Method: "POST", URI: "https://server.example.com/token"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"; p.JKT != want {
		t.Errorf("jkt %s, want the RFC's %s", p.JKT, want)
	}
	if p.JTI != "-BwC3ESc6acc2lTc" || !p.IssuedAt.Equal(now) {
		t.Errorf("jti %q iat %v, want the RFC's", p.JTI, p.IssuedAt)
	}
}

// The ath of RFC 9449 section 7.1's example access token.
func TestAccessTokenHashRFC9449Example(t *testing.T) {
	if got, want := AccessTokenHash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"), "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"; got != want {
		t.Errorf("ath %s, want %s", got, want)
	}
}

// Every accepted algorithm verifies, and the jkt is the key's thumbprint.
func TestVerifyAccepts(t *testing.T) {
	now := t0
	v := verifierAt(&now, nil)
	for alg, k := range keysByAlg(t) {
		t.Run(alg, func(t *testing.T) {
			c := goodClaims()
			p, err := v.Verify([]string{sign(t, k, goodHeader(t, k), c)}, request())
			if err != nil {
				t.Fatal(err)
			}
			if want := Thumbprint(t, k.priv.Public()); p.JKT != want {
				t.Errorf("jkt %s, want %s", p.JKT, want)
			}
			if p.JTI != c["jti"] || !p.IssuedAt.Equal(t0) {
				t.Errorf("jti %q iat %v, want %q %v", p.JTI, p.IssuedAt, c["jti"], t0)
			}
		})
	}
}

// Each check of RFC 9449 section 4.3 refuses, with its reason.
func TestVerifyRefuses(t *testing.T) {
	k := keysByAlg(t)["ES256"]
	other := keysByAlg(t)["EdDSA"]
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakKey := testKey{"RS256", weak}
	p256b, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const at = "an-access-token"
	good := func(mod func(h, c map[string]any)) string {
		h, c := goodHeader(t, k), goodClaims()
		if mod != nil {
			mod(h, c)
		}
		return sign(t, k, h, c)
	}
	privateJWK := publicJWK(t, k.priv.Public())
	privateJWK["d"] = "AAAA"
	cases := []struct {
		name   string
		fields []string
		req    Request
		reason string
	}{
		{"no header", nil, request(), ReasonMissing},
		{"an empty header", []string{" "}, request(), ReasonMissing},
		{"two header fields", []string{good(nil), good(nil)}, request(), ReasonMultiple},
		{"over 8 KB", []string{good(func(h, c map[string]any) { c["pad"] = strings.Repeat("x", MaxProofLen) })}, request(), ReasonTooLong},
		{"over 8 KB of garbage", []string{strings.Repeat("a.", MaxProofLen)}, request(), ReasonTooLong},
		{"two segments", []string{"abc.def"}, request(), ReasonMalformed},
		{"not base64", []string{"a*b.c*d.e*f"}, request(), ReasonMalformed},
		{"JSON serialization", []string{`{"payload":"e30","signatures":[]}`}, request(), ReasonMalformed},
		{"alg none", []string{good(func(h, c map[string]any) { h["alg"] = "none" })}, request(), ReasonMalformed},
		{"alg HS256", []string{good(func(h, c map[string]any) { h["alg"] = "HS256" })}, request(), ReasonMalformed},
		{"no typ", []string{good(func(h, c map[string]any) { delete(h, "typ") })}, request(), ReasonType},
		{"typ JWT", []string{good(func(h, c map[string]any) { h["typ"] = "JWT" })}, request(), ReasonType},
		{"typ at+jwt", []string{good(func(h, c map[string]any) { h["typ"] = "at+jwt" })}, request(), ReasonType},
		{"no jwk", []string{good(func(h, c map[string]any) { delete(h, "jwk") })}, request(), ReasonKey},
		{"a private jwk", []string{good(func(h, c map[string]any) { h["jwk"] = privateJWK })}, request(), ReasonMalformed},
		{"an RSA key of 1024 bits", []string{sign(t, weakKey, goodHeader(t, weakKey), goodClaims())}, request(), ReasonKey},
		{"signed by another key than the jwk", []string{good(func(h, c map[string]any) { h["jwk"] = publicJWK(t, p256b.Public()) })}, request(), ReasonSignature},
		{"an EdDSA jwk under alg ES256", []string{good(func(h, c map[string]any) { h["jwk"] = publicJWK(t, other.priv.Public()) })}, request(), ReasonSignature},
		{"no jti", []string{good(func(h, c map[string]any) { delete(c, "jti") })}, request(), ReasonClaims},
		{"an empty jti", []string{good(func(h, c map[string]any) { c["jti"] = "" })}, request(), ReasonClaims},
		{"a long jti", []string{good(func(h, c map[string]any) { c["jti"] = strings.Repeat("j", MaxJTILen+1) })}, request(), ReasonClaims},
		{"a numeric jti", []string{good(func(h, c map[string]any) { c["jti"] = 7 })}, request(), ReasonClaims},
		{"no htm", []string{good(func(h, c map[string]any) { delete(c, "htm") })}, request(), ReasonClaims},
		{"no htu", []string{good(func(h, c map[string]any) { delete(c, "htu") })}, request(), ReasonClaims},
		{"no iat", []string{good(func(h, c map[string]any) { delete(c, "iat") })}, request(), ReasonClaims},
		{"iat as text", []string{good(func(h, c map[string]any) { c["iat"] = "1900000000" })}, request(), ReasonClaims},
		{"claims not an object", []string{sign(t, k, goodHeader(t, k), nil)}, request(), ReasonClaims},
		{"htm GET for POST", []string{good(func(h, c map[string]any) { c["htm"] = "GET" })}, request(), ReasonMethod},
		{"htm post for POST", []string{good(func(h, c map[string]any) { c["htm"] = "post" })}, request(), ReasonMethod},
		{"htu another host", []string{good(func(h, c map[string]any) { c["htu"] = "https://evil.example.com/oauth2/token" })}, request(), ReasonURI},
		{"htu another path", []string{good(func(h, c map[string]any) { c["htu"] = "https://app.example.com/oauth2/token/x" })}, request(), ReasonURI},
		{"htu http for https", []string{good(func(h, c map[string]any) { c["htu"] = "http://app.example.com/oauth2/token" })}, request(), ReasonURI},
		{"htu another port", []string{good(func(h, c map[string]any) { c["htu"] = "https://app.example.com:8443/oauth2/token" })}, request(), ReasonURI},
		{"htu relative", []string{good(func(h, c map[string]any) { c["htu"] = "/oauth2/token" })}, request(), ReasonURI},
		{"htu with user information", []string{good(func(h, c map[string]any) { c["htu"] = "https://u:p@app.example.com/oauth2/token" })}, request(), ReasonURI},
		{"iat 61s old", []string{good(func(h, c map[string]any) { c["iat"] = t0.Add(-DefaultWindow - time.Second).Unix() })}, request(), ReasonIssuedAt},
		{"iat 6s ahead", []string{good(func(h, c map[string]any) { c["iat"] = t0.Add(DefaultLeeway + time.Second).Unix() })}, request(), ReasonIssuedAt},
		{"no ath with an access token", []string{good(nil)}, Request{Method: testMethod, URI: testURI, AccessToken: at}, ReasonATH},
		{"the ath of another access token", []string{good(func(h, c map[string]any) { c["ath"] = AccessTokenHash(at + "x") })}, Request{Method: testMethod, URI: testURI, AccessToken: at}, ReasonATH},
	}
	now := t0
	v := verifierAt(&now, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(tc.fields, tc.req)
			if !errors.Is(err, ErrInvalid) || Reason(err) != tc.reason {
				t.Errorf("got %v (reason %q), want ErrInvalid with reason %q", err, Reason(err), tc.reason)
			}
			for _, f := range tc.fields {
				if len(f) > 16 && strings.Contains(err.Error(), f[:16]) {
					t.Errorf("the error %q holds part of the proof", err)
				}
			}
		})
	}
}

// What the window and the normalisation of htu accept.
func TestVerifyEdges(t *testing.T) {
	k := keysByAlg(t)["ES256"]
	const at = "an-access-token"
	cases := []struct {
		name string
		mod  func(c map[string]any)
		req  Request
	}{
		{"iat 60s old", func(c map[string]any) { c["iat"] = t0.Add(-DefaultWindow).Unix() }, request()},
		{"iat 5s ahead", func(c map[string]any) { c["iat"] = t0.Add(DefaultLeeway).Unix() }, request()},
		{"iat with a fraction", func(c map[string]any) { c["iat"] = float64(t0.Unix()) + 0.5 }, request()},
		{"htu with a query and a fragment", func(c map[string]any) { c["htu"] = testURI + "?a=1#f" }, request()},
		{"htu in other case, default port, dot segments, encoded unreserved", func(c map[string]any) {
			c["htu"] = "HTTPS://App.Example.COM:443/oauth2/./x/../%74oken"
		}, request()},
		{"ath of the access token", func(c map[string]any) { c["ath"] = AccessTokenHash(at) }, Request{Method: testMethod, URI: testURI, AccessToken: at}},
		{"ath without an access token", func(c map[string]any) { c["ath"] = "anything" }, request()},
	}
	now := t0
	v := verifierAt(&now, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := goodClaims()
			tc.mod(c)
			if _, err := v.Verify([]string{sign(t, k, goodHeader(t, k), c)}, tc.req); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestNormalizeURI(t *testing.T) {
	cases := map[string]string{
		"https://example.com":                  "https://example.com/",
		"https://example.com/":                 "https://example.com/",
		"HTTPS://EXAMPLE.com:443/A":            "https://example.com/A",
		"http://example.com:80/a?b#c":          "http://example.com/a",
		"http://example.com:443/a":             "http://example.com:443/a",
		"https://example.com:80/a":             "https://example.com:80/a",
		"https://example.com/%7e%41%2f%2F":     "https://example.com/~A%2F%2F",
		"https://example.com/a/b/../c/./d":     "https://example.com/a/c/d",
		"https://example.com/a/..":             "https://example.com/",
		"https://example.com/../../a":          "https://example.com/a",
		"https://[::1]:8080/x":                 "https://[::1]:8080/x",
		"https://[::1]:443/x":                  "https://[::1]/x",
		"https://example.com/a%20b":            "https://example.com/a%20b",
		"https://example.com/a b":              "https://example.com/a%20b",
		"https://example.com/v1/auth?x=/../..": "https://example.com/v1/auth",
		"https://example.com/a/.hidden/b..":    "https://example.com/a/.hidden/b..",
	}
	for in, want := range cases {
		if got, err := NormalizeURI(in); err != nil || got != want {
			t.Errorf("NormalizeURI(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "/a", "example.com/a", "ftp://example.com/", "https:///a", "https://u@example.com/", "mailto:a@example.com", "https://example.com/%zz", "https://example.com/%4"} {
		if got, err := NormalizeURI(in); err == nil {
			t.Errorf("NormalizeURI(%q) = %q, want an error", in, got)
		}
	}
}
