package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/accesstoken"
	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/clients"
	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/dpop"
	"github.com/sessioncache/sessioncache/redisstore"
)

// The OAuth 2.0 side of the service: the token endpoint (RFC 6749 section
// 6) where any OAuth client refreshes, the signing keys of access tokens
// (JWKS) and the authorization server metadata (RFC 8414) that points to
// both. These routes need no API key: public clients (browsers, mobile
// apps) call the token endpoint, with the refresh token as their
// credential, and gateways fetch the keys.

const (
	tokenPath    = "/oauth2/token"
	jwksPath     = "/.well-known/jwks.json"
	metadataPath = "/.well-known/oauth-authorization-server"
)

// tokenBody is RFC 6749 section 5.1's answer. RefreshToken is left out
// when it travels in the refresh cookie instead.
type tokenBody struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// oauthError is an RFC 6749 section 5.2 error answer.
func oauthError(status int, code, description string) reply {
	return reply{status: status, outcome: code, body: errorBody{Error: code, ErrorDescription: description}}
}

// token answers POST /oauth2/token: grant_type=refresh_token, as a form.
// The client authenticates with HTTP Basic (client_secret_basic), with
// client_id and client_secret in the form (client_secret_post), or, as a
// public client, with client_id alone. The refresh token comes in the form,
// or else in the refresh cookie if one is configured.
//
// With server nonces on, every answer carries the current one (DPoP-Nonce).
func (s *server) token(ctx context.Context, r *http.Request) reply {
	return s.withNonce(s.refresh(ctx, r))
}

// refresh is the token endpoint's answer, before the nonce.
func (s *server) refresh(ctx context.Context, r *http.Request) reply {
	if r.URL.RawQuery != "" {
		// RFC 6749 section 3.2: credentials never travel in the URL.
		return oauthError(http.StatusBadRequest, "invalid_request", "the token endpoint takes no query parameters")
	}
	if mt, rp, ok := mediaType(r); !ok {
		return rp
	} else if mt != mediaForm {
		return oauthError(http.StatusBadRequest, "invalid_request", "the body must be "+mediaForm)
	}
	form, rp, ok := decodeForm(r)
	if !ok {
		body := rp.body.(errorBody)
		return oauthError(http.StatusBadRequest, "invalid_request", body.Reason)
	}
	switch gt := form.Get("grant_type"); gt {
	case "refresh_token":
	case "":
		return oauthError(http.StatusBadRequest, "invalid_request", "grant_type is required")
	default:
		return oauthError(http.StatusBadRequest, "unsupported_grant_type", "this endpoint grants refresh_token only; logins go through the application")
	}
	client, rp, ok := s.authenticateClient(r, form)
	if !ok {
		return rp
	}
	if form.Has("scope") {
		return oauthError(http.StatusBadRequest, "invalid_scope", "sessions carry no scopes: send no scope")
	}
	refresh, fromCookie := form.Get("refresh_token"), false
	if s.refreshCookie != "" {
		// Never a pick: two refresh cookies (one may come from a sibling
		// subdomain or a longer path), or a cookie that differs from the
		// form's token, are refused.
		c, ok := oneCookie(r, s.refreshCookie)
		if !ok || c != "" && refresh != "" && c != refresh {
			return oauthError(http.StatusBadRequest, "invalid_request", reasonAmbiguous+": two refresh cookies, or a refresh cookie and a refresh_token that differ")
		}
		if refresh == "" && c != "" {
			refresh, fromCookie = c, true
		}
	}
	switch {
	case refresh == "":
		return oauthError(http.StatusBadRequest, "invalid_request", "refresh_token is required")
	case len(refresh) > maxTokenLen:
		return invalidGrant("malformed")
	}
	// A DPoP proof (RFC 9449 section 5), checked before anything is
	// rotated: a bound session requires it, and a public client's session
	// not bound yet is bound to its key.
	var proof dpop.Proof
	fields := r.Header.Values("Dpop")
	if len(fields) > 0 {
		p, reason, err := s.dpop.checkProof(ctx, s.dpop.token, fields, dpop.Request{Method: http.MethodPost, URI: s.dpop.tokenURI})
		if err != nil {
			return failure(err)
		}
		if reason != "" {
			return s.dpopGrantError(reason)
		}
		proof = p
	}
	m := s.gate.Begin()
	g, err := s.store().Rotate(ctx, refresh, redisstore.Client{ClientID: client.ID, JKT: proof.JKT, BindJKT: proof.JKT != "" && !client.Confidential,
		UserAgent: storableUserAgent(r.UserAgent())})
	if errors.Is(err, redisstore.ErrWrongClient) {
		return invalidGrant("wrong_client")
	}
	if rp, refused := s.keyRefusal(r, err); refused {
		return rp
	}
	if reason := tokenOutcome(err); reason != "" {
		if reason == "reused" {
			s.logReuse(r, g, err)
		}
		return invalidGrant(reason)
	}
	if err != nil {
		return failure(err)
	}
	// The access token is bound to the session's key or, for a session
	// bound to none (a confidential client's), to the proof's (RFC 9449
	// section 5).
	jkt := g.JKT
	if jkt == "" {
		jkt = proof.JKT
	}
	at, expiresIn, err := s.accessToken(g, jkt)
	if err != nil {
		return failure(err)
	}
	s.gate.Saw(g.SessionID, time.Now().Add(time.Duration(expiresIn)*time.Second), m)
	body := tokenBody{AccessToken: at, TokenType: tokenTypeOf(jkt), ExpiresIn: expiresIn, RefreshToken: g.Token}
	rp = reply{status: http.StatusOK, outcome: "ok", body: body, header: http.Header{"Pragma": {"no-cache"}}}
	if g.Replayed {
		rp.outcome = "grace_replay"
	}
	if fromCookie {
		rp.body = tokenBody{AccessToken: at, TokenType: tokenTypeOf(jkt), ExpiresIn: expiresIn}
		rp.header["Set-Cookie"] = []string{s.refreshCookieFor(g).String()}
	}
	return rp
}

// refreshCookieFor is the refresh cookie carrying g's token: sent back only
// to the token endpoint, never readable by scripts, never sent cross-site,
// and kept until the session's absolute deadline.
func (s *server) refreshCookieFor(g redisstore.Grant) *http.Cookie {
	return &http.Cookie{Name: s.refreshCookie, Value: g.Token, Path: tokenPath, Expires: g.SessionExpiresAt,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode}
}

// authenticateClient finds the client of a token request (RFC 6749 section
// 2.3): HTTP Basic, or client_id (and client_secret) in the form; not both.
func (s *server) authenticateClient(r *http.Request, form url.Values) (*clients.Client, reply, bool) {
	if _, ok := oneHeader(r, "Authorization"); !ok {
		return nil, oauthError(http.StatusBadRequest, "invalid_request", reasonAmbiguous+": Authorization sent more than once"), false
	}
	id, secret, basic := r.BasicAuth()
	given := basic
	if basic {
		// RFC 6749 section 2.3.1: both parts are form-urlencoded first.
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			return nil, invalidClient(true, "the Basic credentials are not form-urlencoded"), false
		}
		if form.Has("client_secret") || (form.Has("client_id") && form.Get("client_id") != id) {
			return nil, oauthError(http.StatusBadRequest, "invalid_request", "authenticate one way only: HTTP Basic or the form"), false
		}
	} else if auth := r.Header.Get("Authorization"); auth != "" {
		return nil, invalidClient(true, "only HTTP Basic client authentication is accepted in Authorization"), false
	} else {
		id = form.Get("client_id")
		secret, given = form.Get("client_secret"), form.Has("client_secret")
		if id == "" {
			return nil, oauthError(http.StatusBadRequest, "invalid_request", "client_id is required (or HTTP Basic client authentication)"), false
		}
	}
	c, err := s.clients.Load().Authenticate(id, secret, given)
	if err != nil {
		return nil, invalidClient(basic, strings.TrimPrefix(err.Error(), "clients: ")), false
	}
	return c, reply{}, true
}

// invalidClient is RFC 6749 section 5.2's invalid_client: 401, with a
// challenge when the client tried HTTP Basic.
func invalidClient(basic bool, description string) reply {
	rp := oauthError(http.StatusUnauthorized, "invalid_client", description)
	if basic {
		rp.header = http.Header{"Www-Authenticate": {`Basic realm="sessioncache", charset="UTF-8"`}}
	}
	return rp
}

// storableUserAgent returns a User-Agent header as the store takes it, or
// "" (keep the recorded one) if it would be refused.
func storableUserAgent(ua string) string {
	if len(ua) > redisstore.MaxUserAgentLen {
		return ""
	}
	for i := 0; i < len(ua); i++ {
		if ua[i] < 0x20 || ua[i] >= 0x7f {
			return ""
		}
	}
	return ua
}

// accessToken issues the access token that goes with a grant: bound to its
// session and, if jkt is not "", to that DPoP key, and never past its
// deadlines.
func (s *server) accessToken(g redisstore.Grant, jkt string) (string, int64, error) {
	notAfter := g.ExpiresAt
	if g.SessionExpiresAt.Before(notAfter) {
		notAfter = g.SessionExpiresAt
	}
	client := g.ClientID
	if client == "" {
		// A session issued before sessions had clients.
		client = unboundClient
	}
	tok, c, err := s.tokens.Issue(g.UserID, g.SessionID, client, jkt, notAfter)
	if err != nil {
		return "", 0, err
	}
	// Both in whole seconds: a fresh token's expires_in is the TTL.
	return tok, c.ExpiresAt.Unix() - c.IssuedAt.Unix(), nil
}

// unboundClient is the client_id of access tokens of a session that was
// issued without one.
const unboundClient = "unbound"

// serveJWKS serves the public keys of access tokens, cacheable for as long
// as a key is published before it signs allows.
func (s *server) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", s.tokens.JWKSCacheControl())
	w.Write(s.tokens.JWKS())
}

// metadata is the RFC 8414 document: what OAuth clients and gateways need
// to find the token endpoint and the keys.
type metadata struct {
	Issuer                         string   `json:"issuer"`
	TokenEndpoint                  string   `json:"token_endpoint"`
	JWKSURI                        string   `json:"jwks_uri"`
	GrantTypesSupported            []string `json:"grant_types_supported"`
	ResponseTypesSupported         []string `json:"response_types_supported"`
	TokenEndpointAuthMethods       []string `json:"token_endpoint_auth_methods_supported"`
	AccessTokenSigningAlgsProvided []string `json:"access_token_signing_alg_values_supported"`
	DPoPSigningAlgsSupported       []string `json:"dpop_signing_alg_values_supported"`
}

func newMetadata(issuer, alg string) []byte {
	base := strings.TrimSuffix(issuer, "/")
	b, _ := json.Marshal(metadata{
		Issuer:              issuer,
		TokenEndpoint:       base + tokenPath,
		JWKSURI:             base + jwksPath,
		GrantTypesSupported: []string{"refresh_token"},
		// Logins, and so authorization requests, stay with the application
		// or its identity provider.
		ResponseTypesSupported:         []string{},
		TokenEndpointAuthMethods:       []string{"none", "client_secret_basic", "client_secret_post"},
		AccessTokenSigningAlgsProvided: []string{alg},
		// RFC 9449 section 5.1.
		DPoPSigningAlgsSupported: dpop.Algorithms,
	})
	return b
}

func (s *server) serveMetadata(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", mediaJSON)
	w.Header().Set("Cache-Control", "max-age=3600")
	w.Write(s.metadata)
}

// accessOutcome names the refusal of an access token.
func accessOutcome(err error) string {
	switch {
	case errors.Is(err, accesstoken.ErrMalformed):
		return "malformed"
	case errors.Is(err, accesstoken.ErrExpired):
		return "expired"
	case errors.Is(err, accesstoken.ErrInvalid):
		return "unknown"
	}
	return ""
}

// refreshTokenIn returns where r carries one of the store's refresh tokens
// (a header's name, or "cookie <name>"), or "". Only what the store would
// take for its own counts (prefix, checksum and MAC), so that a header
// that merely contains the prefix is not mistaken for one.
func (s *server) refreshTokenIn(r *http.Request) string {
	prefix := s.tokenPrefix
	st := s.store()
	for name, vs := range r.Header {
		for _, v := range vs {
			for i := strings.Index(v, prefix); i >= 0; {
				end := i + len(prefix)
				for end < len(v) && base64URLChar(v[end]) {
					end++
				}
				if st.Genuine(v[i:end]) {
					if name == "Cookie" {
						if c := cookieName(v, i); c != "" {
							return "cookie " + c
						}
					}
					return name
				}
				next := strings.Index(v[end:], prefix)
				if next < 0 {
					break
				}
				i = end + next
			}
		}
	}
	return ""
}

// cookieName returns the name of the cookie whose value starts at i of a
// Cookie header.
func cookieName(header string, i int) string {
	start := strings.LastIndexByte(header[:i], ';') + 1
	name, _, ok := strings.Cut(header[start:i], "=")
	if !ok {
		return ""
	}
	return strings.TrimSpace(name)
}

func base64URLChar(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}
