package main

// The standard wire formats (RFC 6749 errors, RFC 7662 and RFC 7009 forms),
// any user id, and the strict reading of JSON bodies.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sessioncache/sessioncache/redisstore"
)

var formHeader = http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}

// Introspection and revocation take the RFC 7662 / RFC 7009 form: token,
// an ignored token_type_hint, and other parameters (client credentials)
// ignored.
func TestTokenForms(t *testing.T) {
	e := newTestEnv(t, withStoreOptions(func(o *redisstore.Options) { o.IdleTTL, o.AbsoluteTTL = time.Hour, 48*time.Hour }))
	g := e.login("auth0|507f1f77bcf86cd799439011", "laptop")
	tok := g.str("refresh_token")
	form := "token=" + url.QueryEscape(tok) + "&token_type_hint=access_token&client_id=gateway&client_secret=&scope=x"
	r := e.send("POST", "/v1/tokens/introspect", form, formHeader)
	sessionExpires, _ := time.Parse(time.RFC3339, g.str("session_expires_at"))
	if r.status != http.StatusOK || r.body["active"] != true || r.str("sub") != "auth0|507f1f77bcf86cd799439011" || r.str("sid") != g.str("session_id") ||
		r.str("token_type") != "refresh_token" || r.body["iat"] != float64(sessionExpires.Add(-48*time.Hour).Unix()) {
		t.Errorf("introspect form: %d %s, want active, sub, sid, and iat 48h before the session's end", r.status, r.raw)
	}
	// charset=utf-8 is welcome.
	h := http.Header{"Content-Type": {"application/x-www-form-urlencoded; charset=UTF-8"}}
	if r := e.send("POST", "/v1/tokens/revoke", form, h); r.status != http.StatusOK || r.raw != "{\"revoked\":1}\n" {
		t.Errorf("revoke form: %d %s, want 200 {\"revoked\":1}", r.status, r.raw)
	}
	if r := e.send("POST", "/v1/tokens/introspect", "token="+url.QueryEscape(tok), formHeader); r.status != http.StatusOK || r.raw != "{\"active\":false}\n" {
		t.Errorf("introspect form after revocation: %d %s, want inactive", r.status, r.raw)
	}
	// RFC 7009: 200 whatever the token.
	if r := e.send("POST", "/v1/tokens/revoke", "token=nonsense", formHeader); r.status != http.StatusOK || r.raw != "{\"revoked\":0}\n" {
		t.Errorf("revoke form of garbage: %d %s, want 200 {\"revoked\":0}", r.status, r.raw)
	}
	m := e.scrape()
	for _, want := range []string{
		`sessioncache_requests_total{operation="introspect",outcome="ok"} 1`,
		`sessioncache_requests_total{operation="introspect",outcome="revoked"} 1`,
		`sessioncache_requests_total{operation="revoke",outcome="malformed"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// Every refusal of a refresh token is RFC 6749's 400 invalid_grant, with an
// error_description and this API's reason; 401 is for the API key only.
func TestRefusedTokensAreInvalidGrant(t *testing.T) {
	const key = "grant-test-api-key-0123456789"
	e := newTestEnv(t, withAPIKey(key))
	g := e.login(alice, "laptop")
	t0 := g.str("refresh_token")
	t1 := e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(t0)).str("refresh_token")
	e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(t1))
	expired := e.login(bob, "old").str("refresh_token")
	for _, tc := range []struct{ name, tok, reason string }{
		{"garbage", "hello", "malformed"},
		{"forged", forge(t0), "unknown"},
		{"replayed", t0, "reused"},
		{"after the replay", t1, "revoked"},
	} {
		r := e.must(http.StatusBadRequest, "POST", "/v1/tokens/rotate", refreshBody(tc.tok))
		want := map[string]any{"error": "invalid_grant", "error_description": grantDescriptions[tc.reason], "reason": tc.reason}
		if d := cmp.Diff(want, r.body); d != "" || grantDescriptions[tc.reason] == "" {
			t.Errorf("%s token: body (-want +got):\n%s", tc.name, d)
		}
	}
	e.b.Clock.Advance(redisstore.DefaultIdleTTL)
	if r := e.must(http.StatusBadRequest, "POST", "/v1/tokens/rotate", refreshBody(expired)); r.str("reason") != "expired" || r.str("error_description") != grantDescriptions["expired"] {
		t.Errorf("expired token: %s", r.raw)
	}
	h := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer wrong-key-0123456789"}}
	if r := e.send("POST", "/v1/tokens/rotate", refreshBody(t0), h); r.status != http.StatusUnauthorized || r.str("error") != "unauthorized" {
		t.Errorf("a wrong API key: %d %s, want 401 unauthorized", r.status, r.raw)
	}
}

// User ids are opaque strings: whatever an identity provider hands out
// works through JSON bodies and (percent-encoded) paths, and each names its
// own user.
func TestAnyUserID(t *testing.T) {
	e := newTestEnv(t)
	ids := []string{
		"auth0|507f1f77bcf86cd799439011",
		"user@example.com",
		"12345",
		"012345",
		"ユーザー/山田",
		"Влади́мир",
		"a/b", "a%2Fb", "a//b", "//", "/a", "a/", "%", "100%", "with space", " 12345", "a+b", "a?b#c&d=e", `back\slash`, `"quoted"`,
		".", "..", "...", "../../metrics",
		strings.Repeat("x", redisstore.MaxUserIDLen),
		strings.Repeat("é", redisstore.MaxUserIDLen/2),
		strings.ToUpper(alice) + "x", // not a UUID: kept as it is
	}
	sessions := map[string]string{}
	tokens := map[string]string{}
	for _, id := range ids {
		body, _ := json.Marshal(map[string]string{"client_id": "test-app", "user_id": id})
		g := e.must(http.StatusCreated, "POST", "/v1/sessions", string(body))
		if g.str("user_id") != id {
			t.Errorf("login of %q answered user_id %q", id, g.str("user_id"))
		}
		sessions[id], tokens[id] = g.str("session_id"), g.str("refresh_token")
	}
	for _, id := range ids {
		path := "/v1/users/" + pathSegment(id) + "/sessions"
		r := e.must(http.StatusOK, "GET", path, "")
		list, _ := r.body["sessions"].([]any)
		if len(list) != 1 || list[0].(map[string]any)["session_id"] != sessions[id] {
			t.Errorf("GET %s: %s, want the one session of %q", path, r.raw, id)
		}
		if r := e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(tokens[id])); r.str("sub") != id || r.str("user_id") != id {
			t.Errorf("introspect a token of %q: %s", id, r.raw)
		}
	}
	// One session by path, then everything but nothing else.
	for i, id := range ids {
		path := "/v1/users/" + pathSegment(id) + "/sessions"
		if i%2 == 0 {
			path += "/" + sessions[id]
		}
		if r := e.must(http.StatusOK, "DELETE", path, ""); r.raw != "{\"revoked\":1}\n" {
			t.Errorf("DELETE %s: %s, want 1 revoked", path, r.raw)
		}
		if r := e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(tokens[id])); r.body["active"] != false {
			t.Errorf("the session of %q is still active after DELETE %s", id, path)
		}
		if i+1 < len(ids) {
			if r := e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(tokens[ids[i+1]])); r.body["active"] != true {
				t.Errorf("DELETE %s ended the session of %q too", path, ids[i+1])
			}
		}
	}
}

// The one id no path can name ("/": Go's router takes /v1/users/%2F/ for a
// trailing slash) is refused at login, so that every session can be listed
// and logged out.
func TestSlashUserIDRefused(t *testing.T) {
	e := newTestEnv(t)
	if r := e.do("POST", "/v1/sessions", `{"client_id":"test-app","user_id":"/"}`); r.status != http.StatusBadRequest || !strings.Contains(r.str("reason"), `user id "/" is refused`) {
		t.Errorf("login as /: %d %s, want 400", r.status, r.raw)
	}
	// Not through the OpenAPI check, which reads the path as the document does.
	resp, err := http.Get(e.base + "/v1/users/%2F/sessions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /v1/users/%%2F/sessions: %d; if the router now takes it, user id / can be allowed", resp.StatusCode)
	}
	if keys, err := e.b.Keys(context.Background()); err != nil || len(keys) != 0 {
		t.Errorf("keys after a refused login: %q %v", keys, err)
	}
}

// A UUID names one user whatever its case: it is written in lower case, as
// before user ids were opaque. Other ids keep their case.
func TestUUIDUserIDsIgnoreCase(t *testing.T) {
	e := newTestEnv(t)
	g := e.login(strings.ToUpper(alice), "laptop")
	if g.str("user_id") != alice {
		t.Errorf("login as %s answered user_id %q, want %s", strings.ToUpper(alice), g.str("user_id"), alice)
	}
	for _, id := range []string{alice, strings.ToUpper(alice), strings.ToUpper(alice[:8]) + alice[8:]} {
		r := e.must(http.StatusOK, "GET", "/v1/users/"+id+"/sessions", "")
		if !strings.Contains(r.raw, g.str("session_id")) {
			t.Errorf("GET /v1/users/%s/sessions: %s, want the session", id, r.raw)
		}
	}
	if r := e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(g.str("refresh_token"))); r.str("sub") != alice {
		t.Errorf("introspect: sub %q, want %s", r.str("sub"), alice)
	}
	// Case matters in any other id.
	e.login("User@Example.com", "phone")
	if r := e.must(http.StatusOK, "GET", "/v1/users/user@example.com/sessions", ""); r.raw != "{\"sessions\":[]}\n" {
		t.Errorf("user@example.com lists %s, want the sessions of User@Example.com kept apart", r.raw)
	}
}

// Keys that are exact field names, even written with escapes, and text with
// surrogate pairs are fine.
func TestStrictJSONAcceptsWhatIsUnambiguous(t *testing.T) {
	e := newTestEnv(t)
	g := e.must(http.StatusCreated, "POST", "/v1/sessions", `{"client_id":"test-app","user\u005fid":"`+alice+`","device_name":"\ud83d\ude00 caf\u00e9 `+"\u00e9"+`"}`)
	if g.str("user_id") != alice {
		t.Fatalf("login: %s", g.raw)
	}
	r := e.must(http.StatusOK, "GET", "/v1/users/"+alice+"/sessions", "")
	list, _ := r.body["sessions"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["device_name"] != "\U0001F600 café é" {
		t.Errorf("sessions: %s, want the device name with its emoji", r.raw)
	}
	// A nested object may repeat the names of the top level's fields: it is
	// refused for its type, not for its keys.
	if r := e.do("POST", "/v1/tokens/rotate", `{"refresh_token":{"REFRESH_TOKEN":"x"}}`); r.status != http.StatusBadRequest || !strings.Contains(r.str("reason"), "refresh_token must be a string") {
		t.Errorf("nested object: %d %s", r.status, r.raw)
	}
}

// pathSegment percent-encodes a user id for a path, as a client must: "."
// and ".." are path syntax even when url.PathEscape leaves them alone.
func pathSegment(id string) string {
	if id == "." || id == ".." {
		return strings.Repeat("%2E", len(id))
	}
	return url.PathEscape(id)
}

// The OpenAPI checker holds the new formats to the document: forms, the
// introspection claims, escaped user ids, and invalid_grant as a 400 only.
func TestOpenAPICheckKnowsTheWireFormats(t *testing.T) {
	for _, tc := range []struct {
		name, path, ctype, reqBody string
		status                     int
		respBody, complaint        string // complaint "": none
	}{
		{"a form", "/v1/tokens/introspect", "application/x-www-form-urlencoded", "token=x&client_id=y", 200, `{"active":false}`, ""},
		{"a form without token", "/v1/tokens/introspect", "application/x-www-form-urlencoded", "token_type_hint=x", 200, `{"active":false}`, "token"},
		{"the claims", "/v1/tokens/introspect", "application/json", `{"refresh_token":"x"}`, 200,
			`{"active":true,"sub":"a/b","sid":"` + bob + `","exp":2,"iat":1,"token_type":"refresh_token"}`, ""},
		{"a claim of the wrong type", "/v1/tokens/introspect", "application/json", `{"refresh_token":"x"}`, 200, `{"active":true,"iat":"now"}`, "iat"},
		{"another token type", "/v1/tokens/introspect", "application/json", `{"refresh_token":"x"}`, 200, `{"active":true,"token_type":"access_token"}`, "token_type"},
		{"invalid_grant as a 400", "/v1/tokens/rotate", "application/json", `{"refresh_token":"x"}`, 400,
			`{"error":"invalid_grant","error_description":"unknown refresh token","reason":"unknown"}`, ""},
		{"invalid_grant as a 401", "/v1/tokens/rotate", "application/json", `{"refresh_token":"x"}`, 401, `{"error":"invalid_grant","reason":"unknown"}`, "invalid_grant"},
		{"evicting policy", "/v1/sessions", "application/json", `{"client_id":"test-app","user_id":"x"}`, 503,
			`{"error":"temporarily_unavailable","error_description":"d","reason":"evicting_policy"}`, ""},
		{"an escaped user id", "/v1/users/a%2Fb%20c/sessions", "", "", 200, `{"sessions":[]}`, ""},
		{"an oversize user id", "/v1/users/" + strings.Repeat("x", 257) + "/sessions", "", "", 200, `{"sessions":[]}`, "user_id"},
	} {
		fake := roundTripFunc(func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: tc.status, Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(strings.NewReader(tc.respBody))}, nil
		})
		var complaints []string
		c := newOpenAPICheck(t, fake).(*openAPICheck)
		c.errorf = func(format string, args ...any) { complaints = append(complaints, fmt.Sprintf(format, args...)) }
		method, body := "GET", io.Reader(nil)
		if tc.reqBody != "" {
			method, body = "POST", strings.NewReader(tc.reqBody)
		}
		req, _ := http.NewRequest(method, "http://127.0.0.1"+tc.path, body)
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		if _, err := c.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		switch {
		case tc.complaint == "" && len(complaints) > 0:
			t.Errorf("%s: complaints %q, want none", tc.name, complaints)
		case tc.complaint != "" && (len(complaints) != 1 || !strings.Contains(complaints[0], tc.complaint)):
			t.Errorf("%s: complaints %q, want one naming %s", tc.name, complaints, tc.complaint)
		}
	}
}
