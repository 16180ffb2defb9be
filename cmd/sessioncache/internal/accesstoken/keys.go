package accesstoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/big"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// keyLabel starts the input of every key derivation (see the package doc).
const keyLabel = "sessioncache access-token signing key v1"

// p256ScalarInfo is the HKDF info that expands an epoch's seed into the
// material of a P-256 scalar.
const p256ScalarInfo = "P-256 scalar"

// epochKey is the signing key of one epoch.
type epochKey struct {
	epoch  int64
	kid    string
	priv   crypto.Signer // *ecdsa.PrivateKey or ed25519.PrivateKey
	pub    crypto.PublicKey
	header string          // base64url of the protected header {"alg","kid","typ"}
	jwk    jose.JSONWebKey // the public key as the key set publishes it
}

// keyring is what one epoch uses: the keys of epochs e-1, e and e+1, in that
// order, and the key set document that publishes them.
type keyring struct {
	epoch int64
	keys  [3]*epochKey
	jwks  []byte
}

// signing returns the key that signs during the keyring's epoch.
func (r *keyring) signing() *epochKey { return r.keys[1] }

// byKid returns the published key whose kid is kid, or nil.
func (r *keyring) byKid(kid string) *epochKey {
	for _, k := range r.keys {
		if k.kid == kid {
			return k
		}
	}
	return nil
}

// publishes reports whether epoch's key is in the keyring.
func (r *keyring) publishes(epoch int64) bool {
	return epoch >= r.epoch-1 && epoch <= r.epoch+1
}

// epochOf returns floor(t / period) counted from the Unix epoch.
func epochOf(t time.Time, period time.Duration) int64 {
	n, p := t.UnixNano(), int64(period)
	e := n / p
	if n%p < 0 {
		e--
	}
	return e
}

// seed returns seed(e) of the package doc.
func seed(secret []byte, alg string, epoch int64) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(keyLabel))
	m.Write([]byte{0})
	m.Write([]byte(alg))
	m.Write([]byte{0})
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], uint64(epoch))
	m.Write(e[:])
	return m.Sum(nil)
}

// deriveKey returns the signing key of epoch for alg (ES256 or EdDSA, as New
// checked), derived from secret. Nothing in it can fail for these: an error
// is a bug, and panics.
func deriveKey(secret []byte, alg jose.SignatureAlgorithm, epoch int64) *epochKey {
	s := seed(secret, string(alg), epoch)
	var priv crypto.Signer
	switch alg {
	case jose.EdDSA:
		priv = ed25519.NewKeyFromSeed(s)
	case jose.ES256:
		x, err := hkdf.Expand(sha256.New, s, p256ScalarInfo, 48)
		must(err)
		n := elliptic.P256().Params().N
		d := new(big.Int).SetBytes(x)
		d.Mod(d, new(big.Int).Sub(n, big.NewInt(1)))
		d.Add(d, big.NewInt(1))
		k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d.FillBytes(make([]byte, 32)))
		must(err)
		priv = k
	default:
		panic(fmt.Sprintf("accesstoken: unsupported algorithm %q", alg))
	}
	k := &epochKey{epoch: epoch, priv: priv, pub: priv.Public()}
	k.jwk = jose.JSONWebKey{Key: k.pub, Algorithm: string(alg), Use: "sig"}
	tp, err := k.jwk.Thumbprint(crypto.SHA256)
	must(err)
	k.kid = base64.RawURLEncoding.EncodeToString(tp)
	k.jwk.KeyID = k.kid
	h, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{string(alg), k.kid, tokenType})
	must(err)
	k.header = base64.RawURLEncoding.EncodeToString(h)
	return k
}

// newKeyring derives the keyring of epoch, reusing the keys of prev that it
// shares (prev may be nil).
func newKeyring(secret []byte, alg jose.SignatureAlgorithm, epoch int64, prev *keyring) *keyring {
	r := &keyring{epoch: epoch}
	for i := range r.keys {
		e := epoch - 1 + int64(i)
		if prev != nil && prev.publishes(e) {
			r.keys[i] = prev.keys[e-prev.epoch+1]
			continue
		}
		r.keys[i] = deriveKey(secret, alg, e)
	}
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, len(r.keys))}
	for i, k := range r.keys {
		set.Keys[i] = k.jwk
	}
	b, err := json.Marshal(set)
	must(err)
	r.jwks = b
	return r
}

// must panics on an error that cannot happen.
func must(err error) {
	if err != nil {
		panic("accesstoken: " + err.Error())
	}
}
