package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// t0 is the tests' fixed time.
var t0 = time.Unix(1_900_000_000, 0)

const (
	testURI    = "https://app.example.com/oauth2/token"
	testMethod = "POST"
)

// testKey is a client's key pair and the algorithm it signs with.
type testKey struct {
	alg  string
	priv crypto.Signer
}

var (
	keysOnce sync.Once
	keys     map[string]testKey
)

// keysByAlg returns a key of each kind the tests use, made once.
func keysByAlg(t testing.TB) map[string]testKey {
	keysOnce.Do(func() {
		p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		_, ed, _ := ed25519.GenerateKey(rand.Reader)
		rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		keys = map[string]testKey{
			"ES256": {"ES256", p256},
			"ES384": {"ES384", p384},
			"EdDSA": {"EdDSA", ed},
			"RS256": {"RS256", rsa2048},
			"PS256": {"PS256", rsa2048},
		}
	})
	return keys
}

// publicJWK is the JSON of k's public key.
func publicJWK(t testing.TB, pub crypto.PublicKey) map[string]any {
	b, err := json.Marshal(jose.JSONWebKey{Key: pub})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

// goodHeader is a valid proof header for k.
func goodHeader(t testing.TB, k testKey) map[string]any {
	return map[string]any{"typ": "dpop+jwt", "alg": k.alg, "jwk": publicJWK(t, k.priv.Public())}
}

// goodClaims are valid claims for testMethod and testURI at t0.
func goodClaims() map[string]any {
	var jti [12]byte
	rand.Read(jti[:])
	return map[string]any{"jti": base64.RawURLEncoding.EncodeToString(jti[:]), "htm": testMethod, "htu": testURI, "iat": t0.Unix()}
}

// sign makes a compact JWS of header and claims, signed with k by the
// algorithm in header["alg"] as RFC 7518 has it (or by k.alg).
func sign(t testing.TB, k testKey, header, claims map[string]any) string {
	t.Helper()
	input := b64JSON(t, header) + "." + b64JSON(t, claims)
	alg, _ := header["alg"].(string)
	if alg == "" {
		alg = k.alg
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(signature(t, alg, k.priv, []byte(input)))
}

func b64JSON(t testing.TB, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// signature signs input by alg with priv.
func signature(t testing.TB, alg string, priv crypto.Signer, input []byte) []byte {
	t.Helper()
	switch alg {
	case "ES256", "ES384":
		h := crypto.SHA256
		if alg == "ES384" {
			h = crypto.SHA384
		}
		d := digest(h, input)
		k := priv.(*ecdsa.PrivateKey)
		r, s, err := ecdsa.Sign(rand.Reader, k, d)
		if err != nil {
			t.Fatal(err)
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		out := make([]byte, 2*n)
		r.FillBytes(out[:n])
		s.FillBytes(out[n:])
		return out
	case "EdDSA":
		return ed25519.Sign(priv.(ed25519.PrivateKey), input)
	case "RS256":
		sig, err := rsa.SignPKCS1v15(rand.Reader, priv.(*rsa.PrivateKey), crypto.SHA256, digest(crypto.SHA256, input))
		if err != nil {
			t.Fatal(err)
		}
		return sig
	case "PS256":
		sig, err := rsa.SignPSS(rand.Reader, priv.(*rsa.PrivateKey), crypto.SHA256, digest(crypto.SHA256, input), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		if err != nil {
			t.Fatal(err)
		}
		return sig
	case "HS256":
		m := hmac.New(sha256.New, []byte("a shared secret of thirty-two bytes!"))
		m.Write(input)
		return m.Sum(nil)
	case "none":
		return nil
	}
	t.Fatalf("no signer for %s", alg)
	return nil
}

func digest(h crypto.Hash, input []byte) []byte {
	switch h {
	case crypto.SHA384:
		s := sha512.Sum384(input)
		return s[:]
	}
	s := sha256.Sum256(input)
	return s[:]
}

// verifierAt is a Verifier whose clock stands at *now.
func verifierAt(now *time.Time, nonces *Nonces) *Verifier {
	return NewVerifier(Config{Now: func() time.Time { return *now }, Nonces: nonces})
}

// request is what the tests' proofs are for.
func request() Request { return Request{Method: testMethod, URI: testURI} }

// Thumbprint computes the RFC 7638 thumbprint of pub from its JWK: the
// required members in lexicographic order, no whitespace, SHA-256,
// base64url. Written out here, not go-jose's, to check Verify's.
func Thumbprint(t testing.TB, pub crypto.PublicKey) string {
	j := publicJWK(t, pub)
	var members []string
	switch j["kty"] {
	case "EC":
		members = []string{"crv", "kty", "x", "y"}
	case "OKP":
		members = []string{"crv", "kty", "x"}
	case "RSA":
		members = []string{"e", "kty", "n"}
	}
	s := "{"
	for i, m := range members {
		if i > 0 {
			s += ","
		}
		s += `"` + m + `":"` + j[m].(string) + `"`
	}
	sum := sha256.Sum256([]byte(s + "}"))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
