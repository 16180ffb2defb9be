package main

import (
	"bytes"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// By default no request is logged but what needs someone to look: a
// refused API key, a failure and a replayed token.
func TestAccessLogOffByDefault(t *testing.T) {
	const key = "access-log-test-key-0123456789"
	e := newTestEnv(t, withAPIKey(key), withoutAccessLog())
	tok := e.login(alice, "laptop").str("refresh_token")
	rotated := e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(tok))
	next := rotated.str("refresh_token")
	e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(next))
	if r := e.send("GET", "/v1/auth", "", http.Header{"Authorization": {"Bearer " + rotated.str("access_token")}, "X-Sessioncache-Key": {key}}); r.status != http.StatusOK {
		t.Fatalf("auth: %d %s", r.status, r.raw)
	}
	e.must(http.StatusNotFound, "GET", "/nowhere", "")
	e.must(http.StatusOK, "GET", "/healthz", "")
	for _, l := range logLines(e.logs.String()) {
		if l["msg"] == "request" {
			t.Errorf("a request was logged with the access log off: %v", l)
		}
	}

	// A wrong key: a warning, with the peer.
	if r := e.send("POST", "/v1/tokens/introspect", refreshBody(next), http.Header{"Authorization": {"Bearer wrong-key-0123456789"}, "Content-Type": {"application/json"}}); r.status != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d %s", r.status, r.raw)
	}
	var refused []map[string]any
	for _, l := range logLines(e.logs.String()) {
		if l["msg"] == "request" {
			refused = append(refused, l)
		}
	}
	if len(refused) != 1 || refused[0]["level"] != "WARN" || refused[0]["outcome"] != "unauthorized" || !strings.HasPrefix(refused[0]["remote"].(string), "127.0.0.1:") {
		t.Errorf("a wrong API key logged %v, want one warning with the peer", refused)
	}
}

// The warning of a replayed token names who replayed it: the peer, its
// User-Agent header, and the device's IP address and user agent as the
// rotation request gives them.
func TestReuseWarningNamesTheClient(t *testing.T) {
	e := newTestEnv(t, withoutAccessLog())
	g := e.login(alice, "laptop")
	t0 := g.str("refresh_token")
	t1 := e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(t0)).str("refresh_token")
	e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(t1))
	r := e.send("POST", "/v1/tokens/rotate",
		`{"refresh_token":"`+t0+`","ip_address":"198.51.100.7","user_agent":"Thief/1.0 (stolen laptop)"}`,
		http.Header{"Content-Type": {"application/json"}, "User-Agent": {"token-replayer/2.0"}, "X-Forwarded-For": {"203.0.113.99"}})
	if r.status != http.StatusBadRequest || r.str("reason") != "reused" {
		t.Fatalf("replay: %d %s", r.status, r.raw)
	}
	var warns []map[string]any
	for _, l := range logLines(e.logs.String()) {
		if l["msg"] == "refresh token reuse detected: session revoked" {
			warns = append(warns, l)
		}
	}
	if len(warns) != 1 {
		t.Fatalf("%d reuse warnings, want 1:\n%s", len(warns), e.logs)
	}
	w := warns[0]
	want := map[string]string{"level": "WARN", "user_id": alice, "session_id": g.str("session_id"),
		"http_user_agent": "token-replayer/2.0", "ip_address": "198.51.100.7", "user_agent": "Thief/1.0 (stolen laptop)"}
	for k, v := range want {
		if w[k] != v {
			t.Errorf("%s = %v, want %q", k, w[k], v)
		}
	}
	// The peer the service sees, not what X-Forwarded-For claims.
	if remote, _ := w["remote"].(string); !strings.HasPrefix(remote, "127.0.0.1:") {
		t.Errorf("remote = %q, want the peer 127.0.0.1:<port>", remote)
	}
	if strings.Contains(e.logs.String(), "203.0.113.99") {
		t.Errorf("the log repeats X-Forwarded-For")
	}
}

func TestVersionFlag(t *testing.T) {
	var out bytes.Buffer
	// -version answers whatever the rest of the configuration says.
	env := map[string]string{envGrace: "not a duration"}
	if code := run([]string{"-version"}, func(k string) string { return env[k] }, &out, nil); code != exitOK {
		t.Fatalf("-version: exit %d, %s", code, out.String())
	}
	b := readBuild()
	if got := strings.TrimSpace(out.String()); got != b.String() || !strings.Contains(got, runtime.Version()) || !strings.HasPrefix(got, "sessioncache ") {
		t.Errorf("-version printed %q, want %q", got, b.String())
	}

	defer func(v, r string) { version, revision = v, r }(version, revision)
	version, revision = "v1.2.3", "0123abcd"
	if got := readBuild(); got.version != "v1.2.3" || got.revision != "0123abcd" {
		t.Errorf("with -ldflags -X: %+v", got)
	}
	version, revision = "", ""
	if got := readBuild(); got.version == "" || got.revision == "" || got.goVersion != runtime.Version() {
		t.Errorf("from the build info: %+v", got)
	}
}

// /metrics names the build and shows the Redis client's pool.
func TestBuildInfoAndPoolMetrics(t *testing.T) {
	e := newTestEnv(t)
	e.login(alice, "laptop")
	m := e.scrape()
	b := readBuild()
	info := `sessioncache_build_info{goversion="` + b.goVersion + `",revision="` + b.revision + `",version="` + b.version + `"} 1`
	if !strings.Contains(m, info) {
		t.Errorf("/metrics lacks %s", info)
	}
	for _, re := range []string{
		`sessioncache_redis_pool_connections\{state="total"\} [1-9]`,
		`sessioncache_redis_pool_connections\{state="idle"\} [0-9]`,
		`sessioncache_redis_pool_hits_total [0-9]`,
		`sessioncache_redis_pool_misses_total [1-9]`, // the first connection
		`sessioncache_redis_pool_timeouts_total 0`,
		`sessioncache_redis_pool_stale_connections_total 0`,
		`sessioncache_redis_pool_waits_total [0-9]`,
		`sessioncache_redis_pool_wait_seconds_total [0-9]`,
	} {
		if !regexp.MustCompile(`(?m)^` + re).MatchString(m) {
			t.Errorf("/metrics lacks %s", re)
		}
	}
}

// Client text reaches the log with every character that does not print
// escaped: a User-Agent header with a raw U+202E, invisible characters or a
// Hangul filler cannot reorder or hide anything in the reuse warning.
func TestReuseWarningEscapesClientText(t *testing.T) {
	e := newTestEnv(t, withoutAccessLog())
	t0 := e.login(alice, "laptop").str("refresh_token")
	t1 := e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(t0)).str("refresh_token")
	e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(t1))
	ua := "Mozilla/5.0 \u202eexe.gnp\u202c \u200b\u3164\U000E0041 \\ caf\u00e9"
	r := e.send("POST", "/v1/tokens/rotate", refreshBody(t0), http.Header{"Content-Type": {"application/json"}, "User-Agent": {ua}})
	if r.status != http.StatusBadRequest || r.str("reason") != "reused" {
		t.Fatalf("replay: %d %s", r.status, r.raw)
	}
	var got any
	for _, l := range logLines(e.logs.String()) {
		if l["msg"] == "refresh token reuse detected: session revoked" {
			got = l["http_user_agent"]
		}
	}
	want := `Mozilla/5.0 \u{202E}exe.gnp\u{202C} \u{200B}\u{3164}\u{E0041} \\ café`
	if got != want {
		t.Errorf("http_user_agent = %q, want %q", got, want)
	}
	for _, raw := range []string{"\u202e", "\u200b", "\u3164", "\U000E0041"} {
		if strings.Contains(e.logs.String(), raw) {
			t.Errorf("the log holds a raw %U", []rune(raw)[0])
		}
	}
}

func TestLogText(t *testing.T) {
	for in, want := range map[string]string{
		"Mozilla/5.0 (X11; Linux x86_64)": "Mozilla/5.0 (X11; Linux x86_64)",
		"Телефон 電話 👋🏽":                   "Телефон 電話 👋🏽",
		"a\x01b\x7fc":                     `a\u{1}b\u{7F}c`,
		"a\u00adb\u2060c\ufeffd":          `a\u{AD}b\u{2060}c\u{FEFF}d`,
		"iPhone\U000E0041\U000E007F":      `iPhone\u{E0041}\u{E007F}`,
		"\u3164\u115f\u1160\uffa0":        `\u{3164}\u{115F}\u{1160}\u{FFA0}`,
		"line\u2028para\u2029":            `line\u{2028}para\u{2029}`,
		"bad\xff\xc3":                     `bad\xff\xc3`,
		`back\slash`:                      `back\\slash`,
		`\u{202E}`:                        `\\u{202E}`,
	} {
		if got := logText(in); got != want {
			t.Errorf("logText(%q) = %q, want %q", in, got, want)
		}
	}
	if got := logText(strings.Repeat("x", 300)); got != strings.Repeat("x", 256)+"..." {
		t.Errorf("logText of 300 bytes = %d bytes, want 256 and ...", len(got))
	}
}
