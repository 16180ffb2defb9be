package main

// The README's nginx configuration, run for real: the service binary on a
// real Redis, nginx in front of an upstream that echoes what it receives.
// testGateway, the checks, serves caddy_test.go too.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

// nginxBinary finds nginx, or skips the test (fails it under
// SESSIONCACHE_TEST_REQUIRE_REAL=1, as in CI).
func nginxBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	// Debian installs it in /usr/sbin, which is not on every user's PATH.
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	msg := "nginx is not installed (apt-get install nginx-light, or nginx)"
	if os.Getenv(redistest.EnvRequireReal) == "1" {
		t.Fatalf("%s (%s=1)", msg, redistest.EnvRequireReal)
	}
	t.Skip(msg)
	return ""
}

// readmeBlock returns the first code block of the given language after
// heading in README.md.
func readmeBlock(t *testing.T, heading, lang string) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no heading %q", heading)
	}
	_, block, ok := strings.Cut(after, "```"+lang+"\n")
	if !ok {
		t.Fatalf("README.md: no %s block under %q", lang, heading)
	}
	block, _, ok = strings.Cut(block, "```")
	if !ok {
		t.Fatalf("README.md: the %s block under %q does not end", lang, heading)
	}
	return block
}

// substitute replaces each key of repl, which must occur exactly once in s.
func substitute(t *testing.T, s string, repl map[string]string) string {
	t.Helper()
	for old, new := range repl {
		if n := strings.Count(s, old); n != 1 {
			t.Fatalf("the README's configuration holds %q %d times, want once", old, n)
		}
		s = strings.Replace(s, old, new, 1)
	}
	return s
}

// echo is what the upstream received.
type echo struct {
	Method string      `json:"method"`
	Path   string      `json:"path"`
	Header http.Header `json:"header"`
	Body   string      `json:"body"`
}

// startNginx runs nginx in the foreground, as the current user, with the
// configuration conf(addr) on a free loopback address, its prefix,
// temporary files and logs in dir, and returns the address. It is stopped
// when the test ends, and its error log printed if the test failed.
func startNginx(t *testing.T, bin, dir string, conf func(addr string) string) string {
	t.Helper()
	// nginx cannot listen on port 0: a free port is chosen here, and
	// chosen again should another process take it before nginx binds it.
	for attempt := 1; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		err = runNginx(t, bin, dir, conf(addr), addr)
		if err == nil {
			return addr
		}
		if attempt == 5 || !strings.Contains(err.Error(), "Address already in use") {
			t.Fatal(err)
		}
	}
}

// runNginx starts nginx and waits until it answers on addr, or returns why
// it exited.
func runNginx(t *testing.T, bin, dir, conf, addr string) error {
	t.Helper()
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	errorLog := filepath.Join(dir, "error.log")
	os.Remove(errorLog)
	cmd := exec.Command(bin, "-p", dir+"/", "-c", confPath, "-e", errorLog)
	cmd.Env = []string{}
	// SIGQUIT: finish the requests in flight, then exit.
	return startGateway(t, "nginx", cmd, addr, syscall.SIGQUIT, func() string {
		logs, _ := os.ReadFile(errorLog)
		return "error log:\n" + string(logs)
	})
}

// startGateway starts a gateway (nginx, Caddy) and waits up to 20 s until
// it answers on addr, or returns why it exited. When the test ends it is
// stopped with stop (then killed after 10 s); its output, and what logs
// adds, are shown if the test failed.
func startGateway(t *testing.T, name string, cmd *exec.Cmd, addr string, stop os.Signal, logs func() string) error {
	t.Helper()
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("%s exited: %v\n%s\n%s", name, waitErr, out, logs())
		default:
		}
		if resp, err := client.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			t.Fatalf("%s did not answer on %s\n%s\n%s", name, addr, out, logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(stop)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s\n%s", name, out, logs())
		}
	})
	return nil
}

// nginx with the README's configuration lets through exactly the requests
// that carry a live session's current token, in a bearer header or in the
// cookie, and gives the upstream that session's user id, never one a client
// sent.
func TestNginxForwardAuth(t *testing.T) {
	bin := nginxBinary(t)
	dir := t.TempDir()
	server := readmeBlock(t, "### nginx `auth_request`", "nginx")
	g := testGateway(t, "nginx", func(svc, upstream, key string) string {
		return "http://" + startNginx(t, bin, dir, func(addr string) string {
			server := substitute(t, server, map[string]string{
				"listen 80;":                        "listen " + addr + ";",
				"server 127.0.0.1:8080;":            "server " + svc + ";",
				"proxy_pass http://127.0.0.1:3000;": "proxy_pass " + upstream + ";",
				`"<SESSIONCACHE_API_KEY>"`:          `"` + key + `"`,
			})
			return fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events {
    worker_connections 64;
}
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
%[2]s
}
`, dir, server)
		})
	})
	// The auth location is internal: a client cannot call it.
	if status, _, _ := g.send("GET", "/.sessioncache/auth", "", bearer(g.token)); status != http.StatusNotFound {
		t.Errorf("the auth location from outside: %d, want 404", status)
	}
}

// gatewayRun is a gateway that testGateway checked, still running.
type gatewayRun struct {
	// send sends a request through the gateway.
	send func(method, path, body string, h http.Header) (int, http.Header, string)
	// token is the current token of a live session.
	token string
}

// testGateway starts the service (on a real Redis, with an API key) and an
// upstream that echoes what it receives, has start run the gateway named
// name in front of them with the README's configuration (svc: the
// service's host:port, upstream: the upstream's URL) and return its base
// URL, and checks that the gateway lets through exactly the requests that
// carry a live session's current token, in a bearer header or in the
// cookie, gives the upstream that session's user id, and never a user id
// (or any X-Auth-* header, in any spelling) that a client sent, nor the
// API key.
func testGateway(t *testing.T, name string, start func(svc, upstream, key string) string) gatewayRun {
	t.Helper()
	b := redistest.For(t, redistest.Real)
	key := randomHex(16)
	svc := startService(t, map[string]string{
		envRedisURL:  os.Getenv(redistest.EnvRedisURL),
		envKeyPrefix: b.Prefix,
		envAPIKey:    key,
		envSecret:    randomHex(32),
	})

	var hits atomic.Int64
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(echo{Method: r.Method, Path: r.URL.RequestURI(), Header: r.Header, Body: string(body)})
	}))
	t.Cleanup(upstream.Close)

	api := newAPIClient(t, "http://"+svc.addr, key)
	poll(t, 10*time.Second, "the service to be ready", func() bool {
		return api.send("GET", "/readyz", "", nil).status == http.StatusOK
	})
	base := start(svc.addr, upstream.URL, key)
	user := "auth0|" + uuid.NewString()
	grant := func(device string) response {
		return api.must(http.StatusCreated, "POST", "/v1/sessions", `{"client_id":"test-app","user_id":"`+user+`","device_name":"`+device+`"}`)
	}
	laptop, phone := grant("laptop"), grant("phone")

	client := &http.Client{Timeout: 10 * time.Second}
	send := func(method, path, body string, h http.Header) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s through %s: %v", method, path, name, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(raw)
	}
	// A client that claims to be someone else, in every spelling: an
	// upstream behind CGI, FastCGI (PHP), WSGI or Rack reads X-Auth-User-Id,
	// X_Auth_User_Id and (PHP) X.Auth.User.Id as one variable.
	forgedID := http.Header{
		"X-Auth-User-Id":    {"admin"},
		"x-auth-user-id":    {"admin"},
		"X_Auth_User_Id":    {"admin"},
		"x_auth-user_id":    {"admin"},
		"X-Auth_User-Id":    {"admin"},
		"X.Auth.User.Id":    {"admin"},
		"x.auth-user_id":    {"admin"},
		"X-Auth.User-Id":    {"admin"},
		"X-Auth-Session-Id": {"00000000-0000-0000-0000-000000000000"},
		"X_Auth_Session_Id": {"00000000-0000-0000-0000-000000000000"},
		"X-Auth-Expires-At": {"2999-01-01T00:00:00Z"},
		"X.Auth.Expires.At": {"2999-01-01T00:00:00Z"},
	}
	with := func(hs ...http.Header) http.Header {
		out := http.Header{}
		for _, h := range hs {
			for k, v := range h {
				out[k] = append(out[k], v...)
			}
		}
		return out
	}
	allowed := func(what, method, path, body string, h http.Header, g response) {
		t.Helper()
		status, _, raw := send(method, path, body, h)
		if status != http.StatusOK {
			t.Errorf("%s: %s answered %d %s, want 200 from the upstream", what, name, status, raw)
			return
		}
		var got echo
		if err := json.Unmarshal([]byte(raw), &got); err != nil {
			t.Fatalf("%s: not the upstream's answer: %s", what, raw)
		}
		if got.Method != method || got.Path != path || got.Body != body {
			t.Errorf("%s: the upstream got %s %s %q, want %s %s %q", what, got.Method, got.Path, got.Body, method, path, body)
		}
		want := map[string][]string{
			"X-Auth-User-Id":    {headerValue(user)},
			"X-Auth-Session-Id": {g.str("session_id")},
			"X-Auth-Expires-At": {g.str("expires_at")},
		}
		for k, v := range want {
			if strings.Join(got.Header[k], ",") != strings.Join(v, ",") {
				t.Errorf("%s: the upstream got %s %q, want %q", what, k, got.Header[k], v)
			}
		}
		for k := range got.Header {
			norm := strings.ToLower(strings.NewReplacer("_", "-", ".", "-").Replace(k))
			if strings.HasPrefix(norm, "x-auth-") && want[k] == nil {
				t.Errorf("%s: the upstream got a client's %s: %q", what, k, got.Header[k])
			}
			if strings.EqualFold(k, apiKeyHeader) {
				t.Errorf("%s: the upstream got %s", what, k)
			}
		}
	}
	refused := func(what string, h http.Header) {
		t.Helper()
		before := hits.Load()
		status, header, raw := send("GET", "/app/data", "", h)
		if status != http.StatusUnauthorized {
			t.Errorf("%s: %s answered %d %s, want 401", what, name, status, raw)
		}
		if got := header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
			t.Errorf("%s: WWW-Authenticate %q, want the service's", what, got)
		}
		if hits.Load() != before {
			t.Errorf("%s: the request reached the upstream", what)
		}
	}

	// The gateway's own start-up probes may have been refused as missing.
	missingBefore := metricValue(api.send("GET", "/metrics", "", nil).raw, `sessioncache_requests_total{operation="auth",outcome="missing"}`)
	tok := laptop.str("refresh_token")
	allowed("bearer", "GET", "/app/data?x=1", "", bearer(tok), laptop)
	allowed("cookie", "GET", "/app/data", "", cookie("sc_session", phone.str("refresh_token")), phone)
	allowed("bearer and a forged identity", "GET", "/app/data", "", with(bearer(tok), forgedID), laptop)
	allowed("cookie and a forged identity", "GET", "/", "", with(cookie("sc_session", phone.str("refresh_token")), forgedID), phone)
	allowed("POST with a body", "POST", "/app/orders", `{"item":42}`,
		with(bearer(tok), http.Header{"Content-Type": {"application/json"}}), laptop)

	refused("no token", nil)
	refused("no token, a forged identity", forgedID)
	refused("garbage", bearer("not-a-token"))
	refused("forged token", bearer(forge(tok)))
	refused("forged cookie", cookie("sc_session", forge(tok)))
	refused("the API key as a token", bearer(key))

	api.must(http.StatusOK, "POST", "/v1/tokens/revoke", refreshBody(tok))
	refused("revoked token", bearer(tok))
	refused("revoked token, a forged identity", with(bearer(tok), forgedID))
	allowed("the other session", "GET", "/app/data", "", bearer(phone.str("refresh_token")), phone)

	if got := hits.Load(); got != 6 {
		t.Errorf("the upstream saw %d requests, want the 6 allowed", got)
	}
	metrics := api.send("GET", "/metrics", "", nil).raw
	for outcome, want := range map[string]float64{"ok": 6, "missing": missingBefore + 2, "malformed": 2, "unknown": 2, "revoked": 2} {
		series := `sessioncache_requests_total{operation="auth",outcome="` + outcome + `"}`
		if got := metricValue(metrics, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if logs := svc.logs.String(); strings.Contains(logs, tok[:24]) || strings.Contains(logs, key) {
		t.Errorf("the service logs a token or the key")
	}
	return gatewayRun{send: send, token: phone.str("refresh_token")}
}

// metricValue returns the value of one series in a Prometheus text
// exposition, or 0 if it is absent.
func metricValue(exposition, series string) float64 {
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
