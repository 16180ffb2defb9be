package accesstoken

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Claims are what an access token says about its session.
type Claims struct {
	Subject   string    // sub: the user id
	SessionID string    // sid: the session (family) id
	ClientID  string    // client_id: the OAuth client the session was issued to
	JTI       string    // jti: unique to the token
	IssuedAt  time.Time // iat, whole seconds
	ExpiresAt time.Time // exp, whole seconds; the token is valid while now < ExpiresAt
	// JKT is cnf.jkt (RFC 9449 section 6.1): the RFC 7638 thumbprint of
	// the DPoP key the token is bound to; "" for a bearer token.
	JKT string
}

// Reasons of Verify's refusals. Each wraps ErrMalformed, ErrInvalid or
// ErrExpired.
var (
	errTooLong      = fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxTokenLen)
	errNotCompact   = fmt.Errorf("%w: not three canonical base64url segments", ErrMalformed)
	errNotJWS       = fmt.Errorf("%w: not a JWS signed with the configured algorithm", ErrInvalid)
	errHeader       = fmt.Errorf("%w: unexpected header parameters", ErrInvalid)
	errType         = fmt.Errorf("%w: typ is not at+jwt", ErrInvalid)
	errUnknownKid   = fmt.Errorf("%w: unknown kid", ErrInvalid)
	errSignature    = fmt.Errorf("%w: bad signature", ErrInvalid)
	errClaimsJSON   = fmt.Errorf("%w: claims are not a JSON object of the expected types", ErrInvalid)
	errIssuer       = fmt.Errorf("%w: wrong issuer", ErrInvalid)
	errAudience     = fmt.Errorf("%w: wrong audience", ErrInvalid)
	errMissingClaim = fmt.Errorf("%w: a required claim is missing", ErrInvalid)
	errFutureIat    = fmt.Errorf("%w: iat is in the future", ErrInvalid)
	errConfirmation = fmt.Errorf("%w: cnf is not a DPoP key's thumbprint", ErrInvalid)
	errExpired      = fmt.Errorf("%w: exp has passed", ErrExpired)
)

// Issue signs an access token for a session: header {alg, kid, typ
// "at+jwt"}, claims iss, sub, aud, exp, iat, jti, client_id and sid (RFC
// 9068), and, for a session bound to a DPoP key, cnf {"jkt": jkt} (RFC 9449
// section 6.1; jkt "" makes a bearer token). exp is now + TTL, or notAfter
// (the session's deadline) when that comes first, rounded down to a whole
// second. Issue refuses with ErrDeadlinePassed when that exp is not after
// now, and with an error when subject, sessionID or clientID is empty or
// not UTF-8, jkt is not a SHA-256 thumbprint in base64url, or the token
// would be longer than MaxTokenLen. It returns the token and its claims.
func (a *Authority) Issue(subject, sessionID, clientID, jkt string, notAfter time.Time) (string, Claims, error) {
	for _, f := range [...]struct{ name, v string }{{"subject", subject}, {"session id", sessionID}, {"client id", clientID}} {
		if f.v == "" {
			return "", Claims{}, fmt.Errorf("accesstoken: the %s is empty", f.name)
		}
		if err := checkClaimString(f.v); err != nil {
			return "", Claims{}, fmt.Errorf("accesstoken: %s: %w", f.name, err)
		}
	}
	if jkt != "" && !thumbprint(jkt) {
		return "", Claims{}, errors.New("accesstoken: the jkt is not a SHA-256 thumbprint in base64url")
	}
	now := a.now()
	exp := now.Add(a.ttl)
	if notAfter.Before(exp) {
		exp = notAfter
	}
	c := Claims{
		Subject:   subject,
		SessionID: sessionID,
		ClientID:  clientID,
		IssuedAt:  time.Unix(now.Unix(), 0),
		ExpiresAt: time.Unix(exp.Unix(), 0),
		JKT:       jkt,
	}
	if !c.ExpiresAt.After(now) {
		return "", Claims{}, ErrDeadlinePassed
	}
	var jti [16]byte
	rand.Read(jti[:])
	c.JTI = base64.RawURLEncoding.EncodeToString(jti[:])

	k := a.keyring(now).signing()
	var pbuf [512]byte
	p := a.appendPayload(pbuf[:0], &c)
	enc := base64.RawURLEncoding
	n := len(k.header) + 1 + enc.EncodedLen(len(p)) + 1 + enc.EncodedLen(ed25519.SignatureSize)
	if n > MaxTokenLen {
		return "", Claims{}, fmt.Errorf("accesstoken: the token would be %d bytes, more than %d", n, MaxTokenLen)
	}
	tok := make([]byte, 0, n)
	tok = append(tok, k.header...)
	tok = append(tok, '.')
	tok = enc.AppendEncode(tok, p)
	var sbuf [ed25519.SignatureSize]byte
	sig, err := sign(k.priv, tok, sbuf[:0])
	if err != nil {
		return "", Claims{}, err
	}
	tok = append(tok, '.')
	tok = enc.AppendEncode(tok, sig)
	return string(tok), c, nil
}

// appendPayload appends the claims of c as the JSON object a token carries,
// in the order RFC 9068 section 2.2 lists them.
func (a *Authority) appendPayload(b []byte, c *Claims) []byte {
	b = append(b, `{"iss":`...)
	b = append(b, a.issJSON...)
	b = append(b, `,"sub":`...)
	b = appendJSONString(b, c.Subject)
	b = append(b, `,"aud":`...)
	b = append(b, a.audJSON...)
	b = append(b, `,"exp":`...)
	b = strconv.AppendInt(b, c.ExpiresAt.Unix(), 10)
	b = append(b, `,"iat":`...)
	b = strconv.AppendInt(b, c.IssuedAt.Unix(), 10)
	b = append(b, `,"jti":`...)
	b = appendJSONString(b, c.JTI)
	b = append(b, `,"client_id":`...)
	b = appendJSONString(b, c.ClientID)
	b = append(b, `,"sid":`...)
	b = appendJSONString(b, c.SessionID)
	if c.JKT != "" {
		b = append(b, `,"cnf":{"jkt":"`...)
		b = append(b, c.JKT...)
		b = append(b, `"}`...)
	}
	return append(b, '}')
}

// thumbprint reports whether s is a SHA-256 thumbprint in base64url: 43
// characters, canonical.
func thumbprint(s string) bool {
	if len(s) != 43 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if base64URL[s[i]] == invalid {
			return false
		}
	}
	return canonicalBase64(s)
}

// p256HalfOrder is (n-1)/2 for P-256: a signature's s above it is replaced
// by n - s, and refused by Verify, so that a token has one signature.
var (
	p256Order     = elliptic.P256().Params().N
	p256HalfOrder = new(big.Int).Rsh(p256Order, 1)
)

// sign appends the JWS signature of input (RFC 7518 section 3.4 for ES256:
// r and s, 32 bytes each, s in the lower half).
func sign(priv any, input, dst []byte) ([]byte, error) {
	switch priv := priv.(type) {
	case ed25519.PrivateKey:
		return append(dst, ed25519.Sign(priv, input)...), nil
	case *ecdsa.PrivateKey:
		digest := sha256.Sum256(input)
		r, s, err := ecdsa.Sign(rand.Reader, priv, digest[:])
		if err != nil {
			return nil, fmt.Errorf("accesstoken: signing: %w", err)
		}
		if s.Cmp(p256HalfOrder) > 0 {
			s.Sub(p256Order, s)
		}
		var rs [64]byte
		r.FillBytes(rs[:32])
		s.FillBytes(rs[32:])
		return append(dst, rs[:]...), nil
	}
	panic(fmt.Sprintf("accesstoken: signing key of type %T", priv))
}

// payload is the claims object as Verify decodes it.
type payload struct {
	Iss      string           `json:"iss"`
	Sub      string           `json:"sub"`
	Aud      jwt.Audience     `json:"aud"`
	Exp      *jwt.NumericDate `json:"exp"`
	Iat      *jwt.NumericDate `json:"iat"`
	Jti      string           `json:"jti"`
	ClientID string           `json:"client_id"`
	Sid      string           `json:"sid"`
	Cnf      *struct {
		JKT *string `json:"jkt"`
	} `json:"cnf"`
}

// Verify checks an access token and returns its claims. The token must be a
// compact JWS signed with the configured algorithm by a key in the key set
// published now (by kid), with typ "at+jwt" (or "application/at+jwt", in any
// case), the configured iss and aud, exp after now, iat no further than
// Leeway ahead of now, and non-empty sub, sid, client_id and jti. Parsing and
// the signature are go-jose's. Errors wrap ErrMalformed (not a token at all,
// told cheaply: a refresh token is one), ErrExpired (genuine but past its exp)
// or ErrInvalid (anything else); they never contain any part of the token.
//
// Verify says nothing about the session: whether it is still live (not
// logged out, revoked or evicted) is the caller's to check, by sid.
// A token seen before is answered from the cache (see the package doc) after
// the checks of exp, iat and its key that depend on the time.
func (a *Authority) Verify(raw string) (Claims, error) {
	if len(raw) > MaxTokenLen {
		return Claims{}, errTooLong
	}
	if strings.Count(raw, ".") != 2 {
		return Claims{}, errNotCompact
	}
	now := a.now()
	ring := a.keyring(now)
	var sum [sha256.Size]byte
	if a.cache != nil {
		// A token in the cache passed every check below once.
		sum = hashToken(raw)
		if e, ok := a.cache.get(sum); ok {
			if !ring.publishes(e.epoch) {
				return Claims{}, errUnknownKid
			}
			if err := checkTimes(&e.claims, now); err != nil {
				return Claims{}, err
			}
			return e.claims, nil
		}
	}
	if !compactJWS(raw) {
		return Claims{}, errNotCompact
	}
	c, k, err := a.verify(raw, ring)
	if err != nil {
		return Claims{}, err
	}
	if err := checkTimes(&c, now); err != nil {
		return Claims{}, err
	}
	if a.cache != nil {
		a.cache.put(sum, cached{claims: c, epoch: k.epoch})
	}
	return c, nil
}

// verify checks everything about raw but the times, and returns its claims
// and the key that signed it.
func (a *Authority) verify(raw string, ring *keyring) (Claims, *epochKey, error) {
	jws, err := jose.ParseSignedCompact(raw, a.algs)
	if err != nil || len(jws.Signatures) != 1 {
		return Claims{}, nil, errNotJWS
	}
	sig := &jws.Signatures[0]
	h := &sig.Header
	// Our tokens carry alg, kid and typ, nothing else: refuse crit, b64,
	// jwk, x5c and the like rather than reason about them. (go-jose keeps
	// jwk, nonce and x5c out of ExtraHeaders.)
	if h.JSONWebKey != nil || h.Nonce != "" || len(h.ExtraHeaders) != 1 {
		return Claims{}, nil, errHeader
	}
	if _, err := h.Certificates(x509.VerifyOptions{}); !errors.Is(err, jose.ErrMissingX5cHeader) {
		return Claims{}, nil, errHeader
	}
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, tokenType) && !strings.EqualFold(typ, "application/"+tokenType) {
		return Claims{}, nil, errType
	}
	k := ring.byKid(h.KeyID)
	if k == nil {
		return Claims{}, nil, errUnknownKid
	}
	body, err := jws.Verify(k.pub)
	if err != nil {
		return Claims{}, nil, errSignature
	}
	if a.alg == jose.ES256 && (len(sig.Signature) != 64 || new(big.Int).SetBytes(sig.Signature[32:]).Cmp(p256HalfOrder) > 0) {
		return Claims{}, nil, errSignature
	}
	var p payload
	if err := josejson.Unmarshal(body, &p); err != nil {
		return Claims{}, nil, errClaimsJSON
	}
	if p.Iss != a.issuer {
		return Claims{}, nil, errIssuer
	}
	if !p.Aud.Contains(a.audience) {
		return Claims{}, nil, errAudience
	}
	if p.Sub == "" || p.Sid == "" || p.ClientID == "" || p.Jti == "" || p.Exp == nil || p.Iat == nil {
		return Claims{}, nil, errMissingClaim
	}
	var jkt string
	if p.Cnf != nil {
		// Our tokens bind only DPoP keys (no x5t#S256 and the like).
		if p.Cnf.JKT == nil || !thumbprint(*p.Cnf.JKT) {
			return Claims{}, nil, errConfirmation
		}
		jkt = *p.Cnf.JKT
	}
	return Claims{
		Subject:   p.Sub,
		SessionID: p.Sid,
		ClientID:  p.ClientID,
		JTI:       p.Jti,
		IssuedAt:  time.Unix(int64(*p.Iat), 0),
		ExpiresAt: time.Unix(int64(*p.Exp), 0),
		JKT:       jkt,
	}, k, nil
}

// checkTimes checks that c is valid at now: now < exp and iat <= now + Leeway.
func checkTimes(c *Claims, now time.Time) error {
	if !now.Before(c.ExpiresAt) {
		return errExpired
	}
	if c.IssuedAt.After(now.Add(Leeway)) {
		return errFutureIat
	}
	return nil
}

// compactJWS reports whether s has the shape of a compact JWS: three
// segments of base64url without padding, the first two not empty, each in
// its canonical form (unused bits of the last character zero, no impossible
// length). go-jose's decoder accepts other spellings of the same bytes; this
// makes a token's text unique, and tells a refresh token or garbage from a
// token without parsing.
func compactJWS(s string) bool {
	dots, start := 0, 0
	for i := 0; i < len(s); i++ {
		if base64URL[s[i]] != invalid {
			continue
		}
		if s[i] != '.' || dots == 2 || i == start || !canonicalBase64(s[start:i]) {
			return false
		}
		dots++
		start = i + 1
	}
	return dots == 2 && canonicalBase64(s[start:])
}

// base64URL maps a character to its value in base64url, or to invalid.
var base64URL = func() (t [256]byte) {
	for i := range t {
		t[i] = invalid
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		t[c] = byte(i)
	}
	return t
}()

const invalid = 0xff

// canonicalBase64 reports whether seg, made of base64url characters, is the
// unpadded encoding of some bytes with its unused trailing bits zero.
func canonicalBase64(seg string) bool {
	if len(seg) == 0 {
		return true
	}
	last := base64URL[seg[len(seg)-1]]
	switch len(seg) % 4 {
	case 1:
		return false
	case 2:
		return last&0x0f == 0
	case 3:
		return last&0x03 == 0
	}
	return true
}

// checkClaimString refuses what JSON cannot carry unchanged.
func checkClaimString(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	return nil
}

// appendJSONString appends s, valid UTF-8, as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
