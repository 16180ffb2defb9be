package main

// End-to-end tests: build the binary, start it as a process on a free
// port, and talk to it over real HTTP.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/internal/servicetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	servicetest.RemoveBinary()
	os.Exit(code)
}

// serviceBinary is the service built from this tree (once per test run).
func serviceBinary(t *testing.T) string { return servicetest.Binary(t) }

// proc is a running service (internal/servicetest), with the short names
// this package's tests use.
type proc struct {
	*servicetest.Process
	cmd  *exec.Cmd
	logs *syncBuffer
	addr string
	done <-chan struct{}
}

// command prepares the binary with exactly env (and PATH): nothing leaks
// in from the test's own environment.
func command(t *testing.T, env map[string]string, args ...string) (*exec.Cmd, *syncBuffer) {
	return servicetest.Command(t, env, args...)
}

// startService starts the binary listening on a free loopback port and
// waits until it says where.
func startService(t *testing.T, env map[string]string) *proc {
	t.Helper()
	env[envListen] = "127.0.0.1:0"
	cmd, logs := command(t, env)
	sp := servicetest.Start(t, cmd, logs)
	return &proc{Process: sp, cmd: cmd, logs: logs, addr: sp.Addr, done: sp.Done()}
}

// exitCode waits for the process to end.
func (p *proc) exitCode(t *testing.T) int {
	t.Helper()
	return p.ExitCode(t, 30*time.Second)
}

func logLines(s string) []map[string]any { return servicetest.LogLines(s) }

// poll calls cond until it holds, or fails the test after d.
func poll(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	servicetest.WaitFor(t, what, d, cond)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// TestEndToEnd walks a session's life through the real binary on a real
// Redis, a real cluster and a Redis behind Sentinel: login, rotation,
// replay of an old token (which revokes the session), listing, log out
// everywhere, SIGTERM.
func TestEndToEnd(t *testing.T) {
	for _, mode := range []string{modeStandalone, modeCluster, modeSentinel} {
		t.Run(mode, func(t *testing.T) {
			var b *redistest.Backend
			env := map[string]string{
				envRedisMode:     mode,
				envAPIKey:        randomHex(16),
				envSecret:        randomHex(32),
				envShutdownDelay: "100ms",
			}
			switch mode {
			case modeStandalone:
				b = redistest.For(t, redistest.Real)
				env[envRedisURL] = os.Getenv(redistest.EnvRedisURL)
			case modeCluster:
				b = redistest.For(t, redistest.Cluster)
				env[envRedisURL] = "redis://" + os.Getenv(redistest.EnvClusterAddrs)
			case modeSentinel:
				master := redistest.StartServer(t)
				sen := redistest.StartSentinels(t, master.Addr, 0, redistest.SentinelConfig{})
				b = &redistest.Backend{Kind: redistest.Real, Client: master.Client(t), Prefix: redistest.NewPrefix()}
				env[envRedisURL] = "redis://" + strings.Join(sen.Addrs, ",") + "/0"
				env[envRedisMaster] = sen.Name
			}
			env[envKeyPrefix] = b.Prefix
			p := startService(t, env)
			c := newAPIClient(t, "http://"+p.addr, env[envAPIKey])
			c.metricsBase = "http://" + p.MetricsAddr
			walk(t, c)

			keys, err := b.Keys(context.Background())
			if err != nil || len(keys) == 0 {
				t.Errorf("no keys under %s in Redis (%v): the service did not use it", b.Prefix, err)
			}
			p.cmd.Process.Signal(syscall.SIGTERM)
			if code := p.exitCode(t); code != 0 {
				t.Errorf("exit code after SIGTERM = %d, want 0", code)
			}
			logs := p.logs.String()
			if strings.Contains(logs, env[envAPIKey]) || strings.Contains(logs, env[envSecret]) {
				t.Errorf("the logs show the API key or the secret")
			}
			if strings.Contains(logs, "sct_") {
				t.Errorf("the logs show a token")
			}
			// By default no request is logged but the one without the API
			// key; the replay is, naming who presented the token.
			var reuse []map[string]any
			for _, l := range logLines(logs) {
				switch l["msg"] {
				case "request":
					if l["outcome"] != "unauthorized" {
						t.Errorf("a request was logged, but the access log is off by default: %v", l)
					}
				case "refresh token reuse detected: session revoked":
					reuse = append(reuse, l)
				}
			}
			if len(reuse) != 1 {
				t.Fatalf("%d reuse warnings, want 1", len(reuse))
			}
			if remote, _ := reuse[0]["remote"].(string); !strings.HasPrefix(remote, "127.0.0.1:") || reuse[0]["http_user_agent"] != "Go-http-client/1.1" || reuse[0]["level"] != "WARN" {
				t.Errorf("reuse warning %v, want a warning naming the client's address and User-Agent", reuse[0])
			}
		})
	}
}

func walk(t *testing.T, c *apiClient) {
	poll(t, 10*time.Second, "/readyz to answer 200", func() bool {
		r, err := http.Get(c.base + "/readyz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == http.StatusOK
	})
	// An id as identity providers hand them out, with characters a path
	// must escape: its hash tag decides the cluster slot.
	user := "auth0|" + uuid.NewString() + "/ü"
	path := "/v1/users/" + url.PathEscape(user) + "/sessions"
	laptop := c.login(user, "laptop")
	phone := c.login(user, "phone")
	t0 := laptop.str("refresh_token")
	t1 := c.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(t0)).str("refresh_token")
	t2 := c.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(t1)).str("refresh_token")
	if r := c.must(http.StatusBadRequest, "POST", "/v1/tokens/rotate", refreshBody(t0)); r.str("reason") != "reused" {
		t.Fatalf("replay of an old token: %s, want reason reused", r.raw)
	}
	if r := c.must(http.StatusBadRequest, "POST", "/v1/tokens/rotate", refreshBody(t2)); r.str("reason") != "revoked" {
		t.Fatalf("newest token after the replay: %s, want reason revoked", r.raw)
	}
	list := c.must(http.StatusOK, "GET", path, "")
	if !strings.Contains(list.raw, phone.str("session_id")) || strings.Contains(list.raw, laptop.str("session_id")) {
		t.Fatalf("sessions after the replay: %s, want the phone only", list.raw)
	}
	form := formHeader.Clone()
	form.Set("Authorization", "Bearer "+c.apiKey)
	if r := c.send("POST", "/v1/tokens/introspect", "token="+url.QueryEscape(phone.str("refresh_token")), form); r.body["active"] != true || r.str("sub") != user {
		t.Fatalf("introspection of the phone's token, as a form: %s", r.raw)
	}
	if r := c.must(http.StatusOK, "DELETE", path, ""); r.raw != "{\"revoked\":1}\n" {
		t.Fatalf("log out everywhere: %s", r.raw)
	}
	if r := c.must(http.StatusOK, "GET", path, ""); r.raw != "{\"sessions\":[]}\n" {
		t.Fatalf("sessions after logout: %s", r.raw)
	}
	if r := c.send("POST", "/v1/sessions", `{"client_id":"test-app","user_id":"`+user+`"}`, http.Header{"Content-Type": {"application/json"}}); r.status != http.StatusUnauthorized {
		t.Errorf("request without the API key: %d, want 401", r.status)
	}
	metrics := c.scrape()
	for _, want := range []string{`sessioncache_session_revocations_total{reason="reuse"} 1`, `sessioncache_session_revocations_total{reason="logout_all"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// On SIGTERM, /readyz fails first, a request in flight finishes, and the
// process exits 0.
func TestEndToEndGracefulShutdown(t *testing.T) {
	p := startService(t, map[string]string{envShutdownDelay: "1s"})
	base := "http://" + p.addr
	ready := func() int {
		r, err := http.Get(base + "/readyz")
		if err != nil {
			return 0
		}
		r.Body.Close()
		return r.StatusCode
	}
	poll(t, 10*time.Second, "/readyz to answer 200", func() bool { return ready() == http.StatusOK })
	if code := exec.Command(serviceBinary(t), "-check", "/readyz", "-listen", p.addr).Run(); code != nil {
		t.Errorf("-check /readyz on a ready service: %v", code)
	}

	// A login whose body is only half sent when the signal comes.
	body := `{"user_id":"` + alice + `","client_id":"` + testClient + `","device_name":"in flight"}`
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/sessions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", p.addr, len(body), body[:10])

	p.cmd.Process.Signal(syscall.SIGTERM)
	poll(t, 5*time.Second, "/readyz to fail", func() bool { return ready() == http.StatusServiceUnavailable })
	poll(t, 10*time.Second, "the listener to close", func() bool {
		c, err := net.Dial("tcp", p.addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case <-p.done:
		t.Fatalf("the process exited with a request in flight\n%s", p.logs)
	default:
	}
	fmt.Fprint(conn, body[10:])
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight request: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("in-flight request: %d, want 201", resp.StatusCode)
	}
	if code := p.exitCode(t); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	var order []string
	for _, l := range logLines(p.logs.String()) {
		if msg, _ := l["msg"].(string); strings.HasPrefix(msg, "received terminated") || strings.HasPrefix(msg, "closing the listener") || msg == "stopped" {
			order = append(order, strings.Fields(msg)[0])
		}
	}
	if strings.Join(order, ",") != "received,closing,stopped" {
		t.Errorf("shutdown log = %v, want received, closing, stopped", order)
	}
	if err := exec.Command(serviceBinary(t), "-check", "/healthz", "-listen", p.addr).Run(); err == nil {
		t.Errorf("-check on a stopped service succeeded")
	}
}

// The binary refuses to start unsafely: exit code 2, a clear message, and
// it never listens.
func TestEndToEndRefusesUnsafeStart(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{envListen: "0.0.0.0:0"}, "refusing to listen on 0.0.0.0:0 without an API key"},
		{map[string]string{envSecret: "short"}, "the secret is 5 bytes; it must be at least 32 bytes"},
		{map[string]string{envIdleTTL: "2 weeks"}, "not a Go duration"},
	}
	for _, tc := range cases {
		cmd, logs := command(t, tc.env)
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitConfig {
			t.Errorf("%v: err %v, want exit code %d", tc.env, err, exitConfig)
		}
		if !strings.Contains(logs.String(), tc.want) || strings.Contains(logs.String(), `"msg":"listening"`) {
			t.Errorf("%v: output %s, want %q and no listening", tc.env, logs, tc.want)
		}
	}
}

// The READMEs' curl walk-throughs (the service's and the project's) work as
// written against the default service (embedded miniredis, no API key), and
// print what they say.
func TestReadmeWalkthrough(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the walk-through needs %s", tool)
		}
	}
	for _, readme := range []string{"README.md", "../../README.md"} {
		t.Run(readme, func(t *testing.T) { testWalkthrough(t, readme) })
	}
}

func testWalkthrough(t *testing.T, readme string) {
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := strings.Cut(string(b), "## Walk-through")
	_, block, _ := strings.Cut(after, "```bash\n")
	script, _, ok := strings.Cut(block, "```")
	const base = "SC=http://127.0.0.1:8080\n"
	if !ok || !strings.HasPrefix(script, base) {
		t.Fatalf("%s: no bash walk-through starting with %q", readme, base)
	}
	p := startService(t, map[string]string{})
	script = "set -euo pipefail\nSC=http://" + p.addr + "\n" + strings.TrimPrefix(script, base)
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walk-through: %v\n%s", err, out)
	}
	// Each "# {...}" or "# [...]" comment is the output of the line above it.
	rest := string(out)
	for _, line := range strings.Split(script, "\n") {
		want, ok := strings.CutPrefix(line, "# ")
		if !ok || !strings.HasPrefix(want, "{") && !strings.HasPrefix(want, "[") {
			continue
		}
		i := strings.Index(rest, want+"\n")
		if i < 0 {
			t.Fatalf("walk-through output lacks %s (in order); output:\n%s", want, out)
		}
		rest = rest[i+len(want):]
	}
}

// A service on a loopback port the kernel picks (127.0.0.1:0) names that
// port in its issuer, its metadata and its access tokens.
func TestIssuerNamesTheBoundPort(t *testing.T) {
	p := startService(t, map[string]string{})
	base := "http://" + p.addr
	c := newAPIClient(t, base, "")
	md := c.must(http.StatusOK, "GET", metadataPath, "")
	if md.str("issuer") != base || md.str("token_endpoint") != base+tokenPath {
		t.Errorf("metadata %s, want issuer %s", md.raw, base)
	}
	at := c.login(alice, "laptop").str("access_token")
	if iss := accessClaims(t, at)["iss"]; iss != base {
		t.Errorf("iss %v, want %s", iss, base)
	}
}
