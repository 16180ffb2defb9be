package accesstoken

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

var (
	testSecret  = bytes.Repeat([]byte("s"), 32)
	otherSecret = bytes.Repeat([]byte("o"), 32)
	algs        = []string{ES256, EdDSA}
	// t0 is a moment in the middle of a 24h epoch.
	t0 = time.Date(2031, 3, 14, 12, 0, 0, 0, time.UTC)
)

const (
	testIssuer   = "https://auth.example.com"
	testAudience = "https://api.example.com"
)

// clock is a settable clock for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *clock) Add(d time.Duration) { c.Set(c.Now().Add(d)) }

// testConfig is a valid configuration for alg with the clock c.
func testConfig(alg string, c *clock) Config {
	return Config{
		Secret:   testSecret,
		Alg:      alg,
		Issuer:   testIssuer,
		Audience: testAudience,
		Now:      c.Now,
	}
}

func newAuthority(t testing.TB, cfg Config) *Authority {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// issue issues a token for a session whose deadline is far away.
func issue(t testing.TB, a *Authority) (string, Claims) {
	t.Helper()
	tok, c, err := a.Issue("user-1", "sess-1", "web", "", a.now().Add(30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok, c
}

// segments splits a compact JWS and decodes its parts; it checks nothing
// of this package's and uses only the standard library.
func segments(t testing.TB, tok string) (header, payload map[string]any, sig []byte) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%d segments, want 3", len(parts))
	}
	dec := func(s string) []byte {
		b, err := base64.RawURLEncoding.Strict().DecodeString(s)
		if err != nil {
			t.Fatalf("segment is not base64url: %v", err)
		}
		return b
	}
	for i, v := range []*map[string]any{&header, &payload} {
		d := json.NewDecoder(bytes.NewReader(dec(parts[i])))
		d.UseNumber()
		if err := d.Decode(v); err != nil {
			t.Fatalf("segment %d is not a JSON object: %v", i, err)
		}
	}
	return header, payload, dec(parts[2])
}

// forge signs header and payload (marshalled to JSON unless they are
// []byte) with key: a *epochKey's private key, or []byte for HS256.
func forge(t testing.TB, key any, header, payload any) string {
	t.Helper()
	enc := func(v any) string {
		b, ok := v.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(header) + "." + enc(payload)
	var sig []byte
	switch k := key.(type) {
	case []byte:
		m := hmac.New(sha256.New, k)
		m.Write([]byte(input))
		sig = m.Sum(nil)
	case *epochKey:
		var err error
		if sig, err = sign(k.priv, []byte(input), nil); err != nil {
			t.Fatal(err)
		}
	case nil:
	default:
		t.Fatalf("forge: key of type %T", key)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// goodClaims are claims a token of a's may carry, valid at a's now.
func goodClaims(a *Authority) map[string]any {
	now := a.now().Unix()
	return map[string]any{
		"iss": a.issuer, "sub": "user-1", "aud": a.audience,
		"exp": now + 60, "iat": now, "jti": "AAAAAAAAAAAAAAAAAAAAAA",
		"client_id": "web", "sid": "sess-1",
	}
}

// goodHeader is the header of a token signed by k.
func goodHeader(a *Authority, k *epochKey) map[string]any {
	return map[string]any{"alg": string(a.alg), "kid": k.kid, "typ": "at+jwt"}
}

// parseJWKS parses a key set with go-jose.
func parseJWKS(t testing.TB, b []byte) jose.JSONWebKeySet {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		t.Fatalf("JWKS: %v", err)
	}
	return set
}

// kids returns the key ids of a key set.
func kids(t testing.TB, b []byte) []string {
	t.Helper()
	var out []string
	for _, k := range parseJWKS(t, b).Keys {
		out = append(out, k.KeyID)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// kidOf returns the kid in a token's header.
func kidOf(t testing.TB, tok string) string {
	t.Helper()
	h, _, _ := segments(t, tok)
	kid, _ := h["kid"].(string)
	return kid
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
