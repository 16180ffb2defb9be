package accesstoken

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Algorithms an Authority signs with.
const (
	ES256 = "ES256"
	EdDSA = "EdDSA"
)

// Defaults and limits of Config.
const (
	DefaultTTL        = 5 * time.Minute
	MinTTL            = time.Second
	MaxTTL            = time.Hour
	DefaultPeriod     = 24 * time.Hour
	DefaultJWKSMaxAge = time.Hour
	MaxJWKSMaxAge     = 24 * time.Hour
	MinSecretLen      = 32
	// DefaultCacheSize is the number of verified tokens Verify remembers.
	DefaultCacheSize = 1 << 16
)

// MaxTokenLen is the longest token Verify reads, and the longest Issue makes.
const MaxTokenLen = 4096

// Leeway is how far in the future a token's iat may be, for the clocks of
// instances that differ. exp has none: a token is valid while now < exp.
const Leeway = 10 * time.Second

// tokenType is the typ header of an access token (RFC 9068 section 2.1).
const tokenType = "at+jwt"

// Errors of Verify. An error wraps exactly one of them, with a short reason
// that never contains any part of the token.
var (
	// ErrMalformed: the input is not a JWS in compact form (for example a
	// refresh token), or longer than MaxTokenLen. Told without parsing.
	ErrMalformed = errors.New("accesstoken: not an access token")
	// ErrExpired: a token of ours, genuine, whose exp has passed.
	ErrExpired = errors.New("accesstoken: token expired")
	// ErrInvalid: a JWS that is not a valid access token of this issuer:
	// wrong alg or typ, unknown kid, bad signature, wrong iss or aud, a
	// missing claim, iat in the future.
	ErrInvalid = errors.New("accesstoken: invalid token")
)

// ErrDeadlinePassed is returned by Issue when the session's deadline,
// rounded down to a whole second, is not after now: no token could be valid.
var ErrDeadlinePassed = errors.New("accesstoken: the session's deadline has passed")

// Config configures an Authority. Its zero value is not valid: Secret, Issuer
// and Audience are required.
type Config struct {
	// Secret is the store's root secret, at least 32 bytes, the same on
	// every instance. Signing keys are derived from it. Required.
	Secret []byte
	// Alg is the signing algorithm: "ES256" or "EdDSA". Default "ES256".
	// Like Secret and Period, it must be the same on every instance.
	Alg string
	// Issuer is the iss claim: an http:// or https:// URL without query,
	// fragment or user information. Required.
	Issuer string
	// Audience is the aud claim. Required.
	Audience string
	// TTL is the longest lifetime of a token, from 1s to 1h. Default 5m.
	TTL time.Duration
	// Period is the length of a key epoch, at least 2 x (TTL + JWKSMaxAge),
	// the same on every instance. Default 24h.
	Period time.Duration
	// JWKSMaxAge is the max-age a key set response may be cached for, from
	// 1s to 24h. Default 1h.
	JWKSMaxAge time.Duration
	// CacheSize bounds the number of verified tokens Verify remembers;
	// negative turns the cache off. Default 65536 (about 17 MB when full,
	// measured with ids of about 30 bytes).
	CacheSize int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Authority issues and verifies access tokens and publishes their keys. It is
// safe for concurrent use.
type Authority struct {
	secret   []byte
	alg      jose.SignatureAlgorithm
	algs     []jose.SignatureAlgorithm // {alg}, for go-jose
	issuer   string
	audience string
	ttl      time.Duration
	period   time.Duration
	maxAge   time.Duration
	now      func() time.Time
	cacheCtl string
	issJSON  []byte // the issuer as a JSON string
	audJSON  []byte // the audience as a JSON string
	cache    *cache // nil: off

	ring   atomic.Pointer[keyring]
	ringMu sync.Mutex // serialises derivation of a new keyring
}

// New validates cfg, applies its defaults and derives the keys of the
// current epoch.
func New(cfg Config) (*Authority, error) {
	a := &Authority{
		secret:   append([]byte(nil), cfg.Secret...),
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		ttl:      cfg.TTL,
		period:   cfg.Period,
		maxAge:   cfg.JWKSMaxAge,
		now:      cfg.Now,
	}
	if len(cfg.Secret) < MinSecretLen {
		return nil, fmt.Errorf("accesstoken: the secret is %d bytes, at least %d required", len(cfg.Secret), MinSecretLen)
	}
	switch cfg.Alg {
	case "", ES256:
		a.alg = jose.ES256
	case EdDSA:
		a.alg = jose.EdDSA
	default:
		return nil, fmt.Errorf("accesstoken: algorithm %q is not supported (want %s or %s)", cfg.Alg, ES256, EdDSA)
	}
	a.algs = []jose.SignatureAlgorithm{a.alg}
	if err := checkIssuer(cfg.Issuer); err != nil {
		return nil, err
	}
	if cfg.Audience == "" {
		return nil, errors.New("accesstoken: the audience is required")
	}
	if err := checkClaimString(cfg.Audience); err != nil {
		return nil, fmt.Errorf("accesstoken: audience: %w", err)
	}
	if a.ttl == 0 {
		a.ttl = DefaultTTL
	}
	if a.ttl < MinTTL || a.ttl > MaxTTL {
		return nil, fmt.Errorf("accesstoken: TTL %v is out of range (%v to %v)", a.ttl, MinTTL, MaxTTL)
	}
	if a.maxAge == 0 {
		a.maxAge = DefaultJWKSMaxAge
	}
	if a.maxAge < time.Second || a.maxAge > MaxJWKSMaxAge || a.maxAge%time.Second != 0 {
		return nil, fmt.Errorf("accesstoken: JWKS max-age %v is out of range (whole seconds from 1s to %v)", a.maxAge, MaxJWKSMaxAge)
	}
	if a.period == 0 {
		a.period = DefaultPeriod
	}
	if min := 2 * (a.ttl + a.maxAge); a.period < min {
		return nil, fmt.Errorf("accesstoken: key period %v is too short: it must be at least 2 x (TTL %v + JWKS max-age %v) = %v, so that every cached key set holds a key before it signs and after its last token expires", a.period, a.ttl, a.maxAge, min)
	}
	if a.now == nil {
		a.now = time.Now
	}
	switch {
	case cfg.CacheSize == 0:
		a.cache = newCache(DefaultCacheSize)
	case cfg.CacheSize > 0:
		a.cache = newCache(cfg.CacheSize)
	}
	a.cacheCtl = "public, max-age=" + strconv.FormatInt(int64(a.maxAge/time.Second), 10)
	a.issJSON = appendJSONString(nil, a.issuer)
	a.audJSON = appendJSONString(nil, a.audience)
	a.keyring(a.now())
	return a, nil
}

// checkIssuer checks that iss is an http(s) URL without query, fragment or
// user information (RFC 8414 section 2).
func checkIssuer(iss string) error {
	if iss == "" {
		return errors.New("accesstoken: the issuer is required")
	}
	u, err := url.Parse(iss)
	if err != nil {
		return fmt.Errorf("accesstoken: the issuer is not a URL: %w", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("accesstoken: the issuer %q is not an https:// (or http://) URL with a host", iss)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("accesstoken: the issuer %q has a query, fragment or user information", iss)
	}
	return checkClaimString(iss)
}

// Alg returns the signing algorithm ("ES256" or "EdDSA"): the value of an
// RFC 8414 *_signing_alg_values_supported entry.
func (a *Authority) Alg() string { return string(a.alg) }

// TTL returns the longest lifetime of a token.
func (a *Authority) TTL() time.Duration { return a.ttl }

// JWKS returns the JSON Web Key Set document to serve at
// /.well-known/jwks.json: the public keys of the previous, current and next
// epochs, each with kid, alg and use "sig". It is computed once per epoch;
// the caller must not modify it.
func (a *Authority) JWKS() []byte {
	return a.keyring(a.now()).jwks
}

// JWKSCacheControl returns the Cache-Control header value of the key set:
// "public, max-age=N", N the JWKSMaxAge in seconds.
func (a *Authority) JWKSCacheControl() string { return a.cacheCtl }

// keyring returns the keyring of now's epoch, deriving it on the first call
// in an epoch.
func (a *Authority) keyring(now time.Time) *keyring {
	e := epochOf(now, a.period)
	if r := a.ring.Load(); r != nil && r.epoch == e {
		return r
	}
	a.ringMu.Lock()
	defer a.ringMu.Unlock()
	prev := a.ring.Load()
	if prev != nil && prev.epoch == e {
		return prev
	}
	r := newKeyring(a.secret, a.alg, e, prev)
	a.ring.Store(r)
	return r
}
