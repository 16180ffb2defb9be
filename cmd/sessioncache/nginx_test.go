package main

// The README's nginx configuration, run for real: the service binary on a
// real Redis, nginx in front of an upstream that echoes what it receives.
// testGateway, the checks, serves caddy_test.go too.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// substitute replaces each key of repl, which must occur in s as many
// times as its count says, by its value.
func substitute(t *testing.T, s string, repl map[string]replacement) string {
	t.Helper()
	for old, r := range repl {
		if n := strings.Count(s, old); n != r.count {
			t.Fatalf("the README's configuration holds %q %d times, want %d", old, n, r.count)
		}
		s = strings.ReplaceAll(s, old, r.with)
	}
	return s
}

// replacement is what substitute puts in place of a string that occurs
// count times.
type replacement struct {
	with  string
	count int
}

// once replaces a string that occurs once.
func once(with string) replacement { return replacement{with: with, count: 1} }

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

// nginxConf is a whole nginx configuration for the server blocks server,
// run as the current user, in the foreground, its files in dir.
func nginxConf(dir, server string) string {
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
}

// The README's nginx configuration passes the checks of testGateway, and
// its auth location cannot be called from outside.
func TestNginxForwardAuth(t *testing.T) {
	bin := nginxBinary(t)
	dir := t.TempDir()
	server := readmeBlock(t, "### nginx `auth_request`", "nginx")
	g := testGateway(t, "nginx", func(svc, upstream, key string) string {
		return "http://" + startNginx(t, bin, dir, func(addr string) string {
			return nginxConf(dir, substitute(t, server, map[string]replacement{
				"listen 80;":                        once("listen " + addr + ";"),
				"server 127.0.0.1:8080;":            once("server " + svc + ";"),
				"proxy_pass http://127.0.0.1:3000;": once("proxy_pass " + upstream + ";"),
				`"<SESSIONCACHE_API_KEY>"`:          once(`"` + key + `"`),
			}))
		})
	})
	g.checkDPoP(t)
	if status, _, _ := g.send(t, "GET", "/.sessioncache/auth", "", bearer("x")); status != http.StatusNotFound {
		t.Errorf("the auth location from outside: %d, want 404", status)
	}
}

// A service without an API key trusts a request whose Host is a loopback
// name, and a proxy on the same host (proxy_pass http://127.0.0.1:PORT/)
// gives every request such a Host: whoever reaches the proxy reaches the
// service. So a key-less service serves only the embedded store, whose
// sessions are the process's own and end with it: with a real Redis it
// refuses to start. With a key, a forged Host gets nothing.
func TestNginxSameHostProxy(t *testing.T) {
	bin := nginxBinary(t)
	b := redistest.For(t, redistest.Real)
	redisURL := os.Getenv(redistest.EnvRedisURL)
	user := "auth0|" + uuid.NewString()
	// login logs the user in through the proxy at base, as a client that
	// names host in its request.
	login := func(t *testing.T, base, host string, h http.Header) (int, string) {
		t.Helper()
		req, err := http.NewRequest("POST", base+"/v1/sessions", strings.NewReader(`{"client_id":"`+testClient+`","user_id":"`+user+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header = with(http.Header{"Content-Type": {"application/json"}}, h)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}

	t.Run("a real Redis without a key", func(t *testing.T) {
		cmd, logs := command(t, map[string]string{envRedisURL: redisURL, envKeyPrefix: b.Prefix, envListen: "127.0.0.1:0"})
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitConfig {
			t.Errorf("a key-less service on a real Redis: %v, want exit code %d", err, exitConfig)
		}
		want := "refusing to serve " + redisURL + " without an API key: a key-less service is for the embedded development store only"
		if out := logs.String(); !strings.Contains(out, want) || strings.Contains(out, `"msg":"listening"`) {
			t.Errorf("output %s, want %q and no listening", out, want)
		}
	})

	// behindNginx starts a service with env and a same-host nginx in front
	// of it, and returns the nginx's URL and the service.
	behindNginx := func(t *testing.T, env map[string]string) (string, *proc) {
		svc := startService(t, env)
		dir := t.TempDir()
		base := "http://" + startNginx(t, bin, dir, func(addr string) string {
			return nginxConf(dir, "server {\n    listen "+addr+";\n    location / {\n        proxy_pass http://"+svc.addr+"/;\n    }\n}")
		})
		return base, svc
	}
	t.Run("a real Redis with a key", func(t *testing.T) {
		key := randomHex(16)
		base, svc := behindNginx(t, map[string]string{envRedisURL: redisURL, envKeyPrefix: b.Prefix, envAPIKey: key, envSecret: randomHex(32)})
		if status, raw := login(t, base, "evil.example", nil); status != http.StatusUnauthorized {
			t.Errorf("a login through the proxy, without the key: %d %s, want 401", status, raw)
		}
		if status, raw := login(t, base, "evil.example", bearer(key)); status != http.StatusCreated {
			t.Errorf("a login through the proxy, with the key: %d %s, want 201", status, raw)
		}
		r := newAPIClient(t, "http://"+svc.addr, key).must(http.StatusOK, "GET", "/v1/users/"+url.PathEscape(user)+"/sessions", "")
		if n := len(r.body["sessions"].([]any)); n != 1 {
			t.Errorf("the user has %d sessions, want the 1 made with the key", n)
		}
	})
	t.Run("the embedded store without a key", func(t *testing.T) {
		// What it hands out lives in the process's memory only: this is
		// the development mode the README's Security section describes,
		// never to be put behind a proxy.
		base, _ := behindNginx(t, map[string]string{})
		if status, raw := login(t, base, "evil.example", nil); status != http.StatusCreated {
			t.Errorf("a login through the proxy: %d %s, want 201 (a key-less service cannot tell a same-host proxy from a local client)", status, raw)
		}
	})
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
