package accesstoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"
)

// fuzzFixture is what the fuzz targets share: an Authority of each
// algorithm on a fixed clock, and valid tokens of theirs. Fuzzing runs
// workers in processes of their own, so the tokens must be the same in every
// process: they carry fixed claims and are signed deterministically (Ed25519,
// and ECDSA as RFC 6979 has it), where Issue would pick a random jti.
type fuzzFixture struct {
	auths  []*Authority
	issued map[string]bool
}

var (
	fixtureOnce sync.Once
	fixture     fuzzFixture
)

func getFixture(t testing.TB) *fuzzFixture {
	fixtureOnce.Do(func() {
		fixture.issued = map[string]bool{}
		c := newClock(t0)
		for _, alg := range algs {
			a := newAuthority(t, testConfig(alg, c))
			fixture.auths = append(fixture.auths, a)
			k := a.keyring(t0).signing()
			for _, sub := range []string{"user-1", "ü\"\\\x01", strings.Repeat("x", 300)} {
				claims := goodClaims(a)
				claims["sub"] = sub
				tok := deterministicToken(t, k, goodHeader(a, k), claims)
				if _, err := a.Verify(tok); err != nil {
					t.Fatal(err)
				}
				fixture.issued[tok] = true
			}
		}
	})
	return &fixture
}

// deterministicToken signs header and claims with k, the same way every
// time.
func deterministicToken(t testing.TB, k *epochKey, header, claims map[string]any) string {
	input := base64.RawURLEncoding.EncodeToString(mustJSON(t, header)) + "." + base64.RawURLEncoding.EncodeToString(mustJSON(t, claims))
	var sig []byte
	switch priv := k.priv.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(priv, []byte(input))
	case *ecdsa.PrivateKey:
		digest := sha256.Sum256([]byte(input))
		der, err := priv.Sign(nil, digest[:], crypto.SHA256) // nil: RFC 6979
		if err != nil {
			t.Fatal(err)
		}
		var rs struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(der, &rs); err != nil {
			t.Fatal(err)
		}
		if rs.S.Cmp(p256HalfOrder) > 0 {
			rs.S.Sub(p256Order, rs.S)
		}
		sig = append(rs.R.FillBytes(make([]byte, 32)), rs.S.FillBytes(make([]byte, 32))...)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// FuzzVerify checks that Verify never panics, refuses with exactly one of
// its sentinel errors, and accepts no input but the valid tokens it started
// from: a mutation of a valid token, however small, is refused.
func FuzzVerify(f *testing.F) {
	fx := getFixture(f)
	for tok := range fx.issued {
		f.Add(tok)
		f.Add(tok[:len(tok)-1])
		f.Add(tok + "A")
		f.Add(strings.Replace(tok, ".", "..", 1))
	}
	f.Add("sct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		for _, a := range fx.auths {
			c, err := a.Verify(in)
			if err == nil {
				if !fx.issued[in] {
					t.Fatalf("%s accepts a token it did not issue: %q", a.Alg(), in)
				}
				if c.Subject == "" || c.SessionID == "" {
					t.Fatalf("accepted with empty claims: %+v", c)
				}
				continue
			}
			n := 0
			for _, s := range []error{ErrMalformed, ErrInvalid, ErrExpired} {
				if errors.Is(err, s) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error %v wraps %d sentinels, want 1", err, n)
			}
		}
	})
}

// FuzzIssueClaims checks that whatever strings Issue accepts come back
// unchanged from Verify and from a plain JSON decoder reading the payload.
func FuzzIssueClaims(f *testing.F) {
	fx := getFixture(f)
	f.Add("user-1", "sess-1", "web")
	f.Add("\"\\/\b\f\n\r\t\x00\x1f\x7f", "\u2028\u2029", "<script>&amp;")
	f.Add("\xff", "s", "c")
	f.Fuzz(func(t *testing.T, sub, sid, client string) {
		for _, a := range fx.auths {
			tok, c, err := a.Issue(sub, sid, client, "", t0.Add(time.Hour))
			if err != nil {
				if tok != "" {
					t.Fatal("a token with an error")
				}
				continue
			}
			got, err := a.Verify(tok)
			if err != nil {
				t.Fatalf("Verify of an issued token: %v", err)
			}
			if got != c || c.Subject != sub || c.SessionID != sid || c.ClientID != client {
				t.Fatalf("claims %+v, Verify %+v; want sub %q sid %q client_id %q", c, got, sub, sid, client)
			}
			_, payload, _ := segments(t, tok)
			b, _ := json.Marshal(payload)
			var p struct {
				Sub      string `json:"sub"`
				Sid      string `json:"sid"`
				ClientID string `json:"client_id"`
			}
			if err := json.Unmarshal(b, &p); err != nil || p.Sub != sub || p.Sid != sid || p.ClientID != client {
				t.Fatalf("payload %s read by encoding/json: %+v, %v", b, p, err)
			}
		}
	})
}
