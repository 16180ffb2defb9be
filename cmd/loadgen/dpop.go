package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/sessioncache/sessioncache/bench"
)

// newDPoPClient makes a DPoP key (ES256) and signs proofs with it, as a
// client library would: with go-jose, the jwk embedded, typ dpop+jwt, a
// random jti, iat now, and ath for an access token.
func newDPoPClient() (*bench.DPoPClient, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: priv}, (&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt"))
	if err != nil {
		return nil, err
	}
	tp, err := (&jose.JSONWebKey{Key: priv.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return &bench.DPoPClient{JKT: base64.RawURLEncoding.EncodeToString(tp), Proof: func(method, uri, accessToken string) (string, error) {
		var jti [16]byte
		rand.Read(jti[:])
		c := map[string]any{"jti": base64.RawURLEncoding.EncodeToString(jti[:]), "htm": method, "htu": uri, "iat": time.Now().Unix()}
		if accessToken != "" {
			sum := sha256.Sum256([]byte(accessToken))
			c["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
		}
		b, _ := json.Marshal(c)
		jws, err := signer.Sign(b)
		if err != nil {
			return "", err
		}
		return jws.CompactSerialize()
	}}, nil
}

// The original request a gateway asks /v1/auth about, as nginx configured
// as the service's README says passes it; proofs are made for it.
const (
	dpopOriginalURI  = "https://app.example.com/orders"
	dpopOriginalPath = "/orders"
)

// setDPoPAuth sets on a forward-auth request the DPoP-bound access token,
// a proof of d's key for the original request, and what nginx passes of
// that request.
func setDPoPAuth(req *http.Request, d *bench.DPoPClient, access string) error {
	p, err := d.Proof(http.MethodGet, dpopOriginalURI, access)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "DPoP "+access)
	req.Header.Set("DPoP", p)
	req.Header.Set("X-Original-Method", http.MethodGet)
	req.Header.Set("X-Original-Uri", dpopOriginalPath)
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Forwarded-Host", "app.example.com")
	return nil
}
