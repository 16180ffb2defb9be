package main

// The README's Caddy configuration, run for real when Caddy is installed
// (Debian: apt-get install caddy): the same checks as nginx's
// (gateway_test.go).

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

func TestCaddyForwardAuth(t *testing.T) {
	bin, err := exec.LookPath("caddy")
	if err != nil {
		msg := "caddy is not installed (apt-get install caddy)"
		if os.Getenv(redistest.EnvRequireReal) == "1" {
			t.Fatalf("%s (%s=1)", msg, redistest.EnvRequireReal)
		}
		t.Skip(msg)
	}
	site := readmeBlock(t, "### Caddy `forward_auth`", "caddyfile")
	g := testGateway(t, "caddy", func(svc, upstream, key string) string {
		dir := t.TempDir()
		for attempt := 1; ; attempt++ {
			addr := freeAddr(t)
			conf := substitute(t, site, map[string]replacement{
				"app.example.com {": once("http://" + addr + " {"),
				// The public routes and forward_auth.
				"sessioncache:8080": {with: svc, count: 2},
				"app:3000":          once(strings.TrimPrefix(upstream, "http://")),
			})
			// No admin endpoint (a fixed port), no certificates.
			conf = "{\n\tadmin off\n\tauto_https off\n}\n" + conf
			err := runCaddy(t, bin, dir, conf, addr, key)
			if err == nil {
				return "http://" + addr
			}
			if attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
				t.Fatal(err)
			}
		}
	})
	g.checkDPoP(t)
	// The configuration deletes the client's Connection header, and gives
	// a WebSocket handshake its Connection: Upgrade back: Caddy still
	// proxies it as one, with the identity.
	tablet := g.login(t, "tablet")
	at := tablet.str("access_token")
	req := g.request(t, "GET", "/app/socket", "", with(bearer(at), http.Header{"Connection": {"Upgrade, X-Auth-User-Id"}, "Upgrade": {"websocket"}}))
	status, _, raw := g.do(t, req)
	g.checkAllowed(t, "a WebSocket handshake", req, "", status, raw, g.identityOf(t, tablet, at))
	var got echo
	json.Unmarshal([]byte(raw), &got)
	if !strings.EqualFold(got.Header.Get("Connection"), "Upgrade") || got.Header.Get("Upgrade") != "websocket" {
		t.Errorf("a WebSocket handshake reached the application with Connection %q and Upgrade %q, want Upgrade and websocket",
			got.Header.Values("Connection"), got.Header.Values("Upgrade"))
	}
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// runCaddy runs caddy with the Caddyfile conf, its state in dir and the API
// key in its environment, and waits until it answers on addr, or returns
// why it exited. It is stopped when the test ends.
func runCaddy(t *testing.T, bin, dir, conf, addr, key string) error {
	t.Helper()
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile")
	cmd.Env = []string{"HOME=" + dir, "XDG_CONFIG_HOME=" + dir, "XDG_DATA_HOME=" + dir, "SESSIONCACHE_API_KEY=" + key}
	return startGateway(t, "caddy", cmd, addr, syscall.SIGTERM, func() string { return "" })
}
