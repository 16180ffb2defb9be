package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sessioncache/sessioncache/redisstore"
)

// maxTokenLen bounds refresh_token fields; real tokens are far shorter.
const maxTokenLen = 512

type issueRequest struct {
	UserID     string `json:"user_id"`
	DeviceID   string `json:"device_id"`
	DeviceName string `json:"device_name"`
	IPAddress  string `json:"ip_address"`
	UserAgent  string `json:"user_agent"`
}

type rotateRequest struct {
	RefreshToken string `json:"refresh_token"`
	DeviceID     string `json:"device_id"`
	IPAddress    string `json:"ip_address"`
	UserAgent    string `json:"user_agent"`
}

type tokenRequest struct {
	RefreshToken string `json:"refresh_token"`
}

// tokenHolder is a request that carries a refresh token.
type tokenHolder interface{ token() string }

func (r *rotateRequest) token() string { return r.RefreshToken }
func (r *tokenRequest) token() string  { return r.RefreshToken }

type grantBody struct {
	RefreshToken     string `json:"refresh_token"`
	SessionID        string `json:"session_id"`
	UserID           string `json:"user_id"`
	ExpiresAt        string `json:"expires_at"`
	SessionExpiresAt string `json:"session_expires_at"`
}

type introspectBody struct {
	Active           bool   `json:"active"`
	UserID           string `json:"user_id,omitempty"`
	SessionID        string `json:"session_id,omitempty"`
	ExpiresAt        string `json:"expires_at,omitempty"`
	SessionExpiresAt string `json:"session_expires_at,omitempty"`
}

type sessionBody struct {
	SessionID        string `json:"session_id"`
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
// keeps.
func timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

func grantReply(status int, g redisstore.Grant, outcome string) reply {
	return reply{status: status, outcome: outcome, body: grantBody{
		RefreshToken:     g.Token,
		SessionID:        g.SessionID,
		UserID:           g.UserID,
		ExpiresAt:        timestamp(g.ExpiresAt),
		SessionExpiresAt: timestamp(g.SessionExpiresAt),
	}}
}

func (s *server) issue(r *http.Request) reply {
	var req issueRequest
	if rp, ok := decodeJSON(r, &req); !ok {
		return rp
	}
	user, rp, ok := parseUUID("user_id", req.UserID)
	if !ok {
		return rp
	}
	g, err := s.store.Issue(r.Context(), user, redisstore.Client{
		DeviceID: req.DeviceID, DeviceName: req.DeviceName, IPAddress: req.IPAddress, UserAgent: req.UserAgent,
	})
	if err != nil {
		return failure(err)
	}
	return grantReply(http.StatusCreated, g, "ok")
}

func (s *server) rotate(r *http.Request) reply {
	var req rotateRequest
	if rp, ok := decodeJSON(r, &req); !ok {
		return rp
	}
	g, err := s.store.Rotate(r.Context(), req.RefreshToken, redisstore.Client{
		DeviceID: req.DeviceID, IPAddress: req.IPAddress, UserAgent: req.UserAgent,
	})
	if reason := tokenOutcome(err); reason != "" {
		rp := reply{status: http.StatusUnauthorized, outcome: reason, body: errorBody{Error: "invalid_grant", Reason: reason}}
		if errors.Is(err, redisstore.ErrNotReplicated) {
			rp.err = err // the reuse revocation may not survive a failover
		}
		return rp
	}
	if err != nil {
		return failure(err)
	}
	if g.Replayed {
		return grantReply(http.StatusOK, g, "grace_replay")
	}
	return grantReply(http.StatusOK, g, "ok")
}

// introspect answers as RFC 7662 does: any token that is not the current
// token of a live session is simply inactive.
func (s *server) introspect(r *http.Request) reply {
	var req tokenRequest
	if rp, ok := decodeJSON(r, &req); !ok {
		return rp
	}
	info, err := s.store.Validate(r.Context(), req.RefreshToken)
	if reason := tokenOutcome(err); reason != "" {
		return reply{status: http.StatusOK, outcome: reason, body: introspectBody{Active: false}}
	}
	if err != nil {
		return failure(err)
	}
	return reply{status: http.StatusOK, outcome: "ok", body: introspectBody{
		Active:           true,
		UserID:           info.UserID,
		SessionID:        info.SessionID,
		ExpiresAt:        timestamp(info.ExpiresAt),
		SessionExpiresAt: timestamp(info.SessionExpiresAt),
	}}
}

// revokeToken answers 200 whatever the token, as RFC 7009 says, unless
// Redis failed.
func (s *server) revokeToken(r *http.Request) reply {
	var req tokenRequest
	if rp, ok := decodeJSON(r, &req); !ok {
		return rp
	}
	n, err := s.store.RevokeToken(r.Context(), req.RefreshToken)
	if reason := tokenOutcome(err); reason != "" {
		return reply{status: http.StatusOK, outcome: reason, body: revokedBody{}}
	}
	if err != nil {
		return failure(err)
	}
	return reply{status: http.StatusOK, outcome: "ok", body: revokedBody{Revoked: n}}
}

func (s *server) listSessions(r *http.Request) reply {
	user, rp, ok := parseUUID("user_id", r.PathValue("user_id"))
	if !ok {
		return rp
	}
	q := r.URL.Query()
	opt := redisstore.ListOptions{Cursor: q.Get("cursor")}
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > redisstore.MaxListLimit {
			return badRequest(http.StatusBadRequest, fmt.Sprintf("limit must be an integer from 1 to %d", redisstore.MaxListLimit))
		}
		opt.Limit = n
	}
	page, err := s.store.ListSessions(r.Context(), user, opt)
	if err != nil {
		return failure(err)
	}
	out := sessionsBody{Sessions: make([]sessionBody, 0, len(page.Sessions)), NextCursor: page.Next}
	for _, x := range page.Sessions {
		out.Sessions = append(out.Sessions, sessionBody{
			SessionID:        x.ID,
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

func (s *server) revokeSession(r *http.Request) reply {
	user, rp, ok := parseUUID("user_id", r.PathValue("user_id"))
	if !ok {
		return rp
	}
	session, rp, ok := parseUUID("session_id", r.PathValue("session_id"))
	if !ok {
		return rp
	}
	n, err := s.store.RevokeSession(r.Context(), user, session)
	if err != nil {
		return failure(err)
	}
	return reply{status: http.StatusOK, outcome: "ok", body: revokedBody{Revoked: n}}
}

func (s *server) revokeAll(r *http.Request) reply {
	user, rp, ok := parseUUID("user_id", r.PathValue("user_id"))
	if !ok {
		return rp
	}
	var keep string
	if q := r.URL.Query(); q.Has("except") {
		keep, rp, ok = parseUUID("except", q.Get("except"))
		if !ok {
			return rp
		}
	}
	n, err := s.store.RevokeAll(r.Context(), user, keep)
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
			body: errorBody{Error: "server_error", Reason: "session record does not match its token"}}
	case errors.Is(err, redisstore.ErrNotReplicated):
		return reply{status: http.StatusServiceUnavailable, outcome: "not_replicated", err: err,
			body:   errorBody{Error: "unavailable", Reason: "the revocation is applied but not yet acknowledged by enough replicas; retry"},
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

// decodeJSON reads a request body of one JSON object with known fields
// only, and checks the refresh token of a tokenHolder.
func decodeJSON(r *http.Request, dst any) (reply, bool) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return badRequest(http.StatusUnsupportedMediaType, "Content-Type must be application/json"), false
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return badRequest(http.StatusUnsupportedMediaType, "the body must be UTF-8 JSON, not charset "+cs), false
	}
	body, err := io.ReadAll(r.Body)
	if err == nil {
		// A key given twice is read differently by different parsers (a
		// proxy or a WAF may see the first, encoding/json keeps the last).
		err = noDuplicateKeys(body)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err == nil {
		err = dec.Decode(dst)
	}
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("the body holds more than one JSON value")
	}
	if err == nil {
		if th, ok := dst.(tokenHolder); ok {
			return checkToken(th.token())
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

// noDuplicateKeys reports an object in body that names a key twice. Syntax
// errors are left to the decoder, which describes them better.
func noDuplicateKeys(body []byte) error {
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
					return fmt.Errorf("the key %q appears twice", t)
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

func checkToken(tok string) (reply, bool) {
	switch {
	case tok == "":
		return badRequest(http.StatusBadRequest, "refresh_token is required"), false
	case len(tok) > maxTokenLen:
		return badRequest(http.StatusBadRequest, fmt.Sprintf("refresh_token is longer than %d bytes", maxTokenLen)), false
	}
	return reply{}, true
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

// checkQuery refuses query parameters other than allowed: tokens never
// travel in URLs, and a typo should not be silently ignored.
func checkQuery(r *http.Request, allowed ...string) (reply, bool) {
	for k := range r.URL.Query() {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			return badRequest(http.StatusBadRequest, "unknown query parameter "+fmt.Sprintf("%.40q", k)), false
		}
	}
	return reply{}, true
}
