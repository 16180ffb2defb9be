package accesstoken

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// refusal is a token Verify must refuse, and the reason it must give (one
// of the errors in token.go, each wrapping one sentinel).
type refusal struct {
	name string
	tok  string
	want error
}

// TestVerifyRefuses presents tokens that must not verify, each with the
// error it must get. Every case runs on a fresh Authority (so no cached
// acceptance helps it) and checks that the error quotes no part of the token.
func TestVerifyRefuses(t *testing.T) {
	for _, alg := range algs {
		t.Run("alg="+alg, func(t *testing.T) {
			c := newClock(t0)
			a := newAuthority(t, testConfig(alg, c))
			k := a.keyring(c.Now()).signing()
			good, _ := issue(t, a)
			parts := strings.Split(good, ".")
			claims := func(edit func(map[string]any)) map[string]any {
				m := goodClaims(a)
				edit(m)
				return m
			}
			header := func(edit func(map[string]any)) map[string]any {
				m := goodHeader(a, k)
				edit(m)
				return m
			}
			otherAlg := map[string]string{ES256: EdDSA, EdDSA: ES256}[alg]
			oc := testConfig(otherAlg, c)
			oc.Secret = testSecret
			otherAlgTok, _ := issue(t, newAuthority(t, oc))
			os := testConfig(alg, c)
			os.Secret = otherSecret
			foreign := newAuthority(t, os)
			foreignKey := foreign.keyring(c.Now()).signing()
			foreignTok, _ := issue(t, foreign)
			sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
			another, _, err := a.Issue("user-2", "sess-1", "web", "", t0.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}

			cases := []refusal{
				{"alg none", forge(t, nil, header(func(h map[string]any) { h["alg"] = "none" }), goodClaims(a)), errNotJWS},
				{"alg none, kid dropped", forge(t, nil, map[string]any{"alg": "none", "typ": "at+jwt"}, goodClaims(a)), errNotJWS},
				{"alg None", forge(t, nil, header(func(h map[string]any) { h["alg"] = "None" }), goodClaims(a)), errNotJWS},
				{"the other algorithm, same secret", otherAlgTok, errNotJWS},
				{"alg of the other algorithm, our signature", forge(t, k, header(func(h map[string]any) { h["alg"] = otherAlg }), goodClaims(a)), errNotJWS},
				{"typ JWT", forge(t, k, header(func(h map[string]any) { h["typ"] = "JWT" }), goodClaims(a)), errType},
				{"typ missing", forge(t, k, header(func(h map[string]any) { delete(h, "typ") }), goodClaims(a)), errHeader},
				{"typ not a string", forge(t, k, header(func(h map[string]any) { h["typ"] = 1 }), goodClaims(a)), errType},
				{"typ at+jwt;v=2", forge(t, k, header(func(h map[string]any) { h["typ"] = "at+jwt;v=2" }), goodClaims(a)), errType},
				{"crit b64", forge(t, k, header(func(h map[string]any) { h["crit"] = []string{"b64"}; h["b64"] = false }), goodClaims(a)), errHeader},
				{"embedded jwk", forge(t, k, header(func(h map[string]any) { h["jwk"] = k.jwk }), goodClaims(a)), errHeader},
				{"cnf without jkt", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["cnf"] = map[string]any{"x5t#S256": testJKT} })), errConfirmation},
				{"cnf.jkt not a thumbprint", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["cnf"] = map[string]any{"jkt": "short"} })), errConfirmation},
				{"cnf.jkt a number", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["cnf"] = map[string]any{"jkt": 7} })), errClaimsJSON},
				{"cnf a string", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["cnf"] = testJKT })), errClaimsJSON},
				{"x5c", forge(t, k, header(func(h map[string]any) { h["x5c"] = []string{selfSignedCert(t)} }), goodClaims(a)), errHeader},
				{"another header parameter", forge(t, k, header(func(h map[string]any) { h["cty"] = "JWT" }), goodClaims(a)), errHeader},
				{"jku", forge(t, k, header(func(h map[string]any) { h["jku"] = "https://evil.example/jwks" }), goodClaims(a)), errHeader},
				{"kid missing", forge(t, k, header(func(h map[string]any) { delete(h, "kid") }), goodClaims(a)), errUnknownKid},
				{"unknown kid", forge(t, foreignKey, header(func(h map[string]any) { h["kid"] = foreignKey.kid }), goodClaims(a)), errUnknownKid},
				{"our kid, another key", forge(t, foreignKey, goodHeader(a, k), goodClaims(a)), errSignature},
				{"a token of another secret", foreignTok, errUnknownKid},
				{"tampered payload", parts[0] + "." + base64.RawURLEncoding.EncodeToString(mustJSON(t, claims(func(m map[string]any) { m["sub"] = "admin" }))) + "." + parts[2], errSignature},
				{"tampered header", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"`+alg+`","kid":"`+k.kid+`","typ":"AT+JWT"}`)) + "." + parts[1] + "." + parts[2], errSignature},
				{"signature of another token", strings.Join(parts[:2], ".") + "." + strings.Split(another, ".")[2], errSignature},
				{"signature truncated", parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig[:63]), errSignature},
				{"signature empty", parts[0] + "." + parts[1] + ".", errSignature},
				{"wrong iss", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["iss"] = "https://evil.example" })), errIssuer},
				{"iss with trailing slash", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["iss"] = testIssuer + "/" })), errIssuer},
				{"no iss", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { delete(m, "iss") })), errIssuer},
				{"wrong aud", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["aud"] = "https://other.example" })), errAudience},
				{"aud list without ours", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["aud"] = []string{"x", "y"} })), errAudience},
				{"no aud", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { delete(m, "aud") })), errAudience},
				{"ISS spelled in capitals", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["ISS"] = m["iss"]; delete(m, "iss") })), errIssuer},
				{"no exp", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { delete(m, "exp") })), errMissingClaim},
				{"no iat", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { delete(m, "iat") })), errMissingClaim},
				{"no sub", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { delete(m, "sub") })), errMissingClaim},
				{"empty sid", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["sid"] = "" })), errMissingClaim},
				{"no client_id", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { delete(m, "client_id") })), errMissingClaim},
				{"no jti", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { delete(m, "jti") })), errMissingClaim},
				{"sub a number", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["sub"] = 7 })), errClaimsJSON},
				{"exp a string", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["exp"] = "soon" })), errClaimsJSON},
				{"claims an array", forge(t, k, goodHeader(a, k), []any{goodClaims(a)}), errClaimsJSON},
				{"claims not JSON", forge(t, k, goodHeader(a, k), []byte("not json")), errClaimsJSON},
				{"iat in the future", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["iat"] = t0.Add(Leeway + time.Second).Unix() })), errFutureIat},
				{"expired", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["exp"] = t0.Unix() })), errExpired},
				{"expired long ago", forge(t, k, goodHeader(a, k), claims(func(m map[string]any) { m["iat"], m["exp"] = t0.Unix()-3600, t0.Unix()-3000 })), errExpired},
				{"refresh token", "sct_" + strings.Repeat("A", 60), errNotCompact},
				{"empty", "", errNotCompact},
				{"garbage", "hello, world", errNotCompact},
				{"two segments", parts[0] + "." + parts[1], errNotCompact},
				{"four segments", good + ".AAAA", errNotCompact},
				{"empty header", "." + parts[1] + "." + parts[2], errNotCompact},
				{"empty payload", parts[0] + ".." + parts[2], errNotCompact},
				{"padding", good + "==", errNotCompact},
				{"standard base64", strings.NewReplacer("-", "+", "_", "/").Replace(good) + "+", errNotCompact},
				{"spaces", " " + good, errNotCompact},
				{"JSON serialization", `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`, errNotCompact},
				{"JWE compact", parts[0] + "." + parts[1] + "." + parts[2] + ".AAAA.AAAA", errNotCompact},
				{"non-canonical base64 of the signature", parts[0] + "." + parts[1] + "." + bumpLast(parts[2]), errNotCompact},
				{"huge", strings.Repeat("A", 1<<20) + "." + parts[1] + "." + parts[2], errTooLong},
				{"just over the limit", parts[0] + "." + parts[1] + strings.Repeat("A", MaxTokenLen+1-len(good)) + "." + parts[2], errTooLong},
			}
			cases = append(cases, hs256Cases(t, a, k)...)
			if alg == ES256 {
				cases = append(cases, refusal{"high s", parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(highS(sig)), errSignature})
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					fresh := newAuthority(t, testConfig(alg, c))
					got, err := fresh.Verify(tc.tok)
					if !errors.Is(err, tc.want) {
						t.Fatalf("Verify: %v, want %v", err, tc.want)
					}
					n := 0
					for _, sentinel := range []error{ErrMalformed, ErrInvalid, ErrExpired} {
						if errors.Is(err, sentinel) {
							n++
						}
					}
					if n != 1 {
						t.Errorf("the error wraps %d of ErrMalformed, ErrInvalid and ErrExpired, want 1", n)
					}
					if got != (Claims{}) {
						t.Errorf("claims with an error: %+v", got)
					}
					for _, p := range strings.Split(tc.tok, ".") {
						if len(p) >= 8 && strings.Contains(err.Error(), p[:8]) {
							t.Errorf("the error %q quotes the token", err)
						}
					}
				})
			}
			// The good token itself verifies: the cases above differ from
			// it only by what they test.
			if _, err := a.Verify(good); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// hs256Cases are the classic key confusion: HS256 tokens whose HMAC key is
// the public key in the forms a careless verifier might use.
func hs256Cases(t *testing.T, a *Authority, k *epochKey) []refusal {
	header := map[string]any{"alg": "HS256", "kid": k.kid, "typ": "at+jwt"}
	der, err := x509.MarshalPKIXPublicKey(k.pub)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]byte{
		"JWKS":      a.JWKS(),
		"JWK":       mustJSON(t, k.jwk),
		"PEM":       pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		"DER":       der,
		"kid":       []byte(k.kid + k.kid),
		"raw point": rawPublic(k.pub),
	}
	var out []refusal
	for name, key := range keys {
		out = append(out, refusal{"HS256 keyed with the " + name, forge(t, key, header, goodClaims(a)), errNotJWS})
	}
	return out
}

// rawPublic returns a public key's bytes: the uncompressed point of a P-256
// key, the 32 bytes of an Ed25519 key.
func rawPublic(pub any) []byte {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		b, _ := p.Bytes()
		return b
	case ed25519.PublicKey:
		return p
	}
	panic("rawPublic: unexpected key type")
}

// bumpLast changes the unused low bits of a segment's last character: the
// same bytes, spelled otherwise.
func bumpLast(seg string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + string(alphabet[last|1])
}

// highS returns the other valid ECDSA signature of the same message:
// (r, n - s).
func highS(sig []byte) []byte {
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(p256Order, s)
	out := append([]byte(nil), sig[:32]...)
	return append(out, s.FillBytes(make([]byte, 32))...)
}

// TestHighSSignatureIsValidECDSA shows that the high-s twin refused above is
// a signature go-jose accepts on its own: the refusal is this package's.
func TestHighSSignatureIsValidECDSA(t *testing.T) {
	c := newClock(t0)
	a := newAuthority(t, testConfig(ES256, c))
	tok, _ := issue(t, a)
	parts := strings.Split(tok, ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	twin := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(highS(sig))
	jws, err := jose.ParseSignedCompact(twin, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify(a.keyring(c.Now()).signing().pub); err != nil {
		t.Fatalf("go-jose refuses the high-s twin (%v): the test no longer shows anything", err)
	}
	if _, err := a.Verify(twin); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Verify: %v, want ErrInvalid", err)
	}
}

// TestMalformedIsCheap checks that a refresh token, garbage and huge input
// are refused without allocating (so without parsing).
func TestMalformedIsCheap(t *testing.T) {
	a := newAuthority(t, testConfig(ES256, newClock(t0)))
	for _, in := range []string{"sct_" + strings.Repeat("A", 60), strings.Repeat("x", 10<<20), "a.b", "not a token at all"} {
		allocs := testing.AllocsPerRun(10, func() {
			if _, err := a.Verify(in); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Verify: %v, want ErrMalformed", err)
			}
		})
		if allocs != 0 {
			t.Errorf("%d allocations to refuse input of %d bytes", int(allocs), len(in))
		}
	}
}

// selfSignedCert returns a certificate, standard base64 of DER, as x5c
// carries it.
func selfSignedCert(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

// TestVerifyAccepts checks what RFC 9068 and RFC 7519 allow a token to
// spell otherwise: typ in any case or as a media type, aud as a list.
func TestVerifyAccepts(t *testing.T) {
	for _, alg := range algs {
		c := newClock(t0)
		a := newAuthority(t, testConfig(alg, c))
		k := a.keyring(t0).signing()
		for name, edit := range map[string]func(h, p map[string]any){
			"typ AT+JWT":             func(h, p map[string]any) { h["typ"] = "AT+JWT" },
			"typ application/at+jwt": func(h, p map[string]any) { h["typ"] = "application/at+jwt" },
			"typ Application/AT+JWT": func(h, p map[string]any) { h["typ"] = "Application/AT+JWT" },
			"aud a list with ours":   func(h, p map[string]any) { p["aud"] = []string{"other", testAudience} },
			"iat within the leeway":  func(h, p map[string]any) { p["iat"] = t0.Add(Leeway).Unix() },
			"exp a second ahead":     func(h, p map[string]any) { p["exp"] = t0.Add(time.Second).Unix() },
		} {
			t.Run("alg="+alg+"/"+name, func(t *testing.T) {
				h, p := goodHeader(a, k), goodClaims(a)
				edit(h, p)
				if _, err := a.Verify(forge(t, k, h, p)); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
