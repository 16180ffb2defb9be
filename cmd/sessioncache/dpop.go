package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/accesstoken"
	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/dpop"
	"github.com/sessioncache/sessioncache/redisstore"
)

// DPoP (RFC 9449): sessions bound to a client's key, whose refresh and
// access tokens are useless without it. The proofs are checked by package
// dpop; here they are read from requests and their refusals answered.

// dpopGuard is the service's DPoP machinery.
type dpopGuard struct {
	// token checks proofs at the token endpoint, with server nonces when
	// the deployment asks for them; plain checks those of logins,
	// rotations through the API and forward auth, which ask for none.
	token, plain *dpop.Verifier
	replays      *dpop.Replays
	nonces       *dpop.Nonces // nil: off
	// clock is Redis's clock, kept in sync by main; nil when the
	// configuration gave a clock of its own (tests).
	clock *dpop.Clock
	// tokenURI is the token endpoint's URI as clients reach it, normalised.
	tokenURI string
	// algs is the DPoP challenge's algs parameter.
	algs string
}

// dpopSetup configures a dpopGuard.
type dpopSetup struct {
	redis       redis.UniversalClient
	keyPrefix   string
	secret      []byte
	issuer      string
	noncePeriod time.Duration    // 0: no nonces
	now         func() time.Time // nil: Redis's clock (dpop.Clock)
}

func newDPoPGuard(c dpopSetup) (*dpopGuard, error) {
	g := &dpopGuard{algs: strings.Join(dpop.Algorithms, " ")}
	now := c.now
	if now == nil {
		key := c.keyPrefix + "dpop:clock"
		g.clock = dpop.NewClock(func(ctx context.Context) (time.Time, error) { return redisTime(ctx, c.redis, key) }, nil)
		now = g.clock.Now
	}
	if c.noncePeriod > 0 {
		n, err := dpop.NewNonces(c.secret, c.noncePeriod, now)
		if err != nil {
			return nil, err
		}
		g.nonces = n
	}
	g.token = dpop.NewVerifier(dpop.Config{Now: now, Nonces: g.nonces})
	g.plain = dpop.NewVerifier(dpop.Config{Now: now})
	g.replays = dpop.NewReplays(c.redis, c.keyPrefix, g.plain.ReplayTTL(), now)
	u, err := dpop.NormalizeURI(strings.TrimSuffix(c.issuer, "/") + tokenPath)
	if err != nil {
		return nil, fmt.Errorf("the issuer %q gives no token endpoint URI: %w", c.issuer, err)
	}
	g.tokenURI = u
	return g, nil
}

// clockScript reads TIME on the node that serves its one key: every
// instance asks the same node, so they all keep one clock.
var clockScript = redis.NewScript(`return redis.call('TIME')`)

// redisTime returns the time of the Redis node that holds key.
func redisTime(ctx context.Context, rdb redis.UniversalClient, key string) (time.Time, error) {
	v, err := clockScript.Run(ctx, rdb, []string{key}).Slice()
	if err != nil {
		return time.Time{}, err
	}
	if len(v) != 2 {
		return time.Time{}, errors.New("TIME: not two numbers")
	}
	sec, err1 := strconv.ParseInt(fmt.Sprint(v[0]), 10, 64)
	usec, err2 := strconv.ParseInt(fmt.Sprint(v[1]), 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, errors.New("TIME: not two numbers")
	}
	return time.Unix(sec, usec*1000), nil
}

// dpopDescriptions are the error_description of each reason a proof is
// refused for.
var dpopDescriptions = map[string]string{
	dpop.ReasonMissing:   "a DPoP proof is required: this token is bound to a key",
	dpop.ReasonMultiple:  "send exactly one DPoP header",
	dpop.ReasonTooLong:   "the DPoP proof is longer than 8 KB",
	dpop.ReasonMalformed: "the DPoP proof is not a JWS signed with an asymmetric algorithm",
	dpop.ReasonType:      "the DPoP proof's typ is not dpop+jwt",
	dpop.ReasonKey:       "the DPoP proof's jwk is not a public key of an accepted kind and size",
	dpop.ReasonSignature: "the DPoP proof's signature does not verify with its jwk",
	dpop.ReasonClaims:    "the DPoP proof lacks jti, htm, htu or iat",
	dpop.ReasonMethod:    "the DPoP proof's htm is not this request's method",
	dpop.ReasonURI:       "the DPoP proof's htu is not this request's URI",
	dpop.ReasonIssuedAt:  "the DPoP proof's iat is too old or in the future",
	dpop.ReasonATH:       "the DPoP proof's ath is not the access token's hash",
	dpop.ReasonReplayed:  "this DPoP proof was used before",
	dpop.ReasonKeyBound:  "the DPoP proof is signed by another key than the one this token is bound to",
	"use_nonce":          "use the server's nonce (DPoP-Nonce) in the DPoP proof",
}

// checkProof verifies a request's DPoP proof with v and records its jti:
// the proof, or the refusal's reason (a dpop reason, "use_nonce") and,
// for Redis trouble, the error.
func (g *dpopGuard) checkProof(ctx context.Context, v *dpop.Verifier, fields []string, req dpop.Request) (dpop.Proof, string, error) {
	p, err := v.Verify(fields, req)
	if err == nil {
		err = g.replays.Check(ctx, p)
	}
	if err == nil {
		return p, "", nil
	}
	if reason := dpop.Reason(err); reason != "" {
		return dpop.Proof{}, reason, nil
	}
	return dpop.Proof{}, "", err
}

// dpopGrantError is the token endpoint's refusal of a proof (RFC 9449
// sections 5 and 8): 400 invalid_dpop_proof, or use_dpop_nonce with the
// nonce to use.
func (s *server) dpopGrantError(reason string) reply {
	if reason == "use_nonce" {
		rp := oauthError(http.StatusBadRequest, "use_dpop_nonce", dpopDescriptions[reason])
		rp.outcome = "dpop_use_nonce"
		return rp
	}
	return reply{status: http.StatusBadRequest, outcome: "dpop_" + reason,
		body: errorBody{Error: "invalid_dpop_proof", ErrorDescription: dpopDescriptions[reason], Reason: reason}}
}

// withNonce adds the current server nonce to a token endpoint answer, when
// the deployment uses nonces.
func (s *server) withNonce(rp reply) reply {
	if s.dpop.nonces == nil {
		return rp
	}
	h := http.Header{}
	for k, v := range rp.header {
		h[k] = v
	}
	h["Dpop-Nonce"] = []string{s.dpop.nonces.Current()}
	rp.header = h
	return rp
}

// Forward auth of a DPoP-bound access token (RFC 9449 section 7): the
// token in Authorization: DPoP, a proof of the token's key with the
// token's ath, and htm and htu those of the request the gateway is asked
// about, which it passes in headers. Each configuration in the README sets
// one pair; the service refuses, rather than guess, a request that
// carries neither, or both with different values, or one twice.
const (
	headerOriginalMethod  = "X-Original-Method"
	headerOriginalURI     = "X-Original-Uri"
	headerForwardedMethod = "X-Forwarded-Method"
	headerForwardedURI    = "X-Forwarded-Uri"
	headerForwardedProto  = "X-Forwarded-Proto"
	headerForwardedHost   = "X-Forwarded-Host"
)

// originalRequest returns the method and the normalised URI of the request
// a gateway asks about, or why it cannot tell.
func originalRequest(r *http.Request) (method, uri, why string) {
	method, why = oneOf(r, headerOriginalMethod, headerForwardedMethod)
	if why != "" {
		return "", "", why
	}
	target, why := oneOf(r, headerOriginalURI, headerForwardedURI)
	if why != "" {
		return "", "", why
	}
	proto, why := oneOf(r, headerForwardedProto, "")
	if why != "" {
		return "", "", why
	}
	host, why := oneOf(r, headerForwardedHost, "")
	if why != "" {
		return "", "", why
	}
	if !strings.HasPrefix(target, "/") {
		return "", "", "the original URI (" + headerOriginalURI + ", " + headerForwardedURI + ") is not a path"
	}
	uri, err := dpop.NormalizeURI(proto + "://" + host + target)
	if err != nil {
		return "", "", "the original request's " + headerForwardedProto + ", " + headerForwardedHost + " and URI make no http(s) URI"
	}
	return method, uri, ""
}

// oneOf returns the value of header a or, if a is absent, of header b
// ("": none), or why it will not: neither present, one given twice, both
// present with different values.
func oneOf(r *http.Request, a, b string) (string, string) {
	va := r.Header[a]
	var vb []string
	if b != "" {
		vb = r.Header[b]
	}
	names := a
	if b != "" {
		names += " or " + b
	}
	switch {
	case len(va) > 1 || len(vb) > 1:
		return "", names + " is given more than once"
	case len(va) == 1 && len(vb) == 1 && va[0] != vb[0]:
		return "", a + " and " + b + " disagree"
	case len(va) == 1 && va[0] != "":
		return va[0], ""
	case len(vb) == 1 && vb[0] != "":
		return vb[0], ""
	}
	return "", "the gateway passed no " + names + ": see the README's gateway configurations"
}

// checkBoundAccess checks the DPoP proof of a forward-auth request whose
// access token tok (claims c) came with scheme "DPoP", or is bound to a
// key: nothing (ok) or the refusal.
func (s *server) checkBoundAccess(ctx context.Context, r *http.Request, tok string, dpopScheme bool, c accesstoken.Claims) (reply, bool) {
	switch {
	case c.JKT == "" && dpopScheme:
		return s.dpopTokenRefusal("not_bound"), false
	case c.JKT == "":
		return reply{}, true
	case !dpopScheme:
		// RFC 9449 section 7.2: a bound token is never a bearer token.
		return s.dpopTokenRefusal("dpop_required"), false
	}
	method, uri, why := originalRequest(r)
	if why != "" {
		return reply{status: http.StatusForbidden, outcome: "original_request_unknown",
			body: errorBody{Error: "forbidden", Reason: "cannot check the DPoP proof of this request: " + why}}, false
	}
	p, err := s.dpop.plain.Verify(r.Header.Values("Dpop"), dpop.Request{Method: method, URI: uri, AccessToken: tok})
	if err == nil && p.JKT != c.JKT {
		err = dpop.Refuse(dpop.ReasonKeyBound)
	}
	if err != nil {
		return s.dpopProofRefusal(dpop.Reason(err)), false
	}
	if err := s.dpop.replays.Check(ctx, p); err != nil {
		if reason := dpop.Reason(err); reason != "" {
			return s.dpopProofRefusal(reason), false
		}
		return failure(err), false
	}
	return reply{}, true
}

// dpopTokenRefusal refuses an access token for how it was presented: 401
// invalid_token with the DPoP challenge.
func (s *server) dpopTokenRefusal(reason string) reply {
	return reply{status: http.StatusUnauthorized, outcome: reason,
		body:   errorBody{Error: "invalid_token", ErrorDescription: tokenDescriptions[reason], Reason: reason},
		header: http.Header{"Www-Authenticate": {s.dpopChallenge("invalid_token", tokenDescriptions[reason])}}}
}

// dpopProofRefusal refuses a forward-auth request for its proof: 401
// invalid_dpop_proof (RFC 9449 section 7.1).
func (s *server) dpopProofRefusal(reason string) reply {
	return reply{status: http.StatusUnauthorized, outcome: "dpop_" + reason,
		body:   errorBody{Error: "invalid_dpop_proof", ErrorDescription: dpopDescriptions[reason], Reason: reason},
		header: http.Header{"Www-Authenticate": {s.dpopChallenge("invalid_dpop_proof", dpopDescriptions[reason])}}}
}

// dpopChallenge is the DPoP WWW-Authenticate challenge (RFC 9449 section
// 7.1) with the error and its description: the one a client behind a
// gateway that replaces the body (nginx) still sees.
func (s *server) dpopChallenge(code, description string) string {
	return `DPoP error="` + code + `", error_description="` + description + `", algs="` + s.dpop.algs + `"`
}

// syncClock keeps the DPoP clock on Redis's until ctx ends: a reading now,
// then one every dpopClockSync. Until the first succeeds, proofs are judged
// by the local clock.
func (s *server) syncClock(ctx context.Context) {
	c := s.dpop.clock
	if c == nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, s.redisTimeout)
	if err := c.Sync(rctx); err != nil {
		s.log.Warn("reading Redis's clock for DPoP proofs failed: the local clock judges them until a reading succeeds", "error", err.Error())
	}
	cancel()
	c.Run(ctx, dpopClockSync, func(err error) {
		s.log.Warn("reading Redis's clock for DPoP proofs failed: the last reading's offset stays", "error", err.Error())
	})
}

// dpopClockSync is how often the DPoP clock reads Redis's.
const dpopClockSync = 30 * time.Second

// apiKey returns the DPoP key a login or a rotation through the API names:
// dpop_jkt, or the key of dpop_proof, checked (for the method and URI the
// app says it received it with, dpop_htm and dpop_htu) and its jti
// recorded; "" for none.
func (s *server) apiKey(ctx context.Context, f dpopFields) (string, reply, bool) {
	switch {
	case f.JKT != "" && f.Proof != "":
		return "", badRequest(http.StatusBadRequest, "send dpop_jkt or dpop_proof, not both"), false
	case f.JKT != "":
		if f.HTM != "" || f.HTU != "" {
			return "", badRequest(http.StatusBadRequest, "dpop_htm and dpop_htu go with dpop_proof"), false
		}
		if len(f.JKT) != 43 || !canonicalBase64URL(f.JKT) {
			return "", badRequest(http.StatusBadRequest, "dpop_jkt is not an RFC 7638 SHA-256 thumbprint in base64url (43 characters)"), false
		}
		return f.JKT, reply{}, true
	case f.Proof != "":
		if f.HTM == "" || f.HTU == "" {
			return "", badRequest(http.StatusBadRequest, "dpop_proof needs dpop_htm and dpop_htu: the method and URI of the request the client sent it with"), false
		}
		uri, err := dpop.NormalizeURI(f.HTU)
		if err != nil {
			return "", badRequest(http.StatusBadRequest, "dpop_htu is not an absolute http or https URI"), false
		}
		p, reason, err := s.dpop.checkProof(ctx, s.dpop.plain, []string{f.Proof}, dpop.Request{Method: f.HTM, URI: uri})
		if err != nil {
			return "", failure(err), false
		}
		if reason != "" {
			return "", s.dpopGrantError(reason), false
		}
		return p.JKT, reply{}, true
	case f.HTM != "" || f.HTU != "":
		return "", badRequest(http.StatusBadRequest, "dpop_htm and dpop_htu go with dpop_proof"), false
	}
	return "", reply{}, true
}

// canonicalBase64URL reports whether s is unpadded base64url in its one
// canonical spelling.
func canonicalBase64URL(s string) bool {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && base64.RawURLEncoding.EncodeToString(b) == s
}

// keyRefusal answers a rotation the store refused for the session's DPoP
// key: none given (invalid_dpop_proof, missing) or another one
// (key_binding). Neither revokes the session: whoever presents its
// refresh token without its key cannot use it, and must not be able to log
// its owner out with it either (as a forged token revokes nothing); the
// other key is logged, as a stolen refresh token at work.
func (s *server) keyRefusal(r *http.Request, err error) (reply, bool) {
	switch {
	case errors.Is(err, redisstore.ErrKeyRequired):
		return s.dpopGrantError(dpop.ReasonMissing), true
	case errors.Is(err, redisstore.ErrWrongKey):
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "refresh token presented with another DPoP key than its session's: refused, the session is not revoked",
			slog.String("operation", r.URL.Path), slog.String("remote", r.RemoteAddr),
			slog.String("http_user_agent", logText(r.UserAgent())))
		return s.dpopGrantError(dpop.ReasonKeyBound), true
	}
	return reply{}, false
}
