package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/sessionauth"
	"github.com/sessioncache/sessioncache/redisstore"
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

// forwardAuth answers whether the request carries a live access token,
// in Authorization: Bearer <token> or else in the auth cookie: its
// signature and exp are checked here, and its session must still live
// (from memory while the revocation feed vouches for it; see sessionauth).
// A token bound to a DPoP key must come in Authorization: DPoP <token>
// with a proof of that key for the original request (checkBoundAccess):
// the proof's jti is then the one Redis command.
// Valid: 200 with no body and the X-Auth-* headers. Refused (missing,
// malformed, unknown, expired, revoked): 401 with WWW-Authenticate. A
// request that carries a refresh token anywhere (a header or a cookie) is
// refused with reason refresh_token, counted and logged: the refresh token
// belongs to the token endpoint only, and the client that sends it
// elsewhere leaks it. Redis trouble: 503 with Retry-After. It writes
// nothing, so a gateway may call it for every request.
func (s *server) forwardAuth(ctx context.Context, r *http.Request) reply {
	if s.headersMayHoldRefreshToken(r) {
		if where := s.refreshTokenIn(r); where != "" {
			return s.refreshTokenPresented(r, where)
		}
	}
	tok, dpopScheme, reason := credential(r, s.authCookie)
	if reason != "" {
		return invalidToken(reason)
	}
	c, err := s.tokens.Verify(tok)
	if err != nil {
		return invalidToken(accessOutcome(err))
	}
	if c.JKT != "" || dpopScheme {
		if rp, ok := s.checkBoundAccess(ctx, r, tok, dpopScheme, c); !ok {
			return rp
		}
	}
	if _, err := s.gate.Check(ctx, c.Subject, c.SessionID, c.ExpiresAt); err != nil {
		if errors.Is(err, sessionauth.ErrEnded) {
			return invalidToken("revoked")
		}
		return failure(err)
	}
	return reply{status: http.StatusOK, outcome: "ok",
		auth: []string{headerValue(c.Subject), c.SessionID, timestamp(c.ExpiresAt)}}
}

// headersMayHoldRefreshToken reports whether any header value holds the
// refresh tokens' prefix: only then is refreshTokenIn worth its work.
func (s *server) headersMayHoldRefreshToken(r *http.Request) bool {
	for _, vs := range r.Header {
		for _, v := range vs {
			if strings.Contains(v, s.tokenPrefix) {
				return true
			}
		}
	}
	return false
}

// refreshTokenPresented refuses a request that carries a refresh token, and
// says so in the log (with where the client is, as the gateway and the peer
// tell it) and in a metric.
func (s *server) refreshTokenPresented(r *http.Request, where string) reply {
	s.metrics.refreshTokenAtAuth.Inc()
	s.log.LogAttrs(r.Context(), slog.LevelWarn, "refresh token presented to forward auth: refused; the client leaks its refresh token",
		slog.String("in", where),
		slog.String("remote", r.RemoteAddr),
		slog.String("x_forwarded_for", logText(r.Header.Get("X-Forwarded-For"))),
		slog.String("x_real_ip", logText(r.Header.Get("X-Real-Ip"))),
		slog.String("http_user_agent", logText(r.UserAgent())))
	return invalidToken("refresh_token")
}

// credential returns the token of the Authorization header, Bearer or
// DPoP (dpopScheme), or else the value of the cookie named cookie. Only one
// of them is ever tried: a token in the header that fails is not made good
// by a cookie. A request whose credential is ambiguous is refused
// (reason ambiguous_credentials), never resolved by a pick: two
// Authorization headers, two cookies of the name (one may have been set by
// a sibling subdomain or for a longer path), or a header and a cookie that
// differ. Otherwise reason is "missing" when there is no credential, or "".
func credential(r *http.Request, cookie string) (tok string, dpopScheme bool, reason string) {
	auth, ok1 := oneHeader(r, "Authorization")
	c, ok2 := oneCookie(r, cookie)
	if !ok1 || !ok2 {
		return "", false, reasonAmbiguous
	}
	scheme, tok, _ := strings.Cut(auth, " ")
	bearer := strings.EqualFold(scheme, "Bearer")
	if bearer || strings.EqualFold(scheme, "DPoP") {
		if tok = strings.TrimSpace(tok); tok != "" {
			if c != "" && c != tok {
				return "", false, reasonAmbiguous
			}
			return tok, !bearer, ""
		}
	}
	if c != "" {
		return c, false, ""
	}
	return "", false, "missing"
}

// reasonAmbiguous refuses a request that carries a credential more than
// once, or two that differ.
const reasonAmbiguous = "ambiguous_credentials"

// oneHeader returns the value of the header name ("" without it); ok is
// false if the request carries it more than once.
func oneHeader(r *http.Request, name string) (v string, ok bool) {
	switch vs := r.Header.Values(name); len(vs) {
	case 0:
		return "", true
	case 1:
		return vs[0], true
	}
	return "", false
}

// oneCookie returns the value of the cookie name ("" without it); ok is
// false if the request carries two or more cookies of that name, whatever
// their values.
func oneCookie(r *http.Request, name string) (v string, ok bool) {
	switch cs := r.CookiesNamed(name); len(cs) {
	case 0:
		return "", true
	case 1:
		return cs[0].Value, true
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
	"missing":       "no bearer token and no session cookie",
	"dpop_required": "this access token is bound to a DPoP key: send it as Authorization: DPoP, with a proof",
	"not_bound":     "this access token is not bound to a DPoP key: send it as Authorization: Bearer",
	"malformed":     "not a token of this service",
	"unknown":       "unknown token",
	"expired":       "the token has expired",
	"revoked":       "the session of this access token has ended",
	"refresh_token": "a refresh token was sent: it belongs only to the token endpoint; send the access token",
	reasonAmbiguous: "more than one credential: two Authorization headers, two session cookies, or a bearer token and a session cookie that differ; send one",
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

// onStoreEvent counts the store's security events, and hands the
// revocations this instance makes to the session memory before the call
// that made them returns: this instance refuses the session at once, the
// others when the revocation feed brings it.
func (s *server) onStoreEvent(ctx context.Context, e redisstore.Event) {
	s.metrics.onEvent(ctx, e)
	switch e.Kind {
	case redisstore.EventSessionRevoked, redisstore.EventReuseDetected, redisstore.EventSessionEvicted:
		s.gate.Notice(redisstore.Notice{Kind: redisstore.NoticeRevoked, Reason: e.Reason, SessionIDs: []string{e.SessionID}})
	}
}

// watchRevocations feeds the revocation feed of st to the session memory
// until ctx ends, and sweeps the memory once a minute. It logs when the feed
// is lost and back: meanwhile every forward auth asks Redis.
func (s *server) watchRevocations(ctx context.Context, st *redisstore.Store, heartbeat time.Duration) {
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-sweep.C:
				s.gate.Sweep()
			}
		}
	}()
	lost := false
	st.WatchRevocations(ctx, heartbeat, func(n redisstore.Notice) {
		s.gate.Notice(n)
		switch n.Kind {
		case redisstore.NoticeSubscribed:
			s.metrics.feedNotices.WithLabelValues("subscribed").Inc()
			if lost {
				s.log.Info("revocation feed subscribed again: forward auth answers from memory again")
			}
			lost = false
		case redisstore.NoticeLost:
			s.metrics.feedNotices.WithLabelValues("lost").Inc()
			lost = true
			s.log.Warn("revocation feed lost: forward auth asks Redis until it is back", "error", fmt.Sprint(n.Err))
		case redisstore.NoticeRevoked:
			s.metrics.feedNotices.WithLabelValues("revoked").Inc()
		}
	})
}
