package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sessioncache/sessioncache/redisstore"
)

// HTTP drives the sessioncache service (cmd/sessioncache) through its JSON
// API. The service's answers are mapped back to the library's outcomes: a
// 400 invalid_grant with reason "reused" is redisstore.ErrReused, and so on.
type HTTP struct {
	base   string
	apiKey string
	client *http.Client
	// ListLimit is the page size ListSessions asks for (0: the service's
	// default).
	ListLimit int
	// ClientID is the OAuth client that logs in and refreshes when the
	// redisstore.Client given names none (default: DefaultClientID).
	ClientID string
	// DPoP, if set, binds every login to a client's DPoP key and makes the
	// proofs of its refreshes (RFC 9449).
	DPoP *DPoPClient
}

// DPoPClient is a DPoP key as a client holds it: its RFC 7638 thumbprint,
// and what signs a proof for a method, a URI and (if not "") an access
// token.
type DPoPClient struct {
	JKT   string
	Proof func(method, uri, accessToken string) (string, error)
}

// DefaultClientID is the client_id HTTP logs in with by default.
const DefaultClientID = "bench"

// NewHTTP returns a client of the service at base (such as
// "http://127.0.0.1:8080"), sending apiKey as a bearer token if it is not
// empty, over up to conns keep-alive connections.
func NewHTTP(base, apiKey string, conns int) *HTTP {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = conns
	tr.MaxIdleConnsPerHost = conns
	return &HTTP{base: base, apiKey: apiKey, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, ClientID: DefaultClientID}
}

// Grant is the service's answer to a login or a rotation: the refresh
// token, and the access token that goes with it.
type Grant struct {
	RefreshToken string
	SessionID    string
	// AccessToken is the credential of every request through a gateway
	// (GET /v1/auth), until AccessExpiresAt: expires_in counted from when
	// the answer arrived.
	AccessToken     string
	AccessExpiresAt time.Time
}

type httpGrant struct {
	RefreshToken string `json:"refresh_token"`
	SessionID    string `json:"session_id"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int64  `json:"expires_in"`
}

// grant converts the answer that arrived at t.
func (g httpGrant) grant(t time.Time) Grant {
	return Grant{RefreshToken: g.RefreshToken, SessionID: g.SessionID, AccessToken: g.AccessToken,
		AccessExpiresAt: t.Add(time.Duration(g.ExpiresIn) * time.Second)}
}

// clientID is the client_id a call for c sends.
func (h *HTTP) clientID(c redisstore.Client) string {
	if c.ClientID != "" {
		return c.ClientID
	}
	return h.ClientID
}

type httpError struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
}

// call sends one request; a 2xx answer is decoded into out, anything else
// becomes an error.
func (h *HTTP) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if h.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+h.apiKey)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e httpError
		json.Unmarshal(data, &e)
		if resp.StatusCode == http.StatusBadRequest && e.Error == "invalid_grant" {
			return reasonError(e.Reason)
		}
		return fmt.Errorf("bench: %s %s: %s: %s %s", method, path, resp.Status, e.Error, e.Reason)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("bench: %s %s: %w", method, path, err)
		}
	}
	return nil
}

// reasonError maps the service's reason for a refused token to the
// library's error.
func reasonError(reason string) error {
	switch reason {
	case "malformed":
		return redisstore.ErrMalformed
	case "expired":
		return redisstore.ErrExpired
	case "reused":
		return redisstore.ErrReused
	case "revoked":
		return redisstore.ErrRevoked
	case "wrong_client":
		return redisstore.ErrWrongClient
	}
	return redisstore.ErrUnknown
}

// Issue implements Store: POST /v1/sessions.
func (h *HTTP) Issue(ctx context.Context, userID string, c redisstore.Client) (string, error) {
	g, err := h.IssueGrant(ctx, userID, c)
	return g.RefreshToken, err
}

// IssueGrant logs in (POST /v1/sessions) as c's client, or h.ClientID,
// and returns the whole grant.
func (h *HTTP) IssueGrant(ctx context.Context, userID string, c redisstore.Client) (Grant, error) {
	var g httpGrant
	body := map[string]string{
		"user_id": userID, "client_id": h.clientID(c), "device_id": c.DeviceID, "device_name": c.DeviceName,
		"ip_address": c.IPAddress, "user_agent": c.UserAgent,
	}
	if h.DPoP != nil {
		body["dpop_jkt"] = h.DPoP.JKT
	}
	err := h.call(ctx, http.MethodPost, "/v1/sessions", body, &g)
	return g.grant(time.Now()), err
}

// Rotate implements Store: POST /v1/tokens/rotate. The API does not say
// whether an answer was a grace replay: replayed is always false.
func (h *HTTP) Rotate(ctx context.Context, tok string, c redisstore.Client) (string, bool, error) {
	g, err := h.RotateGrant(ctx, tok, c)
	return g.RefreshToken, false, err
}

// RotateGrant refreshes (POST /v1/tokens/rotate) as c's client, or
// h.ClientID, and returns the whole grant.
func (h *HTTP) RotateGrant(ctx context.Context, tok string, c redisstore.Client) (Grant, error) {
	var g httpGrant
	body := map[string]string{
		"refresh_token": tok, "client_id": h.clientID(c), "device_id": c.DeviceID, "ip_address": c.IPAddress, "user_agent": c.UserAgent,
	}
	if h.DPoP != nil {
		body["dpop_jkt"] = h.DPoP.JKT
	}
	err := h.call(ctx, http.MethodPost, "/v1/tokens/rotate", body, &g)
	return g.grant(time.Now()), err
}

// RefreshGrant refreshes at the token endpoint (POST /oauth2/token) as an
// OAuth client does: a form, c's client id (or h.ClientID), no API key.
func (h *HTTP) RefreshGrant(ctx context.Context, tok string, c redisstore.Client) (Grant, error) {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}, "client_id": {h.clientID(c)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.base+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		return Grant{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if h.DPoP != nil {
		// The service's issuer is its own address on loopback: the token
		// endpoint's URI is the one called.
		p, err := h.DPoP.Proof(http.MethodPost, h.base+"/oauth2/token", "")
		if err != nil {
			return Grant{}, err
		}
		req.Header.Set("DPoP", p)
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return Grant{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return Grant{}, err
	}
	if resp.StatusCode != http.StatusOK {
		var e httpError
		json.Unmarshal(data, &e)
		if e.Error == "invalid_grant" {
			return Grant{}, reasonError(e.Reason)
		}
		return Grant{}, fmt.Errorf("bench: POST /oauth2/token: %s: %s", resp.Status, e.Error)
	}
	var g httpGrant
	if err := json.Unmarshal(data, &g); err != nil {
		return Grant{}, fmt.Errorf("bench: POST /oauth2/token: %w", err)
	}
	return g.grant(time.Now()), nil
}

// Validate implements Store: POST /v1/tokens/introspect; an inactive token
// is ErrRevoked (the API does not say why).
func (h *HTTP) Validate(ctx context.Context, tok string) error {
	var r struct {
		Active bool `json:"active"`
	}
	if err := h.call(ctx, http.MethodPost, "/v1/tokens/introspect", map[string]string{"refresh_token": tok}, &r); err != nil {
		return err
	}
	if !r.Active {
		return redisstore.ErrRevoked
	}
	return nil
}

// ListSessions implements Store: GET /v1/users/{id}/sessions, every page.
func (h *HTTP) ListSessions(ctx context.Context, userID string) (int, error) {
	n, cursor := 0, ""
	for {
		var r struct {
			Sessions   []json.RawMessage `json:"sessions"`
			NextCursor string            `json:"next_cursor"`
		}
		q := url.Values{}
		if h.ListLimit > 0 {
			q.Set("limit", strconv.Itoa(h.ListLimit))
		}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		path := "/v1/users/" + url.PathEscape(userID) + "/sessions"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		if err := h.call(ctx, http.MethodGet, path, nil, &r); err != nil {
			return n, err
		}
		n += len(r.Sessions)
		if r.NextCursor == "" {
			return n, nil
		}
		cursor = r.NextCursor
	}
}

// RevokeSession implements Store: POST /v1/tokens/revoke.
func (h *HTTP) RevokeSession(ctx context.Context, tok string) error {
	return h.call(ctx, http.MethodPost, "/v1/tokens/revoke", map[string]string{"refresh_token": tok}, nil)
}

// RevokeAll implements Store: DELETE /v1/users/{id}/sessions.
func (h *HTTP) RevokeAll(ctx context.Context, userID string) (int, error) {
	var r struct {
		Revoked int `json:"revoked"`
	}
	err := h.call(ctx, http.MethodDelete, "/v1/users/"+url.PathEscape(userID)+"/sessions", nil, &r)
	return r.Revoked, err
}
