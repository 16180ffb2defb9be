package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/internal/tokenlayout"
	"github.com/sessioncache/sessioncache/redisstore"
)

// The whole life of a session over HTTP: login, rotation, a grace replay,
// theft detection, listing and logout.
func TestSessionLifecycle(t *testing.T) {
	e := newTestEnv(t)
	laptop := e.login(alice, "laptop")
	phone := e.login(alice, "phone")
	if laptop.str("user_id") != alice || laptop.str("session_id") == phone.str("session_id") {
		t.Fatalf("logins = %v and %v", laptop.body, phone.body)
	}
	t0 := laptop.str("refresh_token")

	e.b.Clock.Advance(time.Minute)
	r1 := e.must(http.StatusOK, "POST", "/v1/tokens/rotate", `{"refresh_token":"`+t0+`","ip_address":"192.0.2.7","user_agent":"curl/8"}`)
	t1 := r1.str("refresh_token")
	if t1 == "" || t1 == t0 || r1.str("session_id") != laptop.str("session_id") || r1.str("session_expires_at") != laptop.str("session_expires_at") {
		t.Fatalf("rotation = %v, want a new token of the same session and the same absolute deadline", r1.body)
	}
	if r1.str("expires_at") <= laptop.str("expires_at") {
		t.Errorf("idle deadline %s did not slide past %s", r1.str("expires_at"), laptop.str("expires_at"))
	}
	// A second tab presents t0 again within the grace window: same successor.
	again := e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(t0))
	if again.str("refresh_token") != t1 {
		t.Fatalf("grace replay returned another token")
	}
	t2 := e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(t1)).str("refresh_token")

	// t0 is now a grandparent: presenting it is theft, the session dies.
	r := e.must(http.StatusBadRequest, "POST", "/v1/tokens/rotate", refreshBody(t0))
	want := map[string]any{"error": "invalid_grant", "error_description": "refresh token reused: its session is revoked", "reason": "reused"}
	if d := cmp.Diff(want, r.body); d != "" {
		t.Errorf("replay (-want +got):\n%s", d)
	}
	r = e.must(http.StatusBadRequest, "POST", "/v1/tokens/rotate", refreshBody(t2))
	if r.str("reason") != "revoked" {
		t.Errorf("newest token after theft: %v, want reason revoked", r.body)
	}
	if r := e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(t2)); r.raw != "{\"active\":false}\n" {
		t.Errorf("introspect after theft = %s", r.raw)
	}

	list := e.must(http.StatusOK, "GET", "/v1/users/"+alice+"/sessions", "")
	sessions, _ := list.body["sessions"].([]any)
	if len(sessions) != 1 || sessions[0].(map[string]any)["session_id"] != phone.str("session_id") || sessions[0].(map[string]any)["device_name"] != "phone" {
		t.Fatalf("sessions after theft = %s, want only the phone", list.raw)
	}
	r = e.must(http.StatusOK, "DELETE", "/v1/users/"+alice+"/sessions", "")
	if r.raw != "{\"revoked\":1}\n" {
		t.Errorf("log out everywhere = %s, want 1 revoked", r.raw)
	}
	if r := e.must(http.StatusOK, "GET", "/v1/users/"+alice+"/sessions", ""); r.raw != "{\"sessions\":[]}\n" {
		t.Errorf("sessions after logout = %s, want an empty list", r.raw)
	}

	metrics := e.scrape()
	for _, want := range []string{
		`sessioncache_session_revocations_total{reason="reuse"} 1`,
		`sessioncache_session_revocations_total{reason="logout_all"} 1`,
		`sessioncache_grace_replays_total 1`,
		`sessioncache_requests_total{operation="rotate",outcome="reused"} 1`,
		`sessioncache_requests_total{operation="rotate",outcome="grace_replay"} 1`,
		`sessioncache_requests_total{operation="issue",outcome="ok"} 2`,
		`sessioncache_request_duration_seconds_count{operation="rotate",outcome="ok"} 2`,
		`sessioncache_redis_pool_connections{state="total"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestIntrospect(t *testing.T) {
	e := newTestEnv(t)
	g := e.login(bob, "cli")
	tok := g.str("refresh_token")
	r := e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(tok))
	expires, _ := time.Parse(time.RFC3339, g.str("expires_at"))
	sessionExpires, _ := time.Parse(time.RFC3339, g.str("session_expires_at"))
	want := map[string]any{"active": true, "user_id": bob, "session_id": g.str("session_id"),
		"expires_at": g.str("expires_at"), "session_expires_at": g.str("session_expires_at"),
		// RFC 7662: numbers are float64 once decoded.
		"sub": bob, "sid": g.str("session_id"), "client_id": testClient, "token_type": "refresh_token",
		"exp": float64(expires.Unix()), "iat": float64(sessionExpires.Add(-redisstore.DefaultAbsoluteTTL).Unix())}
	if d := cmp.Diff(want, r.body); d != "" {
		t.Errorf("introspect (-want +got):\n%s", d)
	}
	// The access token, as a form (with or without a hint) or as JSON: active
	// with its own exp and iat, and token_type Bearer.
	at := g.str("access_token")
	claims := accessClaims(t, at)
	wantAccess := map[string]any{"active": true, "user_id": bob, "session_id": g.str("session_id"), "expires_at": accessExpiry(t, at),
		"sub": bob, "sid": g.str("session_id"), "client_id": testClient, "token_type": "Bearer", "exp": claims["exp"], "iat": claims["iat"]}
	form := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	for _, body := range []string{"token=" + at, "token=" + at + "&token_type_hint=access_token", "token=" + at + "&token_type_hint=refresh_token"} {
		ra := e.send("POST", "/v1/tokens/introspect", body, form)
		if d := cmp.Diff(wantAccess, ra.body); d != "" {
			t.Errorf("introspect the access token (%.60s...) (-want +got):\n%s", body, d)
		}
	}
	for name, bad := range map[string]string{"forged": forgeAccess(at), "not a JWS": "eyJhbGciOiJub25lIn0.e30."} {
		if r := e.send("POST", "/v1/tokens/introspect", "token="+url.QueryEscape(bad), form); r.raw != "{\"active\":false}\n" {
			t.Errorf("introspect %s access token = %s, want inactive", name, r.raw)
		}
	}
	// The same token in an RFC 7662 form gets the same answer.
	if f := e.send("POST", "/v1/tokens/introspect", "token="+url.QueryEscape(tok)+"&token_type_hint=refresh_token", form); f.status != http.StatusOK || f.raw != r.raw {
		t.Errorf("introspect as a form: %d %s, want %s", f.status, f.raw, r.raw)
	}
	for name, tok := range map[string]string{"garbage": "hello", "forged": forge(tok)} {
		if r := e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(tok)); r.raw != "{\"active\":false}\n" {
			t.Errorf("introspect %s = %s, want inactive", name, r.raw)
		}
	}
	e.b.Clock.Advance(redisstore.DefaultIdleTTL + time.Second)
	if r := e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(tok)); r.raw != "{\"active\":false}\n" {
		t.Errorf("introspect expired = %s, want inactive", r.raw)
	}
	if r := e.must(http.StatusBadRequest, "POST", "/v1/tokens/rotate", refreshBody(tok)); r.str("reason") != "expired" {
		t.Errorf("rotate expired = %s, want reason expired", r.raw)
	}
}

// Grace and expiry follow Redis's clock. On real servers the test waits for
// it, so the lifetimes are short.
func TestServerClockDecides(t *testing.T) {
	const idle, grace = time.Second, 300 * time.Millisecond
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		e := newTestEnvOn(t, b, withStoreOptions(func(o *redisstore.Options) {
			o.IdleTTL, o.AbsoluteTTL, o.Grace = idle, time.Minute, grace
		}))
		t0 := e.login(alice, "laptop").str("refresh_token")
		t1 := e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(t0)).str("refresh_token")
		if got := e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(t0)).str("refresh_token"); got != t1 {
			t.Errorf("replay within grace returned another token")
		}
		e.b.Clock.Advance(grace)
		if r := e.must(http.StatusBadRequest, "POST", "/v1/tokens/rotate", refreshBody(t0)); r.str("reason") != "reused" {
			t.Errorf("replay after grace: %s, want reason reused", r.raw)
		}

		tok := e.login(alice, "phone").str("refresh_token")
		e.b.Clock.Advance(idle)
		if r := e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(tok)); r.raw != "{\"active\":false}\n" {
			t.Errorf("introspect after the idle lifetime = %s, want inactive", r.raw)
		}
		if r := e.must(http.StatusBadRequest, "POST", "/v1/tokens/rotate", refreshBody(tok)); r.str("reason") != "expired" {
			t.Errorf("rotate after the idle lifetime = %s, want reason expired", r.raw)
		}
	})
}

func TestRotateRefusals(t *testing.T) {
	e := newTestEnv(t)
	tok := e.login(alice, "laptop").str("refresh_token")
	cases := map[string]string{
		"hello":                                "malformed",
		tok[:len(tok)-8] + "AAAAAAAA":          "malformed", // checksum broken
		strings.Replace(tok, "sct_", "xx_", 1): "malformed",
		forge(tok):                             "unknown",
	}
	for tok, reason := range cases {
		r := e.must(http.StatusBadRequest, "POST", "/v1/tokens/rotate", refreshBody(tok))
		if r.str("error") != "invalid_grant" || r.str("reason") != reason || r.str("error_description") == "" {
			t.Errorf("rotate %.12s...: %s, want invalid_grant/%s", tok, r.raw, reason)
		}
	}
	e.must(http.StatusOK, "POST", "/v1/tokens/revoke", refreshBody(tok))
	if r := e.must(http.StatusBadRequest, "POST", "/v1/tokens/rotate", refreshBody(tok)); r.str("reason") != "revoked" {
		t.Errorf("rotate after logout: %s, want revoked", r.raw)
	}
}

func TestRevoke(t *testing.T) {
	e := newTestEnv(t)
	a := e.login(alice, "a")
	b := e.login(alice, "b")
	c := e.login(alice, "c")
	other := e.login(bob, "x")
	// RFC 7009: 200 whatever the token.
	for _, tok := range []string{"nonsense", a.str("refresh_token"), a.str("refresh_token")} {
		e.must(http.StatusOK, "POST", "/v1/tokens/revoke", refreshBody(tok))
	}
	// One session, by id, only for its own user.
	path := "/v1/users/" + alice + "/sessions/" + b.str("session_id")
	if r := e.must(http.StatusOK, "DELETE", "/v1/users/"+bob+"/sessions/"+b.str("session_id"), ""); r.raw != "{\"revoked\":0}\n" {
		t.Errorf("revoke another user's session = %s, want 0", r.raw)
	}
	if r := e.must(http.StatusOK, "DELETE", path, ""); r.raw != "{\"revoked\":1}\n" {
		t.Errorf("revoke session = %s, want 1", r.raw)
	}
	if r := e.must(http.StatusOK, "DELETE", path, ""); r.raw != "{\"revoked\":0}\n" {
		t.Errorf("revoke session twice = %s, want 0", r.raw)
	}
	d := e.login(alice, "d")
	// Everywhere but d.
	if r := e.must(http.StatusOK, "DELETE", "/v1/users/"+alice+"/sessions?except="+d.str("session_id"), ""); r.raw != "{\"revoked\":1}\n" {
		t.Errorf("revoke all except d = %s, want 1 (c)", r.raw)
	}
	for tok, active := range map[string]bool{
		a.str("refresh_token"): false, b.str("refresh_token"): false, c.str("refresh_token"): false,
		d.str("refresh_token"): true, other.str("refresh_token"): true,
	} {
		r := e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(tok))
		if r.body["active"] != active {
			t.Errorf("after revocations, session %s active = %v, want %v", r.str("session_id"), r.body["active"], active)
		}
	}
	// User ids are case-insensitive UUIDs: the upper-case form names the same user.
	if r := e.must(http.StatusOK, "GET", "/v1/users/"+strings.ToUpper(alice)+"/sessions", ""); !strings.Contains(r.raw, d.str("session_id")) {
		t.Errorf("upper-case user id lists %s, want session d", r.raw)
	}
}

// forge returns a token that passes the checksum but was never issued.
func forge(tok string) string {
	raw, ok := tokenlayout.Decode(tok, redisstore.DefaultTokenPrefix)
	if !ok {
		panic("not a token: " + tok)
	}
	raw[tokenlayout.MAC+2] ^= 1 // a bit of the MAC
	return tokenlayout.Encode(raw, redisstore.DefaultTokenPrefix)
}

// Bad input gets a clear 400 and changes nothing in Redis.
func TestBadInputChangesNothing(t *testing.T) {
	e := newTestEnv(t)
	g := e.login(alice, "laptop")
	tok := g.str("refresh_token")
	before := e.b.Snapshot(t)
	long := strings.Repeat("x", 129)
	cases := []struct {
		method, path, body, reason string
	}{
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"a\u0007b"}`, "user id holds a control character"},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"a\u0085b"}`, "user id holds a control character"},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"\u202e` + alice + `"}`, "user id holds a bidirectional formatting character"},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + strings.Repeat("x", 257) + `"}`, "user id is 257 bytes, at most 256 allowed"},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + strings.Repeat("é", 129) + `"}`, "user id is 258 bytes, at most 256 allowed"},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":""}`, "user id is empty"},
		{"POST", "/v1/sessions", `{"client_id":"test-app"}`, "user id is empty"},
		{"POST", "/v1/sessions", `{"user_id":"` + alice + `"}`, "client_id is required"},
		{"POST", "/v1/sessions", `{"user_id":"` + alice + `","client_id":"a b"}`, "is not a registered client"},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `","admin":true}`, `unknown field "admin"`},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `"`, "not valid JSON"},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `"} {}`, "more than one JSON value"},
		{"POST", "/v1/sessions", `[1]`, "must be a JSON object"},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":42}`, "user_id must be a string"},
		{"POST", "/v1/sessions", ``, "body is empty"},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `","device_name":"` + long + `"}`, "device name is 129 bytes"},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `","ip_address":"localhost"}`, "IP address"},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `","user_agent":"a\u0000b"}`, "control character"},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `","device_id":"` + strings.Repeat("x", maxBodyBytes) + `"}`, "larger than 65536 bytes"},
		{"POST", "/v1/sessions?user_id=" + alice, `{"client_id":"test-app","user_id":"` + alice + `"}`, "unknown query parameter"},
		{"POST", "/v1/tokens/rotate", `{}`, "refresh_token is required"},
		{"POST", "/v1/tokens/rotate", `{"refresh_token":"` + strings.Repeat("a", 513) + `"}`, "longer than 512 bytes"},
		{"POST", "/v1/tokens/rotate", `{"refresh_token":"` + tok + `","device_name":"x"}`, `unknown field "device_name"`},
		{"POST", "/v1/tokens/rotate", `{"refresh_token":"` + tok + `","ip_address":"999.1.1.1"}`, "IP address"},
		{"POST", "/v1/tokens/revoke", `{"token":"` + tok + `"}`, `unknown field "token"`},
		{"POST", "/v1/tokens/rotate", `{"refresh_token":"x","refresh_token":"` + tok + `"}`, `"refresh_token" appears twice`},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `","device_name":"a","ip_address":"192.0.2.1","device_name":"b"}`, `"device_name" appears twice`},
		{"POST", "/v1/tokens/introspect", `{"refresh_token":null}`, "refresh_token is required"},
		// Keys that encoding/json would take for a field, ignoring case and
		// Unicode folding, while a proxy reads only the exact one.
		{"POST", "/v1/tokens/rotate", `{"refresh_token":"x","Refresh_Token":"` + tok + `"}`, `the key "Refresh_Token" is not "refresh_token": keys are case-sensitive`},
		{"POST", "/v1/tokens/revoke", `{"REFRESH_TOKEN":"` + tok + `"}`, `the key "REFRESH_TOKEN" is not "refresh_token"`},
		{"POST", "/v1/tokens/revoke", "{\"refresh_to\u212aen\":\"" + tok + "\"}", `is not "refresh_token"`}, // KELVIN SIGN
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `","USER_ID":"` + bob + `"}`, `the key "USER_ID" is not "user_id"`},
		{"POST", "/v1/sessions", "{\"u\u017fer_id\":\"" + alice + "\"}", "the key \"u\u017fer_id\" is not \"user_id\""},
		{"POST", "/v1/sessions", `{"u\u017fer_id":"` + alice + `"}`, "the key \"u\u017fer_id\" is not \"user_id\""},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `","user\u005fid":"` + bob + `"}`, `the key "user_id" appears twice`},
		// Text that encoding/json would quietly turn into U+FFFD.
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `","device_name":"caf` + "\xe9" + `"}`, "not valid UTF-8"},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `"` + "\xff}", "not valid UTF-8"},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `","device_name":"\ud800"}`, `unpaired UTF-16 surrogate (\ud800)`},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `","device_name":"\uDC00\ud800"}`, `unpaired UTF-16 surrogate (\udc00)`},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `","device_name":"\ud800\u0041"}`, `unpaired UTF-16 surrogate (\ud800)`},
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `","device_name":"\\\ud800"}`, `unpaired UTF-16 surrogate (\ud800)`},
		{"GET", "/v1/users/a%00b/sessions", ``, "user id holds a control character"},
		{"GET", "/v1/users/%ff/sessions", ``, "user id is not valid UTF-8"},
		{"GET", "/v1/users/" + strings.Repeat("x", 257) + "/sessions", ``, "user id is 257 bytes, at most 256 allowed"},
		{"DELETE", "/v1/users/a%0Ab/sessions", ``, "user id holds a control character"},
		{"DELETE", "/v1/users/" + strings.Repeat("%C3%A9", 129) + "/sessions/" + g.str("session_id"), ``, "user id is 258 bytes"},
		{"GET", "/v1/users/" + alice + "/sessions?refresh_token=" + tok, ``, "unknown query parameter"},
		{"DELETE", "/v1/users/" + alice + "/sessions/nope", ``, "session_id must be a UUID"},
		{"DELETE", "/v1/users/" + alice + "/sessions?except=nope", ``, "except must be a UUID"},
		{"DELETE", "/v1/users/" + alice + "/sessions?all=1", ``, "unknown query parameter"},
	}
	for _, tc := range cases {
		r := e.do(tc.method, tc.path, tc.body)
		if r.status != http.StatusBadRequest || r.str("error") != "invalid_request" || !strings.Contains(r.str("reason"), tc.reason) {
			t.Errorf("%s %.60s %.60s: %d %.200s, want 400 invalid_request with %q", tc.method, tc.path, tc.body, r.status, r.raw, tc.reason)
		}
	}
	// A body that is not declared JSON is refused before it is read.
	h := http.Header{"Content-Type": {"text/plain"}}
	if r := e.send("POST", "/v1/sessions", `{"client_id":"test-app","user_id":"`+alice+`"}`, h); r.status != http.StatusUnsupportedMediaType || r.str("error") != "invalid_request" {
		t.Errorf("text/plain body: %d %s, want 415 invalid_request", r.status, r.raw)
	}
	// JSON is UTF-8 (RFC 8259); a body declared otherwise is not guessed at.
	h = http.Header{"Content-Type": {"application/json; charset=utf-16"}}
	if r := e.send("POST", "/v1/tokens/rotate", `{"refresh_token":"`+tok+`"}`, h); r.status != http.StatusUnsupportedMediaType {
		t.Errorf("charset=utf-16 body: %d %s, want 415", r.status, r.raw)
	}
	h = http.Header{"Content-Type": {"application/json; charset=UTF-8"}}
	if r := e.send("POST", "/v1/tokens/introspect", `{"refresh_token":"`+tok+`"}`, h); r.status != http.StatusOK {
		t.Errorf("charset=UTF-8 body: %d %s, want 200", r.status, r.raw)
	}
	// RFC 7662 and RFC 7009 forms are read as strictly.
	form := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	qtok := url.QueryEscape(tok)
	for _, tc := range []struct{ path, body, reason string }{
		{"/v1/tokens/revoke", "token=x&token=" + qtok, `the parameter "token" appears twice`},
		{"/v1/tokens/revoke", "token=" + qtok + "&client_id=a&client_id=b", `the parameter "client_id" appears twice`},
		{"/v1/tokens/revoke", "token=", "token is required"},
		{"/v1/tokens/revoke", "", "token is required"},
		{"/v1/tokens/revoke", "refresh_token=" + qtok, "token is required (refresh_token is the name in a JSON body"},
		{"/v1/tokens/revoke", "TOKEN=" + qtok, "token is required"},
		{"/v1/tokens/introspect", "token_type_hint=refresh_token", "token is required"},
		{"/v1/tokens/revoke", "token=" + qtok + "%ff", "not valid UTF-8"},
		{"/v1/tokens/revoke", "token=" + qtok + "&x%ff=1", "not valid UTF-8"},
		{"/v1/tokens/revoke", "token=%zz", "not a valid form"},
		{"/v1/tokens/revoke", "token=" + qtok + ";x=1", "not a valid form"},
		{"/v1/tokens/revoke", "token=" + strings.Repeat("a", maxAccessTokenLen+1), "token is longer than 4096 bytes"},
		{"/v1/tokens/revoke", "token=" + qtok + "&pad=" + strings.Repeat("x", maxBodyBytes), "larger than 65536 bytes"},
	} {
		r := e.send("POST", tc.path, tc.body, form)
		if r.status != http.StatusBadRequest || r.str("error") != "invalid_request" || !strings.Contains(r.str("reason"), tc.reason) {
			t.Errorf("form %s %.60s: %d %.200s, want 400 invalid_request with %q", tc.path, tc.body, r.status, r.raw, tc.reason)
		}
	}
	for name, tc := range map[string]struct {
		path  string
		ctype string
	}{
		"a form to rotate (JSON only)": {"/v1/tokens/rotate", "application/x-www-form-urlencoded"},
		"a form to log in (JSON only)": {"/v1/sessions", "application/x-www-form-urlencoded"},
		"a form in another charset":    {"/v1/tokens/revoke", "application/x-www-form-urlencoded; charset=iso-8859-1"},
		"multipart":                    {"/v1/tokens/revoke", "multipart/form-data; boundary=x"},
	} {
		if r := e.send("POST", tc.path, "token="+qtok+"&refresh_token="+qtok, http.Header{"Content-Type": {tc.ctype}}); r.status != http.StatusUnsupportedMediaType {
			t.Errorf("%s: %d %s, want 415", name, r.status, r.raw)
		}
	}
	if d := cmp.Diff(before, e.b.Snapshot(t)); d != "" {
		t.Errorf("bad requests changed Redis (-before +after):\n%s", d)
	}
}

func TestAPIKey(t *testing.T) {
	const key = "test-api-key-0123456789"
	e := newTestEnv(t, withAPIKey(key))
	body := `{"client_id":"test-app","user_id":"` + alice + `"}`
	json := http.Header{"Content-Type": {"application/json"}}
	for name, auth := range map[string]string{
		"missing":   "",
		"wrong":     "Bearer test-api-key-0123456780",
		"prefix":    "Bearer test-api-key",
		"no scheme": key,
		"basic":     "Basic " + key,
	} {
		h := json.Clone()
		if auth != "" {
			h.Set("Authorization", auth)
		}
		r := e.send("POST", "/v1/sessions", body, h)
		if r.status != http.StatusUnauthorized || r.str("error") != "unauthorized" || r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s key: %d %s, want 401 unauthorized with WWW-Authenticate", name, r.status, r.raw)
		}
	}
	h := json.Clone()
	h.Set("Authorization", "bearer "+key)
	if r := e.send("POST", "/v1/sessions", body, h); r.status != http.StatusCreated {
		t.Errorf("right key: %d %s, want 201", r.status, r.raw)
	}
	// Probes need no key.
	for _, path := range []string{"/healthz", "/readyz"} {
		if r := e.send("GET", path, "", nil); r.status != http.StatusOK {
			t.Errorf("GET %s without key: %d", path, r.status)
		}
	}
	if m := e.scrape(); !strings.Contains(m, `sessioncache_requests_total{operation="issue",outcome="unauthorized"} 5`) {
		t.Errorf("/metrics does not count the 5 refusals")
	}
}

// Without a key, a request must name a loopback host: a web page cannot
// reach the service through DNS rebinding.
func TestNoKeyLoopbackHostOnly(t *testing.T) {
	e := newTestEnv(t)
	h := http.Header{"Content-Type": {"application/json"}}
	req := func(host string) int {
		r := httptest.NewRequest("POST", "/v1/sessions", strings.NewReader(`{"client_id":"test-app","user_id":"`+alice+`"}`))
		r.Host = host
		r.Header = h.Clone()
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, r)
		return w.Code
	}
	for host, want := range map[string]int{
		"127.0.0.1:8080": http.StatusCreated, "localhost:8080": http.StatusCreated, "[::1]:8080": http.StatusCreated,
		"evil.example:8080": http.StatusForbidden, "10.0.0.1": http.StatusForbidden,
	} {
		if got := req(host); got != want {
			t.Errorf("Host %s: %d, want %d", host, got, want)
		}
	}
}

// With Redis down, the API answers 503 JSON, never 200 or 500; liveness
// stays up and readiness fails.
func TestRedisDown(t *testing.T) {
	e := newTestEnv(t, withFastFailingRedis())
	tok := e.login(alice, "laptop").str("refresh_token")
	e.must(http.StatusOK, "GET", "/readyz", "")
	e.b.Mini.Close()
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/sessions", `{"client_id":"test-app","user_id":"` + alice + `"}`},
		{"POST", "/v1/tokens/rotate", refreshBody(tok)},
		{"POST", "/v1/tokens/introspect", refreshBody(tok)},
		{"POST", "/v1/tokens/revoke", refreshBody(tok)},
		{"GET", "/v1/users/" + alice + "/sessions", ""},
		{"DELETE", "/v1/users/" + alice + "/sessions", ""},
		{"DELETE", "/v1/users/" + alice + "/sessions/" + bob, ""},
	} {
		r := e.do(c.method, c.path, c.body)
		if r.status != http.StatusServiceUnavailable || r.str("error") != "unavailable" || r.header.Get("Retry-After") == "" {
			t.Errorf("%s %s with Redis down: %d %s, want 503 unavailable with Retry-After", c.method, c.path, r.status, r.raw)
		}
	}
	if r := e.do("GET", "/readyz", ""); r.status != http.StatusServiceUnavailable || r.str("reason") != "redis_unavailable" {
		t.Errorf("/readyz with Redis down: %d %s", r.status, r.raw)
	}
	e.must(http.StatusOK, "GET", "/healthz", "")
}

func TestDrainingFailsReadiness(t *testing.T) {
	e := newTestEnv(t)
	e.must(http.StatusOK, "GET", "/readyz", "")
	e.srv.draining.Store(true)
	if r := e.do("GET", "/readyz", ""); r.status != http.StatusServiceUnavailable || r.str("reason") != "draining" {
		t.Errorf("/readyz while draining: %d %s", r.status, r.raw)
	}
	e.must(http.StatusOK, "GET", "/healthz", "")
	e.login(alice, "still served while draining")
}

func TestNotFoundIsJSON(t *testing.T) {
	e := newTestEnv(t)
	if r := e.do("GET", "/v1/nope", ""); r.status != http.StatusNotFound || r.str("error") != "not_found" {
		t.Errorf("unknown path: %d %s", r.status, r.raw)
	}
	if r := e.do("PUT", "/v1/sessions", ""); r.status != http.StatusMethodNotAllowed || r.str("error") != "method_not_allowed" || r.header.Get("Allow") == "" {
		t.Errorf("wrong method: %d %s %v", r.status, r.raw, r.header)
	}
}

func TestPanicBecomes500WithoutStack(t *testing.T) {
	e := newTestEnv(t)
	h := e.srv.wrap(route{op: "boom", api: func(context.Context, *http.Request) reply { panic("secret detail") }})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/boom", nil))
	if w.Code != http.StatusInternalServerError || w.Body.String() != "{\"error\":\"internal_error\"}\n" {
		t.Errorf("panic: %d %q, want 500 {\"error\":\"internal_error\"}", w.Code, w.Body.String())
	}
	if !strings.Contains(e.logs.String(), `"operation":"boom","status":500`) {
		t.Errorf("panic not logged as a 500 request:\n%s", e.logs)
	}
}

// No token and no API key ever reaches the logs or the metrics, whatever
// the client sends and wherever it puts them.
func TestNoSecretsInLogsOrMetrics(t *testing.T) {
	const key = "leak-test-api-key-0123456789"
	e := newTestEnv(t, withAPIKey(key))
	tokens := map[string]bool{}
	g := e.login(alice, "laptop")
	tok := g.str("refresh_token")
	tokens[tok] = true
	next := e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(tok)).str("refresh_token")
	tokens[next] = true
	e.must(http.StatusBadRequest, "POST", "/v1/tokens/rotate", refreshBody(tok+"x"))
	e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(next))
	e.do("POST", "/v1/sessions", `{"`+next+`":1}`)                      // a token as an unknown field
	e.do("GET", "/v1/users/"+next+"/sessions", "")                      // in the path
	e.do("GET", "/v1/users/"+alice+"/sessions?t="+next, "")             // in the query
	e.do("GET", "/"+next, "")                                           // in an unknown path
	e.send("POST", "/v1/tokens/revoke", refreshBody(next), http.Header{ // with a wrong key
		"Content-Type": {"application/json"}, "Authorization": {"Bearer " + next}})
	e.b.Clock.Advance(time.Minute)
	e.must(http.StatusBadRequest, "POST", "/v1/tokens/rotate", refreshBody(tok)) // reuse: logged as an event
	e.must(http.StatusOK, "POST", "/v1/tokens/revoke", refreshBody(next))
	metrics := e.scrape()
	logs := e.logs.String()
	if !strings.Contains(logs, `"outcome":"reused"`) || !strings.Contains(metrics, "sessioncache_requests_total") {
		t.Fatalf("the logs or metrics are not what this test expects:\n%s", logs)
	}
	secrets := []string{key}
	for tk := range tokens {
		// Any 16 characters of a token are too many.
		for i := 0; i+16 <= len(tk); i += 8 {
			secrets = append(secrets, tk[i:i+16])
		}
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("logs hold %q:\n%s", s, logs)
		}
		if strings.Contains(metrics, s) {
			t.Errorf("metrics hold %q", s)
		}
	}
	if strings.Contains(logs, "Authorization") || strings.Contains(logs, "Bearer") {
		t.Errorf("logs mention the Authorization header:\n%s", logs)
	}
}

// A user's sessions come in pages of ?limit= (default 100), each with a
// next_cursor until the last; every session is listed exactly once.
func TestListSessionsPages(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		e := newTestEnvOn(t, b, withStoreOptions(func(o *redisstore.Options) { o.MaxSessions = 2 * redisstore.DefaultListLimit }))
		want := map[string]bool{}
		for i := range redisstore.DefaultListLimit + 1 {
			want[e.login(alice, fmt.Sprint("device ", i)).str("session_id")] = true
		}
		e.login(bob, "not listed")
		for _, tc := range []struct {
			query string
			sizes []int
		}{
			{"", []int{redisstore.DefaultListLimit, 1}},
			{"?limit=40", []int{40, 40, 21}},
			{"?limit=101", []int{101}},
		} {
			got := map[string]bool{}
			var sizes []int
			path := "/v1/users/" + alice + "/sessions" + tc.query
			for {
				r := e.must(http.StatusOK, "GET", path, "")
				sessions, _ := r.body["sessions"].([]any)
				sizes = append(sizes, len(sessions))
				for _, s := range sessions {
					id, _ := s.(map[string]any)["session_id"].(string)
					if got[id] || !want[id] {
						t.Errorf("%s: session %s listed twice or not alice's", tc.query, id)
					}
					got[id] = true
				}
				next, ok := r.body["next_cursor"].(string)
				if !ok || len(sizes) > len(tc.sizes) {
					break
				}
				sep := "?"
				if tc.query != "" {
					sep = tc.query + "&"
				}
				path = "/v1/users/" + alice + "/sessions" + sep + "cursor=" + url.QueryEscape(next)
			}
			if d := cmp.Diff(tc.sizes, sizes); d != "" {
				t.Errorf("%q: page sizes (-want +got):\n%s", tc.query, d)
			}
			if len(got) != len(want) {
				t.Errorf("%q: %d sessions listed, want %d", tc.query, len(got), len(want))
			}
		}
	})
}

func TestListSessionsBadPaging(t *testing.T) {
	e := newTestEnv(t)
	g := e.login(alice, "laptop")
	before := e.b.Snapshot(t)
	limitReason := fmt.Sprintf("limit must be an integer from 1 to %d", redisstore.MaxListLimit)
	for query, reason := range map[string]string{
		"limit=0":                       limitReason,
		"limit=-1":                      limitReason,
		"limit=1001":                    limitReason,
		"limit=":                        limitReason,
		"limit=ten":                     limitReason,
		"limit=1.5":                     limitReason,
		"cursor=nope":                   "cursor",
		"cursor=" + g.str("session_id"): "cursor",
		"cursor=" + strings.Repeat("_", 32) + "&limit=5": "cursor", // a keep-until past 2^48 ms
		"page=2":             "unknown query parameter",
		"limit=5&limit=2000": `the query parameter "limit" appears twice`,
		"limit=5&limit=5":    `the query parameter "limit" appears twice`,
		"cursor=&cursor=":    `the query parameter "cursor" appears twice`,
		"limit=5;limit=2000": "the query string does not parse",
		"limit=%zz":          "the query string does not parse",
		"cursor=%ff":         "the query string is not valid UTF-8",
	} {
		r := e.do("GET", "/v1/users/"+alice+"/sessions?"+query, "")
		if r.status != http.StatusBadRequest || r.str("error") != "invalid_request" || !strings.HasPrefix(r.str("reason"), reason) {
			t.Errorf("?%s: %d %s, want 400 invalid_request starting %q", query, r.status, r.raw, reason)
		}
	}
	r := e.must(http.StatusOK, "GET", "/v1/users/"+alice+"/sessions?limit="+fmt.Sprint(redisstore.MaxListLimit)+"&cursor=", "")
	if sessions, _ := r.body["sessions"].([]any); len(sessions) != 1 || r.body["next_cursor"] != nil {
		t.Errorf("the largest page, from the start: %s, want the one session and no next_cursor", r.raw)
	}
	if d := cmp.Diff(before, e.b.Snapshot(t)); d != "" {
		t.Errorf("listing changed Redis (-before +after):\n%s", d)
	}
}

// "Log out my other devices" keeps a live session of the user; any other
// except is refused, naming the parameter, and revokes nothing.
func TestRevokeAllExceptMustBeLive(t *testing.T) {
	e := newTestEnv(t)
	a := e.login(alice, "a")
	gone := e.login(alice, "gone")
	other := e.login(bob, "x")
	e.must(http.StatusOK, "DELETE", "/v1/users/"+alice+"/sessions/"+gone.str("session_id"), "")
	before := e.b.Snapshot(t)
	for name, id := range map[string]string{
		"unknown":        uuid.NewString(),
		"revoked":        gone.str("session_id"),
		"another user's": other.str("session_id"),
	} {
		r := e.do("DELETE", "/v1/users/"+alice+"/sessions?except="+id, "")
		if r.status != http.StatusBadRequest || r.str("error") != "invalid_request" || !strings.HasPrefix(r.str("reason"), "except ") || strings.Contains(r.str("reason"), "keep") {
			t.Errorf("except %s session: %d %s, want 400 invalid_request about except", name, r.status, r.raw)
		}
	}
	// except given twice: which one counts would be a guess (the first,
	// for url.Values.Get), so neither does.
	for _, q := range []string{"except=" + a.str("session_id") + "&except=" + other.str("session_id"),
		"except=" + a.str("session_id") + "&except=" + a.str("session_id")} {
		r := e.do("DELETE", "/v1/users/"+alice+"/sessions?"+q, "")
		if r.status != http.StatusBadRequest || r.str("error") != "invalid_request" || r.str("reason") != `the query parameter "except" appears twice` {
			t.Errorf("?%s: %d %s, want 400 invalid_request: except appears twice", q, r.status, r.raw)
		}
	}
	if d := cmp.Diff(before, e.b.Snapshot(t)); d != "" {
		t.Errorf("refused revocations changed Redis (-before +after):\n%s", d)
	}
	for _, g := range []response{a, other} {
		if r := e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(g.str("refresh_token"))); r.body["active"] != true {
			t.Errorf("session %s was revoked by a refused call", g.str("session_id"))
		}
	}
}

// A session record whose user id contradicts its token (someone wrote to
// Redis) is the service's problem, not the client's and not an outage: 500,
// counted as corrupt and logged at error level, without the token.
func TestCorruptSession(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		e := newTestEnvOn(t, b)
		tok := e.login(alice, "laptop").str("refresh_token")
		tamper(t, b, bob)
		want := map[string]any{"error": "server_error", "reason": "session record damaged or not matching its token"}
		// Introspection first: it writes nothing; the rotation is applied
		// before the store sees the contradiction; revocation takes any
		// token of the session.
		ops := []string{"introspect", "rotate", "revoke"}
		for _, op := range ops {
			r := e.do("POST", "/v1/tokens/"+op, refreshBody(tok))
			if d := cmp.Diff(want, r.body); r.status != http.StatusInternalServerError || d != "" {
				t.Errorf("%s: status %d, want 500; body (-want +got):\n%s", op, r.status, d)
			}
		}
		metrics := e.scrape()
		if m := "sessioncache_corrupt_records_total 3"; !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
		for _, op := range ops {
			if m := `sessioncache_requests_total{operation="` + op + `",outcome="corrupt"} 1`; !strings.Contains(metrics, m) {
				t.Errorf("/metrics lacks %s", m)
			}
		}
		logs := e.logs.String()
		var errs int
		for _, l := range logLines(logs) {
			if l["level"] == "ERROR" && l["msg"] == "request failed" && l["outcome"] == "corrupt" {
				errs++
			}
		}
		if errs != len(ops) {
			t.Errorf("%d error-level log lines about the corrupt session, want %d:\n%s", errs, len(ops), logs)
		}
		for i := 0; i+16 <= len(tok); i += 8 {
			if strings.Contains(logs, tok[i:i+16]) {
				t.Fatalf("the logs show the token:\n%s", logs)
			}
		}
	})
}

// tamper rewrites the user id of the backend's only session, as someone
// with write access to Redis could: the h field is the token hash (16
// bytes), then the user id.
func tamper(t *testing.T, b *redistest.Backend, user string) {
	t.Helper()
	ctx := context.Background()
	keys, err := b.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var session []string
	for _, k := range keys {
		if strings.Contains(k, "}:s:") {
			session = append(session, k)
		}
	}
	if len(session) != 1 {
		t.Fatalf("want one session key, have %q", keys)
	}
	h, err := b.Client.HGet(ctx, session[0], "h").Result()
	if err != nil || len(h) <= 16 {
		t.Fatalf("h field %q: %v", h, err)
	}
	if err := b.Client.HSet(ctx, session[0], "h", h[:16]+user).Err(); err != nil {
		t.Fatal(err)
	}
}

// /metrics and /openapi.yaml are served on the operations listener only
// (SESSIONCACHE_METRICS_LISTEN): the API's port answers them 404, with or
// without a key, and the operations port serves nothing of the API, so
// that a NetworkPolicy can open one to Prometheus and the other to the
// service's clients.
func TestOperationsListenerIsApart(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef"
	e := newTestEnv(t, withAPIKey(key))
	get := func(base, path string, withKey bool) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if withKey {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/metrics", "/openapi.yaml"} {
		for _, withKey := range []bool{false, true} {
			if code, body := get(e.base, path, withKey); code != http.StatusNotFound || strings.Contains(body, "sessioncache_") || strings.Contains(body, "openapi:") {
				t.Errorf("GET %s on the API's port (key %v): %d %.80q, want 404", path, withKey, code, body)
			}
		}
		if code, _ := get(e.metricsBase, path, false); code != http.StatusOK {
			t.Errorf("GET %s on the operations port: %d, want 200", path, code)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/v1/users/" + alice + "/sessions", jwksPath} {
		if code, _ := get(e.metricsBase, path, true); code != http.StatusNotFound {
			t.Errorf("GET %s on the operations port: %d, want 404", path, code)
		}
	}
}
