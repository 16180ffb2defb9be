package deploytest

// The service, as the deployment tests see it: a binary built from this
// tree (internal/servicetest), its settings as it lists them, and its API
// over HTTP.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sessioncache/sessioncache/internal/servicetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	servicetest.RemoveBinary()
	os.Exit(code)
}

// exitConfig is the service's exit code for a configuration it refuses
// (cmd/sessioncache/main.go).
const exitConfig = 2

// setting is one of the service's settings, as `sessioncache -settings`
// prints the table that defines them (cmd/sessioncache/config.go). The
// deployment files may use these variables only; the tests name a setting
// by its flag, and learn its variable here.
type setting struct {
	Env     string `json:"env"`
	Flag    string `json:"flag"`
	Default string `json:"default"`
	Secret  bool   `json:"secret"` // environment only: never in argv, and never in a manifest
}

var table struct {
	once sync.Once
	list []setting
	err  error
}

// serviceSettings are the service's settings, asked of its binary once.
func serviceSettings(t *testing.T) []setting {
	t.Helper()
	cmd, out := servicetest.Command(t, nil, "-settings")
	table.once.Do(func() {
		if table.err = cmd.Run(); table.err == nil {
			table.err = json.Unmarshal([]byte(out.String()), &table.list)
		}
		if table.err == nil && len(table.list) == 0 {
			table.err = errors.New("no setting")
		}
		if table.err != nil {
			table.err = errors.New("sessioncache -settings: " + table.err.Error() + "\n" + out.String())
		}
	})
	if table.err != nil {
		t.Fatal(table.err)
	}
	return table.list
}

// lookupSetting returns the service's setting of the variable env.
func lookupSetting(t *testing.T, env string) (setting, bool) {
	t.Helper()
	for _, s := range serviceSettings(t) {
		if s.Env == env {
			return s, true
		}
	}
	return setting{}, false
}

// settingEnv is the variable of the service's setting -flag.
func settingEnv(t *testing.T, flag string) string {
	t.Helper()
	for _, s := range serviceSettings(t) {
		if s.Flag == flag {
			return s.Env
		}
	}
	t.Fatalf("the service has no setting -%s", flag)
	return ""
}

// runBinary runs the service to its end with exactly env (and PATH) and
// args, and returns its exit code and output.
func runBinary(t *testing.T, env map[string]string, args ...string) (int, string) {
	t.Helper()
	cmd, out := servicetest.Command(t, env, args...)
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

// startService starts the service with flags only, on a free port of
// 127.0.0.1. An unknown flag stops it at once, which fails the test.
func startService(t *testing.T, args ...string) *servicetest.Process {
	t.Helper()
	cmd, logs := servicetest.Command(t, nil, append([]string{"-listen", "127.0.0.1:0"}, args...)...)
	return servicetest.Start(t, cmd, logs)
}

// secretFile writes a secret to a file of the test's, for a -*-file flag.
func secretFile(t *testing.T, name, value string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(file, []byte(value), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

const (
	alice = "0b9a0f4e-8e4b-4d1f-9a53-0f1c2d3e4f50"
	bob   = "5f1e2d3c-4b5a-4968-8776-655443322110"
)

// apiClient calls a running service's API with a key. (The service's own
// tests check its answers against openapi.yaml; these check deployments.)
type apiClient struct {
	t         *testing.T
	base, key string
	// metrics is the URL of the service's /metrics listener
	// (SESSIONCACHE_METRICS_LISTEN), apart from base.
	metrics string
}

// scrape GETs /metrics from the metrics listener, and checks that the
// API's listener does not serve it.
func (c *apiClient) scrape() string {
	c.t.Helper()
	if c.metrics == "" {
		c.t.Fatal("scrape: the client knows no metrics listener")
	}
	if r := c.send("GET", "/metrics", "", nil); r.status != http.StatusNotFound {
		c.t.Errorf("GET /metrics on the API's listener: %d, want 404", r.status)
	}
	r := (&apiClient{t: c.t, base: c.metrics}).send("GET", "/metrics", "", nil)
	if r.status != http.StatusOK {
		c.t.Fatalf("GET %s/metrics: %d %s", c.metrics, r.status, r.raw)
	}
	return r.raw
}

func newAPIClient(t *testing.T, base, key string) *apiClient {
	return &apiClient{t: t, base: base, key: key}
}

// response is a decoded answer.
type response struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

func (r response) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

// do sends a request with the key, and a JSON body if body is not "".
func (c *apiClient) do(method, path, body string) response {
	c.t.Helper()
	h := http.Header{"Authorization": {"Bearer " + c.key}}
	if method == "POST" {
		h.Set("Content-Type", "application/json")
	}
	return c.send(method, path, body, h)
}

// send sends a request with exactly the headers h.
func (c *apiClient) send(method, path, body string, h http.Header) response {
	c.t.Helper()
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if h != nil {
		req.Header = h
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			c.t.Fatalf("%s %s: body %q is not JSON: %v", method, path, raw, err)
		}
	}
	return r
}

// must sends a request and fails the test unless the status is want.
func (c *apiClient) must(want int, method, path, body string) response {
	c.t.Helper()
	r := c.do(method, path, body)
	if r.status != want {
		c.t.Fatalf("%s %s %s: status %d %s, want %d", method, path, body, r.status, r.raw, want)
	}
	return r
}

// clientID is the OAuth client the tests log in as: the deployments
// register none (SESSIONCACHE_CLIENTS_FILE), so any id is a public client.
const clientID = "deploytest"

func (c *apiClient) login(user, device string) response {
	c.t.Helper()
	return c.must(http.StatusCreated, "POST", "/v1/sessions", loginBody(user, device))
}

func loginBody(user, device string) string {
	return `{"user_id":"` + user + `","client_id":"` + clientID + `","device_id":"` + device + `","device_name":"` + device + `"}`
}

func refreshBody(tok string) string { return `{"refresh_token":"` + tok + `"}` }

// forwardAuth asks /v1/auth, as a gateway does, about a credential: the
// bearer token of the user's request.
func (c *apiClient) forwardAuth(bearer string) response {
	c.t.Helper()
	return c.send("GET", "/v1/auth", "", http.Header{"X-Sessioncache-Key": {c.key}, "Authorization": {"Bearer " + bearer}})
}

// checkForwardAuth wants /v1/auth to admit the access token of grant,
// naming user, and to refuse its refresh token, which belongs to the token
// endpoint only.
func (c *apiClient) checkForwardAuth(grant response, user string) {
	c.t.Helper()
	if r := c.forwardAuth(grant.str("access_token")); r.status != http.StatusOK || r.header.Get("X-Auth-User-Id") != user {
		c.t.Errorf("/v1/auth with the access token: %d naming %q %s, want 200 naming %s", r.status, r.header.Get("X-Auth-User-Id"), r.raw, user)
	}
	if r := c.forwardAuth(grant.str("refresh_token")); r.status != http.StatusUnauthorized || r.str("reason") != "refresh_token" {
		c.t.Errorf("/v1/auth with the refresh token: %d %s, want 401 refresh_token", r.status, r.raw)
	}
}

// status is the status of a GET of u, or 0 if it gets no answer.
func status(u string) int {
	r, err := http.Get(u)
	if err != nil {
		return 0
	}
	r.Body.Close()
	return r.StatusCode
}
