package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/accesstoken"
	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/sessionauth"
	"github.com/sessioncache/sessioncache/redisstore"
)

// maxTokenLen bounds refresh_token fields; real tokens are far shorter.
const maxTokenLen = 512

// maxAccessTokenLen bounds an access token (accesstoken.MaxTokenLen).
const maxAccessTokenLen = accesstoken.MaxTokenLen

type issueRequest struct {
	UserID     string `json:"user_id"`
	ClientID   string `json:"client_id"`
	DeviceID   string `json:"device_id"`
	DeviceName string `json:"device_name"`
	IPAddress  string `json:"ip_address"`
	UserAgent  string `json:"user_agent"`
	DPoPJKT    string `json:"dpop_jkt"`
	DPoPProof  string `json:"dpop_proof"`
	DPoPHTM    string `json:"dpop_htm"`
	DPoPHTU    string `json:"dpop_htu"`
}

type rotateRequest struct {
	RefreshToken string `json:"refresh_token"`
	ClientID     string `json:"client_id"`
	DeviceID     string `json:"device_id"`
	IPAddress    string `json:"ip_address"`
	UserAgent    string `json:"user_agent"`
	DPoPJKT      string `json:"dpop_jkt"`
	DPoPProof    string `json:"dpop_proof"`
	DPoPHTM      string `json:"dpop_htm"`
	DPoPHTU      string `json:"dpop_htu"`
}

// dpopFields name the DPoP key of a login or a rotation through the API:
// a thumbprint the app checked itself (JKT: dpop_jkt), or a proof the
// client sent the app (Proof: dpop_proof), with the method and URI of the
// request the app received it with (HTM, HTU: dpop_htm, dpop_htu), which
// the service checks.
type dpopFields struct{ JKT, Proof, HTM, HTU string }

func (r *issueRequest) dpop() dpopFields {
	return dpopFields{r.DPoPJKT, r.DPoPProof, r.DPoPHTM, r.DPoPHTU}
}

func (r *rotateRequest) dpop() dpopFields {
	return dpopFields{r.DPoPJKT, r.DPoPProof, r.DPoPHTM, r.DPoPHTU}
}

type tokenRequest struct {
	RefreshToken string `json:"refresh_token"`
}

// tokenHolder is a request that carries a refresh token.
type tokenHolder interface{ token() string }

func (r *rotateRequest) token() string { return r.RefreshToken }
func (r *tokenRequest) token() string  { return r.RefreshToken }

// grantBody is a login's or a rotation's answer: an access token as RFC
// 6749 section 5.1 names it, the refresh token, and the session.
type grantBody struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int64  `json:"expires_in"`
	RefreshToken     string `json:"refresh_token"`
	SessionID        string `json:"session_id"`
	UserID           string `json:"user_id"`
	ClientID         string `json:"client_id"`
	ExpiresAt        string `json:"expires_at"`
	SessionExpiresAt string `json:"session_expires_at"`
}

// introspectBody is an RFC 7662 answer: active, and for an active token the
// standard claims (sub, sid, client_id, exp, iat, token_type, and cnf for a
// token bound to a DPoP key, RFC 9449 section 6.2) and this API's own
// fields.
type introspectBody struct {
	Active           bool          `json:"active"`
	Sub              string        `json:"sub,omitempty"`
	Sid              string        `json:"sid,omitempty"`
	ClientID         string        `json:"client_id,omitempty"`
	Exp              int64         `json:"exp,omitempty"`
	Iat              int64         `json:"iat,omitempty"`
	TokenType        string        `json:"token_type,omitempty"`
	Cnf              *confirmation `json:"cnf,omitempty"`
	UserID           string        `json:"user_id,omitempty"`
	SessionID        string        `json:"session_id,omitempty"`
	ExpiresAt        string        `json:"expires_at,omitempty"`
	SessionExpiresAt string        `json:"session_expires_at,omitempty"`
}

// confirmation is a cnf claim (RFC 7800) of a token bound to a DPoP key:
// the key's RFC 7638 thumbprint.
type confirmation struct {
	JKT string `json:"jkt"`
}

// confirmationOf is the cnf of a token bound to jkt, or nil.
func confirmationOf(jkt string) *confirmation {
	if jkt == "" {
		return nil
	}
	return &confirmation{JKT: jkt}
}

// tokenTypeOf is the token_type of an access token bound to jkt (RFC 9449
// section 5): DPoP, or Bearer.
func tokenTypeOf(jkt string) string {
	if jkt == "" {
		return "Bearer"
	}
	return "DPoP"
}

type sessionBody struct {
	SessionID        string `json:"session_id"`
	ClientID         string `json:"client_id"`
	DPoPBound        bool   `json:"dpop_bound"`
	DeviceID         string `json:"device_id"`
	DeviceName       string `json:"device_name"`
	IPAddress        string `json:"ip_address"`
	UserAgent        string `json:"user_agent"`
	CreatedAt        string `json:"created_at"`
	LastUsedAt       string `json:"last_used_at"`
	ExpiresAt        string `json:"expires_at"`
	SessionExpiresAt string `json:"session_expires_at"`
}

type sessionsBody struct {
	Sessions []sessionBody `json:"sessions"`
	// NextCursor fetches the next page; absent after the last.
	NextCursor string `json:"next_cursor,omitempty"`
}

type revokedBody struct {
	Revoked int `json:"revoked"`
}

// timestamp formats a time as RFC 3339 in UTC, to the millisecond the store
// keeps: the layout timestampLayout, without time.Format's parsing of it
// for the years 0 to 9999.
func timestamp(t time.Time) string {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.Format(timestampLayout)
	}
	hour, minute, sec := t.Clock()
	b := []byte("0000-00-00T00:00:00.000Z")
	digits := func(at, v, n int) {
		for i := at + n - 1; i >= at; i-- {
			b[i] = byte('0' + v%10)
			v /= 10
		}
	}
	digits(0, year, 4)
	digits(5, int(month), 2)
	digits(8, day, 2)
	digits(11, hour, 2)
	digits(14, minute, 2)
	digits(17, sec, 2)
	digits(20, t.Nanosecond()/1e6, 3)
	return string(b)
}

const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

// grantReply answers a login or a rotation begun at m: the grant and an
// access token for its session, which forward auth then knows live, bound
// to the DPoP key jkt if not "".
func (s *server) grantReply(status int, g redisstore.Grant, jkt, outcome string, m sessionauth.Mark) reply {
	at, expiresIn, err := s.accessToken(g, jkt)
	if err != nil {
		return failure(err)
	}
	s.gate.Saw(g.SessionID, time.Now().Add(time.Duration(expiresIn)*time.Second), m)
	return reply{status: status, outcome: outcome, body: grantBody{
		AccessToken:      at,
		TokenType:        tokenTypeOf(jkt),
		ExpiresIn:        expiresIn,
		RefreshToken:     g.Token,
		SessionID:        g.SessionID,
		UserID:           g.UserID,
		ClientID:         g.ClientID,
		ExpiresAt:        timestamp(g.ExpiresAt),
		SessionExpiresAt: timestamp(g.SessionExpiresAt),
	}}
}

func (s *server) issue(ctx context.Context, r *http.Request) reply {
	var req issueRequest
	if rp, ok := decodeJSON(r, &req); !ok {
		return rp
	}
	user := userID(req.UserID)
	if user == unaddressableUserID {
		return badRequest(http.StatusBadRequest, `user id "/" is refused: no path can name it (/v1/users/%2F/sessions is a trailing slash to the router)`)
	}
	switch {
	case req.ClientID == "":
		return badRequest(http.StatusBadRequest, "client_id is required: the OAuth client the session is for, whose refreshes alone it accepts")
	case !s.clients.Load().Known(req.ClientID):
		return badRequest(http.StatusBadRequest, fmt.Sprintf("client_id %.40q is not a registered client", req.ClientID))
	}
	jkt, rp, ok := s.apiKey(ctx, req.dpop())
	if !ok {
		return rp
	}
	m := s.gate.Begin()
	g, err := s.store().Issue(ctx, user, redisstore.Client{
		ClientID: req.ClientID, JKT: jkt, DeviceID: req.DeviceID, DeviceName: req.DeviceName, IPAddress: req.IPAddress, UserAgent: req.UserAgent,
	})
	if err != nil {
		return failure(err)
	}
	return s.grantReply(http.StatusCreated, g, g.JKT, "ok", m)
}

func (s *server) rotate(ctx context.Context, r *http.Request) reply {
	var req rotateRequest
	if rp, ok := decodeJSON(r, &req); !ok {
		return rp
	}
	jkt, rp, ok := s.apiKey(ctx, req.dpop())
	if !ok {
		return rp
	}
	m := s.gate.Begin()
	g, err := s.store().Rotate(ctx, req.RefreshToken, redisstore.Client{
		ClientID: req.ClientID, JKT: jkt, DeviceID: req.DeviceID, IPAddress: req.IPAddress, UserAgent: req.UserAgent,
	})
	if errors.Is(err, redisstore.ErrWrongClient) {
		return invalidGrant("wrong_client")
	}
	if rp, refused := s.keyRefusal(r, err); refused {
		return rp
	}
	if reason := tokenOutcome(err); reason != "" {
		rp := invalidGrant(reason)
		if reason == "reused" {
			s.logReuse(r, g, err, slog.String("ip_address", logText(req.IPAddress)), slog.String("user_agent", logText(req.UserAgent)))
		}
		if errors.Is(err, redisstore.ErrNotReplicated) {
			rp.err = err // the reuse revocation may not survive a failover
		}
		return rp
	}
	if err != nil {
		return failure(err)
	}
	if g.Replayed {
		return s.grantReply(http.StatusOK, g, g.JKT, "grace_replay", m)
	}
	return s.grantReply(http.StatusOK, g, g.JKT, "ok", m)
}

// logReuse logs the reuse of a refresh token (theft): the session revoked,
// and who presented the replayed token: the peer the service sees (remote;
// the service reads no X-Forwarded-For), the caller's User-Agent header
// (http_user_agent), and what the request says of the device (attrs).
//
// Client text (the header, attrs) is written through logText.
func (s *server) logReuse(r *http.Request, g redisstore.Grant, err error, attrs ...slog.Attr) {
	all := append([]slog.Attr{slog.String("user_id", logText(g.UserID)), slog.String("session_id", g.SessionID),
		slog.String("operation", r.URL.Path), slog.String("remote", r.RemoteAddr), slog.String("http_user_agent", logText(r.UserAgent()))}, attrs...)
	if errors.Is(err, redisstore.ErrNotReplicated) {
		all = append(all, slog.String("replication", err.Error()))
	}
	s.log.LogAttrs(r.Context(), slog.LevelWarn, "refresh token reuse detected: session revoked", all...)
}

// invalidGrant is the refusal of a refresh token, as RFC 6749 section 5.2
// words it: 400, with this API's reason.
func invalidGrant(reason string) reply {
	return reply{status: http.StatusBadRequest, outcome: reason,
		body: errorBody{Error: "invalid_grant", ErrorDescription: grantDescriptions[reason], Reason: reason}}
}

// grantDescriptions are the error_description of each reason a refresh
// token is refused for (see tokenOutcome).
var grantDescriptions = map[string]string{
	"malformed":    "not a refresh token of this service",
	"unknown":      "unknown refresh token",
	"expired":      "the refresh token has expired",
	"revoked":      "the session of this refresh token has ended",
	"reused":       "refresh token reused: its session is revoked",
	"wrong_client": "the refresh token was issued to another client",
}

// introspect answers as RFC 7662 does, for both kinds of token: any token
// that is not a live access token or the current refresh token of a live
// session is simply inactive. The token comes in a JSON body
// (refresh_token) or in a form (token, with token_type_hint, which is not
// needed: the two kinds cannot be mistaken for each other).
func (s *server) introspect(ctx context.Context, r *http.Request) reply {
	tok, _, rp, ok := decodeToken(r)
	if !ok {
		return rp
	}
	if !strings.HasPrefix(tok, s.tokenPrefix) {
		return s.introspectAccess(ctx, tok)
	}
	info, err := s.store().Validate(ctx, tok)
	if reason := tokenOutcome(err); reason != "" {
		return reply{status: http.StatusOK, outcome: reason, body: introspectBody{Active: false}}
	}
	if err != nil {
		return failure(err)
	}
	return reply{status: http.StatusOK, outcome: "ok", body: introspectBody{
		Active:    true,
		Sub:       info.UserID,
		Sid:       info.SessionID,
		ClientID:  info.ClientID,
		Exp:       info.ExpiresAt.Unix(),
		Iat:       info.SessionExpiresAt.Add(-s.absoluteTTL).Unix(),
		TokenType: "refresh_token",
		// The same, in this API's own names and format.
		UserID:           info.UserID,
		SessionID:        info.SessionID,
		ExpiresAt:        timestamp(info.ExpiresAt),
		SessionExpiresAt: timestamp(info.SessionExpiresAt),
	}}
}

// introspectAccess introspects tok as an access token: active while it
// verifies, has not expired and its session lives.
func (s *server) introspectAccess(ctx context.Context, tok string) reply {
	c, err := s.tokens.Verify(tok)
	if err != nil {
		return reply{status: http.StatusOK, outcome: accessOutcome(err), body: introspectBody{Active: false}}
	}
	if _, err := s.gate.Check(ctx, c.Subject, c.SessionID, c.ExpiresAt); err != nil {
		if errors.Is(err, sessionauth.ErrEnded) {
			return reply{status: http.StatusOK, outcome: "revoked", body: introspectBody{Active: false}}
		}
		return failure(err)
	}
	return reply{status: http.StatusOK, outcome: "ok", body: introspectBody{
		Active:    true,
		Sub:       c.Subject,
		Sid:       c.SessionID,
		ClientID:  c.ClientID,
		Exp:       c.ExpiresAt.Unix(),
		Iat:       c.IssuedAt.Unix(),
		TokenType: tokenTypeOf(c.JKT),
		Cnf:       confirmationOf(c.JKT),
		UserID:    c.Subject,
		SessionID: c.SessionID,
		ExpiresAt: timestamp(c.ExpiresAt),
	}}
}

// revokeToken answers 200 whatever the token, as RFC 7009 says, unless
// Redis failed, and ends the token's session: a refresh token's, or an
// access token's (RFC 7009 section 2.1 lets revoking an access token end
// the grant behind it). The token comes in a JSON body (refresh_token) or
// in a form (token).
func (s *server) revokeToken(ctx context.Context, r *http.Request) reply {
	tok, _, rp, ok := decodeToken(r)
	if !ok {
		return rp
	}
	var n int
	var err error
	if strings.HasPrefix(tok, s.tokenPrefix) {
		n, err = s.store().RevokeToken(ctx, tok)
	} else if c, verr := s.tokens.Verify(tok); verr != nil {
		// Not an access token: perhaps a refresh token imported from a SQL
		// table, which the store takes with SESSIONCACHE_LEGACY_HASH set
		// (without it, ErrMalformed, and no Redis call).
		if n, err = s.store().RevokeToken(ctx, tok); errors.Is(err, redisstore.ErrMalformed) {
			return reply{status: http.StatusOK, outcome: accessOutcome(verr), body: revokedBody{}}
		}
	} else {
		n, err = s.store().RevokeSession(ctx, c.Subject, c.SessionID)
	}
	if reason := tokenOutcome(err); reason != "" {
		return reply{status: http.StatusOK, outcome: reason, body: revokedBody{}}
	}
	if err != nil {
		return failure(err)
	}
	return reply{status: http.StatusOK, outcome: "ok", body: revokedBody{Revoked: n}}
}

func (s *server) listSessions(ctx context.Context, r *http.Request) reply {
	user := userID(r.PathValue("user_id"))
	q := r.URL.Query()
	opt := redisstore.ListOptions{Cursor: q.Get("cursor")}
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > redisstore.MaxListLimit {
			return badRequest(http.StatusBadRequest, fmt.Sprintf("limit must be an integer from 1 to %d", redisstore.MaxListLimit))
		}
		opt.Limit = n
	}
	page, err := s.store().ListSessions(ctx, user, opt)
	if err != nil {
		return failure(err)
	}
	out := sessionsBody{Sessions: make([]sessionBody, 0, len(page.Sessions)), NextCursor: page.Next}
	for _, x := range page.Sessions {
		out.Sessions = append(out.Sessions, sessionBody{
			SessionID:        x.ID,
			ClientID:         x.ClientID,
			DPoPBound:        x.KeyBound,
			DeviceID:         x.DeviceID,
			DeviceName:       x.DeviceName,
			IPAddress:        x.IPAddress,
			UserAgent:        x.UserAgent,
			CreatedAt:        timestamp(x.CreatedAt),
			LastUsedAt:       timestamp(x.LastUsedAt),
			ExpiresAt:        timestamp(x.ExpiresAt),
			SessionExpiresAt: timestamp(x.SessionExpiresAt),
		})
	}
	return reply{status: http.StatusOK, outcome: "ok", body: out}
}

func (s *server) revokeSession(ctx context.Context, r *http.Request) reply {
	user := userID(r.PathValue("user_id"))
	session, rp, ok := parseUUID("session_id", r.PathValue("session_id"))
	if !ok {
		return rp
	}
	n, err := s.store().RevokeSession(ctx, user, session)
	if err != nil {
		return failure(err)
	}
	return reply{status: http.StatusOK, outcome: "ok", body: revokedBody{Revoked: n}}
}

func (s *server) revokeAll(ctx context.Context, r *http.Request) reply {
	user := userID(r.PathValue("user_id"))
	var keep string
	if q := r.URL.Query(); q.Has("except") {
		k, rp, ok := parseUUID("except", q.Get("except"))
		if !ok {
			return rp
		}
		keep = k
	}
	n, err := s.store().RevokeAll(ctx, user, keep)
	var arg *redisstore.ArgumentError
	if errors.As(err, &arg) && arg.Field == "keep" {
		// The library's keep is this API's except.
		return badRequest(http.StatusBadRequest, "except "+arg.Reason)
	}
	if err != nil {
		return failure(err)
	}
	return reply{status: http.StatusOK, outcome: "ok", body: revokedBody{Revoked: n}}
}

// tokenOutcome names the outcome of presenting a token that was refused,
// or returns "" if err is no such refusal. ErrReused also matches
// ErrRevoked, so it is checked first.
func tokenOutcome(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, redisstore.ErrMalformed):
		return "malformed"
	case errors.Is(err, redisstore.ErrUnknown):
		return "unknown"
	case errors.Is(err, redisstore.ErrExpired):
		return "expired"
	case errors.Is(err, redisstore.ErrReused):
		return "reused"
	case errors.Is(err, redisstore.ErrRevoked):
		return "revoked"
	}
	return ""
}

// failure answers an error that is not about a token: bad input is 400; a
// session record that contradicts its token (tampering or damage in Redis)
// is 500, logged at error level; anything else means Redis could not do the
// work: 503.
func failure(err error) reply {
	var arg *redisstore.ArgumentError
	switch {
	case errors.As(err, &arg):
		return badRequest(http.StatusBadRequest, arg.Field+" "+arg.Reason)
	case errors.Is(err, redisstore.ErrCorrupt):
		return reply{status: http.StatusInternalServerError, outcome: "corrupt", err: err,
			body: errorBody{Error: "server_error", Reason: "session record damaged or not matching its token"}}
	case errors.Is(err, redisstore.ErrNotReplicated):
		return reply{status: http.StatusServiceUnavailable, outcome: "not_replicated", err: err,
			body:   errorBody{Error: "unavailable", Reason: "the revocation is applied but not yet acknowledged by enough replicas; retry"},
			header: http.Header{"Retry-After": {"1"}}}
	case errors.Is(err, redisstore.ErrMoved):
		// An instance still configured for the Redis the data moved from,
		// during a rolling update: the client retries and reaches one on
		// the new Redis.
		return reply{status: http.StatusServiceUnavailable, outcome: "moved",
			body: errorBody{Error: "temporarily_unavailable", Reason: "moved",
				ErrorDescription: "the user's sessions moved to another Redis; retry (an instance on it answers)"},
			header: http.Header{"Retry-After": {"1"}}}
	case errors.Is(err, context.Canceled):
		return reply{status: http.StatusServiceUnavailable, outcome: "canceled", body: errorBody{Error: "unavailable", Reason: "request canceled"}}
	}
	return reply{status: http.StatusServiceUnavailable, outcome: "unavailable", err: err,
		body:   errorBody{Error: "unavailable", Reason: "redis unavailable"},
		header: http.Header{"Retry-After": {"1"}}}
}

func badRequest(status int, reason string) reply {
	if len(reason) > 200 {
		reason = reason[:200] + "..."
	}
	return reply{status: status, outcome: "invalid_request", body: errorBody{Error: "invalid_request", Reason: reason}}
}

// Request body media types.
const (
	mediaJSON = "application/json"
	mediaForm = "application/x-www-form-urlencoded"
)

// mediaType returns the media type of a request body, refusing a charset
// other than UTF-8 (RFC 8259 makes JSON UTF-8; a form is read as UTF-8
// too).
func mediaType(r *http.Request) (string, reply, bool) {
	ct := r.Header.Get("Content-Type")
	if ct == mediaJSON || ct == mediaForm {
		return ct, reply{}, true
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", reply{}, true
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return "", badRequest(http.StatusUnsupportedMediaType, "the body must be UTF-8, not charset "+cs), false
	}
	return mt, reply{}, true
}

// decodeToken reads the token of an RFC 7662 or RFC 7009 request: a JSON
// body {"refresh_token"} or a form with token and an optional
// token_type_hint (access_token or refresh_token), which it returns.
func decodeToken(r *http.Request) (tok, hint string, rp reply, ok bool) {
	mt, rp, ok := mediaType(r)
	if !ok {
		return "", "", rp, false
	}
	if mt == mediaForm {
		form, rp, ok := decodeForm(r)
		if !ok {
			return "", "", rp, false
		}
		tok, hint = form.Get("token"), form.Get("token_type_hint")
		if tok == "" && form.Has("refresh_token") {
			return "", "", badRequest(http.StatusBadRequest, "token is required (refresh_token is the name in a JSON body, token in a form)"), false
		}
		if len(tok) > maxAccessTokenLen {
			return "", "", badRequest(http.StatusBadRequest, fmt.Sprintf("token is longer than %d bytes", maxAccessTokenLen)), false
		}
		if tok == "" {
			return "", "", badRequest(http.StatusBadRequest, "token is required"), false
		}
		return tok, hint, reply{}, true
	}
	var req tokenRequest
	if rp, ok := decodeJSON(r, &req); !ok {
		if rp.status == http.StatusUnsupportedMediaType {
			rp = badRequest(http.StatusUnsupportedMediaType, "Content-Type must be "+mediaJSON+" or "+mediaForm)
		}
		return "", "", rp, false
	}
	return req.RefreshToken, "refresh_token", reply{}, true
}

// decodeForm reads an application/x-www-form-urlencoded body as strictly
// as a JSON one: within the size limit, UTF-8, and no parameter twice
// (RFC 6749 section 3.2). A parameter without a value is as good as absent,
// and parameters the route does not know are ignored, both as RFC 6749
// section 3.2 asks of OAuth endpoints (RFC 7662 and RFC 7009 clients may
// send client_id and the like). Query parameters are not read: a token
// never travels in a URL.
func decodeForm(r *http.Request) (url.Values, reply, bool) {
	body, err := io.ReadAll(r.Body)
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, badRequest(http.StatusBadRequest, fmt.Sprintf("the body is larger than %d bytes", tooLarge.Limit)), false
	case err != nil:
		return nil, badRequest(http.StatusBadRequest, "the body could not be read"), false
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, badRequest(http.StatusBadRequest, "the body is not a valid form ("+mediaForm+")"), false
	}
	for k, vs := range form {
		if len(vs) > 1 {
			return nil, badRequest(http.StatusBadRequest, fmt.Sprintf("the parameter %.40q appears twice", k)), false
		}
		if !utf8.ValidString(k) || !utf8.ValidString(vs[0]) {
			return nil, badRequest(http.StatusBadRequest, "the body is not valid UTF-8"), false
		}
		if vs[0] == "" {
			delete(form, k)
		}
	}
	return form, reply{}, true
}

// decodeJSON reads a request body of one JSON object with known fields
// only, and checks the refresh token of a tokenHolder. Whatever another
// parser could read differently is refused: a key given twice, a key that
// matches a field only by case or Unicode folding (encoding/json would take
// it for the field), invalid UTF-8 and unpaired UTF-16 surrogates (which
// encoding/json would replace with U+FFFD).
func decodeJSON(r *http.Request, dst any) (reply, bool) {
	mt, rp, ok := mediaType(r)
	if !ok {
		return rp, false
	}
	if mt != mediaJSON {
		return badRequest(http.StatusUnsupportedMediaType, "Content-Type must be "+mediaJSON), false
	}
	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer bodyBuffers.Put(buf)
	buf.Reset()
	_, err := buf.ReadFrom(r.Body)
	if err == nil {
		// What clients send takes the fast path; the general one decides
		// the rest, and words its refusals.
		body := buf.Bytes()
		if f, ok := dst.(stringFields); !ok || !decodeFlat(string(body), f) {
			err = decodeStrict(body, dst)
		}
	}
	if err == nil {
		if th, ok := dst.(tokenHolder); ok {
			return checkToken("refresh_token", th.token())
		}
		return reply{}, true
	}
	var tooLarge *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	reason := "the body is not a valid JSON object"
	switch {
	case errors.As(err, &tooLarge):
		reason = fmt.Sprintf("the body is larger than %d bytes", tooLarge.Limit)
	case errors.Is(err, io.EOF):
		reason = "the body is empty"
	case errors.Is(err, io.ErrUnexpectedEOF):
		reason = "the body is not valid JSON (it ends too soon)"
	case errors.As(err, &syntax):
		reason = fmt.Sprintf("the body is not valid JSON (at byte %d)", syntax.Offset)
	case errors.As(err, &typ):
		reason = fmt.Sprintf("%s must be a %s", typ.Field, typ.Type)
		if typ.Field == "" {
			reason = "the body must be a JSON object"
		}
	default:
		// "json: unknown field \"x\"" has no error type of its own.
		reason = strings.TrimPrefix(err.Error(), "json: ")
	}
	return badRequest(http.StatusBadRequest, reason), false
}

// decodeStrict decodes body into dst as decodeJSON describes.
func decodeStrict(body []byte, dst any) error {
	if !utf8.Valid(body) {
		return errors.New("the body is not valid UTF-8")
	}
	if err := checkSurrogates(body); err != nil {
		return err
	}
	if err := checkKeys(body, jsonFields(dst)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return err
	}
	if dec.Decode(&struct{}{}) != io.EOF {
		return errors.New("the body holds more than one JSON value")
	}
	return nil
}

// fieldCache maps a request type to the set of its JSON field names.
var fieldCache sync.Map

// jsonFields returns the JSON names of the fields of the struct dst points
// to, or nil if it is not a pointer to a struct.
func jsonFields(dst any) map[string]bool {
	t := reflect.TypeOf(dst)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	t = t.Elem()
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]bool)
	}
	fields := map[string]bool{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			fields[name] = true
		}
	}
	fieldCache.Store(t, fields)
	return fields
}

// checkKeys reports an object in body that names a key twice, and a key of
// the top-level object that is not exactly one of fields (if fields is not
// nil). encoding/json matches keys to fields ignoring case and Unicode
// folding (USER_ID and u\u017fer_id are user_id to it) and keeps the last of
// duplicates, where a proxy or a WAF may read the first or only the exact
// key. Keys are compared decoded ("user\u005fid" is user_id). Syntax errors
// are left to the decoder, which describes them better.
func checkKeys(body []byte, fields map[string]bool) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	type frame struct {
		keys   map[string]bool
		object bool
		key    bool // the next string token is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if top != nil && top.object {
					top.key = true
				}
				stack = append(stack, &frame{keys: map[string]bool{}, object: t == '{', key: t == '{'})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if top != nil && top.object && top.key {
				if top.keys[t] {
					return fmt.Errorf("the key %.40q appears twice", t)
				}
				if len(stack) == 1 && fields != nil && !fields[t] {
					return unknownKey(t, fields)
				}
				top.keys[t] = true
				top.key = false
				continue
			}
		}
		if top != nil && top.object {
			top.key = true
		}
	}
}

// unknownKey describes a key that is not a field: as encoding/json does, or
// naming the field it differs from only by case or folding.
func unknownKey(key string, fields map[string]bool) error {
	for f := range fields {
		if strings.EqualFold(key, f) {
			return fmt.Errorf("the key %.40q is not %q: keys are case-sensitive", key, f)
		}
	}
	return fmt.Errorf("unknown field %.40q", key)
}

// checkSurrogates refuses a \u escape of half a UTF-16 surrogate pair
// without its other half: encoding/json would quietly make it U+FFFD.
// Anything else is left to the decoder.
func checkSurrogates(body []byte) error {
	const bad = "the body holds an unpaired UTF-16 surrogate (\\u%04x), which is not a character"
	inString := false
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case !inString:
			inString = c == '"'
		case c == '"':
			inString = false
		case c == '\\':
			r, ok := escapedRune(body[i:])
			if !ok {
				i++ // a one-character escape, or bad syntax the decoder reports
				continue
			}
			i += 5
			if !utf16.IsSurrogate(r) {
				continue
			}
			low, ok := escapedRune(body[i+1:])
			if r >= 0xdc00 || !ok || low < 0xdc00 || low > 0xdfff {
				return fmt.Errorf(bad, r)
			}
			i += 6
		}
	}
	return nil
}

// escapedRune decodes the \uXXXX escape b starts with.
func escapedRune(b []byte) (rune, bool) {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range b[2:6] {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// checkToken checks the size of the refresh token in the field name.
func checkToken(name, tok string) (reply, bool) {
	switch {
	case tok == "":
		return badRequest(http.StatusBadRequest, name+" is required"), false
	case len(tok) > maxTokenLen:
		return badRequest(http.StatusBadRequest, fmt.Sprintf("%s is longer than %d bytes", name, maxTokenLen)), false
	}
	return reply{}, true
}

// unaddressableUserID is the one user id the service refuses although the
// store takes it: Go's ServeMux reads a path segment that is only %2F as a
// trailing slash, so no /v1/users/{user_id}/... path could name this user
// (to list its sessions or log it out everywhere).
const unaddressableUserID = "/"

// userID returns a user id as the store takes it: any string, which the
// store refuses if it is empty, over 256 bytes, not UTF-8 or holds control
// or bidirectional formatting characters (400, naming the user id). A UUID
// in its 36-character form is written in lower case, so that a user whose
// id is a UUID has one id whatever the caller's case; other ids are
// compared byte for byte.
func userID(v string) string {
	if len(v) == 36 {
		if id, err := uuid.Parse(v); err == nil {
			return id.String()
		}
	}
	return v
}

// parseUUID accepts a UUID in its 36-character form and returns it in
// lower case, so that one user has one id whatever the caller's case.
func parseUUID(name, v string) (string, reply, bool) {
	id, err := uuid.Parse(v)
	if err != nil || len(v) != 36 {
		return "", badRequest(http.StatusBadRequest, name+" must be a UUID (such as 123e4567-e89b-12d3-a456-426614174000)"), false
	}
	return id.String(), reply{}, true
}

// checkQuery reads the query string as strictly as a JSON body: a
// parameter other than allowed (tokens never travel in URLs, and a typo
// should not be silently ignored), a parameter given twice (which one
// counts would be a guess: ?except=S2&except=S1), a query that does not
// parse (a bad escape, a semicolon) and invalid UTF-8 are refused. Handlers
// then read r.URL.Query().
func checkQuery(r *http.Request, allowed ...string) (reply, bool) {
	if r.URL.RawQuery == "" {
		return reply{}, true
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return badRequest(http.StatusBadRequest, "the query string does not parse (an escape, or a semicolon)"), false
	}
	for k, vs := range q {
		switch {
		case !slices.Contains(allowed, k):
			return badRequest(http.StatusBadRequest, "unknown query parameter "+fmt.Sprintf("%.40q", k)), false
		case len(vs) > 1:
			return badRequest(http.StatusBadRequest, fmt.Sprintf("the query parameter %.40q appears twice", k)), false
		case !utf8.ValidString(vs[0]):
			return badRequest(http.StatusBadRequest, "the query string is not valid UTF-8"), false
		}
	}
	return reply{}, true
}
