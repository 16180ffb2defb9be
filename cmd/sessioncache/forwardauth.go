package main

import (
	"context"
	"net/http"
	"strings"
)

// Forward auth: the answer to a gateway's per-request auth hook (nginx
// auth_request, Traefik forwardAuth, Envoy ext_authz, Caddy forward_auth).
const (
	// apiKeyHeader carries the API key on /v1/auth, whose Authorization
	// header is the user's; the other /v1 routes accept it too.
	apiKeyHeader      = "X-Sessioncache-Key"
	defaultAuthCookie = "sc_session"

	headerUserID    = "X-Auth-User-Id"
	headerSessionID = "X-Auth-Session-Id"
	headerExpiresAt = "X-Auth-Expires-At"
)

// forwardAuth answers whether the request carries the current token of a
// live session, in Authorization: Bearer <token> or else in the auth
// cookie. Valid: 200 with no body and the X-Auth-* headers. Refused (missing,
// malformed, unknown, expired, rotated or revoked): 401 with
// WWW-Authenticate. Redis trouble: 503 with Retry-After; a session record
// that contradicts its token: 500. It writes nothing: a token is never
// rotated here, so a gateway may call it for every request.
func (s *server) forwardAuth(ctx context.Context, r *http.Request) reply {
	tok, ok := credential(r, s.authCookie)
	if !ok {
		return invalidToken("missing")
	}
	if len(tok) > maxTokenLen {
		return invalidToken("malformed")
	}
	info, err := s.store().Validate(ctx, tok)
	if reason := tokenOutcome(err); reason != "" {
		return invalidToken(reason)
	}
	if err != nil {
		return failure(err)
	}
	return reply{status: http.StatusOK, outcome: "ok",
		auth: []string{headerValue(info.UserID), headerValue(info.SessionID), timestamp(info.ExpiresAt)}}
}

// credential returns the bearer token of the Authorization header, or else
// the value of the cookie named cookie. Only one of them is ever tried: a
// bearer token that fails is not made good by a cookie.
func credential(r *http.Request, cookie string) (string, bool) {
	if scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " "); strings.EqualFold(scheme, "Bearer") {
		if tok = strings.TrimSpace(tok); tok != "" {
			return tok, true
		}
	}
	if c, err := r.Cookie(cookie); err == nil && c.Value != "" {
		return c.Value, true
	}
	return "", false
}

// invalidToken is the refusal of a token, as RFC 6750 section 3.1 words it.
func invalidToken(reason string) reply {
	return reply{status: http.StatusUnauthorized, outcome: reason,
		body:   errorBody{Error: "invalid_token", ErrorDescription: tokenDescriptions[reason], Reason: reason},
		header: invalidTokenHeader}
}

// invalidTokenHeader is shared by every refusal: writeJSON copies its
// values into the answer, which never changes them.
var invalidTokenHeader = http.Header{"Www-Authenticate": {`Bearer error="invalid_token"`}}

// tokenDescriptions are the error_description of each reason /v1/auth
// refuses a request for.
var tokenDescriptions = map[string]string{
	"missing":   "no bearer token and no session cookie",
	"malformed": "not a token of this service",
	"unknown":   "unknown token",
	"expired":   "the token has expired",
	"revoked":   "the token was rotated, or its session has ended",
}

// headerValue makes an opaque id safe in an HTTP header: every byte but an
// ASCII letter, digit or one of -._~@|: is percent-encoded (%XX, upper-case
// hex, of its UTF-8 bytes), so that any percent-decoder gives the id back
// (decodeURIComponent, urllib.parse.unquote, url.PathUnescape; '+' is
// encoded, so url.QueryUnescape too). UUIDs, e-mail addresses, integers and
// ids like auth0|507f1f77bcf86cd799439011 pass unchanged.
func headerValue(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !headerSafe(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if headerSafe(c) {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	return string(b)
}

func headerSafe(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~@|:", c) >= 0
}
