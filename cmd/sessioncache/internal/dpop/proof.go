package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Limits and defaults.
const (
	// MaxProofLen is the longest DPoP header read: a longer one is refused
	// before it is parsed.
	MaxProofLen = 8 << 10
	// MinRSABits and MaxRSABits bound the RSA keys accepted.
	MinRSABits = 2048
	MaxRSABits = 8192
	// MaxJTILen bounds the jti claim.
	MaxJTILen = 256
	// DefaultWindow is how old a proof's iat may be.
	DefaultWindow = 60 * time.Second
	// DefaultLeeway is how far in the future a proof's iat may be.
	DefaultLeeway = 5 * time.Second
)

// Algorithms are the proof algorithms accepted: every asymmetric JWS
// algorithm go-jose verifies, never "none" or an HMAC. The value of RFC
// 8414's dpop_signing_alg_values_supported.
var Algorithms = []string{"ES256", "ES384", "ES512", "EdDSA", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512"}

var joseAlgorithms = func() []jose.SignatureAlgorithm {
	out := make([]jose.SignatureAlgorithm, len(Algorithms))
	for i, a := range Algorithms {
		out[i] = jose.SignatureAlgorithm(a)
	}
	return out
}()

// ErrInvalid is every refusal of a proof: invalid_dpop_proof (RFC 9449
// section 7.1). An error wraps it with a short reason (Reason) that never
// holds any part of the proof.
var ErrInvalid = errors.New("dpop: invalid proof")

// ErrUseNonce refuses a proof, valid otherwise, whose nonce is missing or
// no longer current: use_dpop_nonce (RFC 9449 section 8). The client
// retries with a new proof carrying the nonce the answer gives.
var ErrUseNonce = errors.New("dpop: a current server nonce is required")

// invalid is a refusal of a proof, with its reason.
type invalid string

func (e invalid) Error() string        { return ErrInvalid.Error() + ": " + string(e) }
func (e invalid) Is(target error) bool { return target == ErrInvalid }

// Reasons of refusals, for metrics and error descriptions.
const (
	ReasonMissing   = "missing"     // no DPoP header
	ReasonMultiple  = "multiple"    // more than one DPoP header field
	ReasonTooLong   = "too_long"    // longer than MaxProofLen
	ReasonMalformed = "malformed"   // not a compact JWS of an accepted algorithm
	ReasonType      = "type"        // typ is not dpop+jwt
	ReasonKey       = "key"         // jwk missing, not a public key of an accepted kind and size
	ReasonSignature = "signature"   // the signature does not verify with the jwk
	ReasonClaims    = "claims"      // jti, htm, htu or iat missing or of the wrong type
	ReasonMethod    = "htm"         // htm is not the request's method
	ReasonURI       = "htu"         // htu is not the request's URI
	ReasonIssuedAt  = "iat"         // iat outside the window
	ReasonATH       = "ath"         // ath missing or not the access token's hash
	ReasonReplayed  = "replayed"    // jti seen before in the window
	ReasonKeyBound  = "key_binding" // another key than the token's or session's
)

// Reason returns the reason of a refusal of Verify or Replays.Check, or ""
// for another error.
func Reason(err error) string {
	var e invalid
	if errors.As(err, &e) {
		return string(e)
	}
	if errors.Is(err, ErrUseNonce) {
		return "use_nonce"
	}
	return ""
}

// Refuse returns the refusal for reason, for a check made outside this
// package (ReasonKeyBound).
func Refuse(reason string) error { return invalid(reason) }

// Config configures a Verifier. Its zero value is valid.
type Config struct {
	// Window is how long after its iat a proof is accepted. Default 60s.
	Window time.Duration
	// Leeway is how long before its iat a proof is accepted. Default 5s.
	Leeway time.Duration
	// Now is the clock: Clock.Now, so that every instance judges alike.
	// Default time.Now.
	Now func() time.Time
	// Nonces, if set, requires every proof to carry a nonce it issued.
	Nonces *Nonces
}

// Verifier checks proofs. It is safe for concurrent use.
type Verifier struct {
	window, leeway time.Duration
	now            func() time.Time
	nonces         *Nonces
}

// NewVerifier returns a Verifier with cfg's defaults applied.
func NewVerifier(cfg Config) *Verifier {
	v := &Verifier{window: cfg.Window, leeway: cfg.Leeway, now: cfg.Now, nonces: cfg.Nonces}
	if v.window <= 0 {
		v.window = DefaultWindow
	}
	if v.leeway <= 0 {
		v.leeway = DefaultLeeway
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v
}

// ReplayTTL is how long the replay cache must remember a jti: as long as
// its proof can be accepted, Window + Leeway, and a second for the clocks
// of instances that differ by a little.
func (v *Verifier) ReplayTTL() time.Duration { return v.window + v.leeway + time.Second }

// Nonces returns the nonces the Verifier requires, or nil.
func (v *Verifier) Nonces() *Nonces { return v.nonces }

// Request is what a proof must match.
type Request struct {
	// Method is the HTTP method of the request the proof came with (for
	// forward auth: the original request's).
	Method string
	// URI is the request's absolute URI in the form NormalizeURI returns.
	URI string
	// AccessToken is the access token presented with the proof, if any:
	// then the proof's ath must be its hash.
	AccessToken string
}

// Proof is what a verified proof says.
type Proof struct {
	// JKT is the RFC 7638 thumbprint (SHA-256, base64url) of its key.
	JKT string
	// JTI is its unique id.
	JTI      string
	IssuedAt time.Time
}

// claims are a proof's claims as Verify decodes them.
type claims struct {
	JTI   *string          `json:"jti"`
	HTM   *string          `json:"htm"`
	HTU   *string          `json:"htu"`
	IAT   *jwt.NumericDate `json:"iat"`
	ATH   *string          `json:"ath"`
	Nonce *string          `json:"nonce"`
}

// Verify checks the DPoP header fields of a request (all of them:
// r.Header.Values("DPoP")) against req, by RFC 9449 section 4.3 but for
// the jti's replay (Replays.Check). Errors wrap ErrInvalid or ErrUseNonce.
func (v *Verifier) Verify(fields []string, req Request) (Proof, error) {
	switch {
	case len(fields) == 0:
		return Proof{}, invalid(ReasonMissing)
	case len(fields) > 1:
		return Proof{}, invalid(ReasonMultiple)
	case len(fields[0]) > MaxProofLen:
		return Proof{}, invalid(ReasonTooLong)
	}
	raw := strings.TrimSpace(fields[0])
	if raw == "" {
		return Proof{}, invalid(ReasonMissing)
	}
	if strings.Count(raw, ".") != 2 {
		return Proof{}, invalid(ReasonMalformed)
	}
	jws, err := jose.ParseSignedCompact(raw, joseAlgorithms)
	if err != nil || len(jws.Signatures) != 1 {
		return Proof{}, invalid(ReasonMalformed)
	}
	h := &jws.Signatures[0].Header
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, "dpop+jwt") {
		return Proof{}, invalid(ReasonType)
	}
	jwk := h.JSONWebKey
	if jwk == nil || !acceptedKey(jwk) {
		return Proof{}, invalid(ReasonKey)
	}
	body, err := jws.Verify(jwk)
	if err != nil {
		return Proof{}, invalid(ReasonSignature)
	}
	var c claims
	if err := josejson.Unmarshal(body, &c); err != nil || c.JTI == nil || c.HTM == nil || c.HTU == nil || c.IAT == nil ||
		*c.JTI == "" || len(*c.JTI) > MaxJTILen {
		return Proof{}, invalid(ReasonClaims)
	}
	if *c.HTM != req.Method {
		return Proof{}, invalid(ReasonMethod)
	}
	if htu, err := NormalizeURI(*c.HTU); err != nil || htu != req.URI {
		return Proof{}, invalid(ReasonURI)
	}
	now := v.now()
	iat := c.IAT.Time()
	if iat.Before(now.Add(-v.window)) || iat.After(now.Add(v.leeway)) {
		return Proof{}, invalid(ReasonIssuedAt)
	}
	if req.AccessToken != "" {
		want := accessTokenHash(req.AccessToken)
		if c.ATH == nil || subtle.ConstantTimeCompare([]byte(*c.ATH), want[:]) != 1 {
			return Proof{}, invalid(ReasonATH)
		}
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return Proof{}, invalid(ReasonKey)
	}
	// The nonce last: a client told to use one signs a new proof, and a
	// proof that fails for another reason should say so first.
	if v.nonces != nil && (c.Nonce == nil || !v.nonces.Valid(*c.Nonce)) {
		return Proof{}, ErrUseNonce
	}
	return Proof{JKT: base64.RawURLEncoding.EncodeToString(tp), JTI: *c.JTI, IssuedAt: iat}, nil
}

// acceptedKey reports whether k is a public key of a kind a proof may be
// signed with: ECDSA on P-256, P-384 or P-521 (go-jose knows no other),
// Ed25519, or RSA of MinRSABits to MaxRSABits; no certificates.
func acceptedKey(k *jose.JSONWebKey) bool {
	if len(k.Certificates) > 0 || k.CertificatesURL != nil {
		return false
	}
	switch pub := k.Key.(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey:
		return true
	case *rsa.PublicKey:
		n := pub.N.BitLen()
		return n >= MinRSABits && n <= MaxRSABits
	}
	return false
}

// accessTokenHash is the ath of an access token: base64url(SHA-256(token)).
func accessTokenHash(tok string) [43]byte {
	sum := sha256.Sum256([]byte(tok))
	var out [43]byte
	base64.RawURLEncoding.Encode(out[:], sum[:])
	return out
}

// AccessTokenHash returns the ath claim that goes with an access token.
func AccessTokenHash(tok string) string {
	h := accessTokenHash(tok)
	return string(h[:])
}
