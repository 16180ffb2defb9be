package main

// Key rotation under traffic, through the real binary: signing keys and API
// keys change by file rewrite and SIGHUP while sessions rotate, and no
// session is lost.

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/internal/tokenlayout"
	"github.com/sessioncache/sessioncache/redisstore"
)

// tokenKeyID returns the id of the key that signed tok, or -1 for
// something else.
func tokenKeyID(tok string) int { return tokenlayout.KeyIDOf(tok, redisstore.DefaultTokenPrefix) }

// rotationWorker keeps one session rotating, and checks each new token by
// introspection, until told to stop.
type rotationWorker struct {
	session   string
	token     string
	rotations atomic.Int64
}

func TestKeyRotationUnderTraffic(t *testing.T) {
	b := redistest.For(t, redistest.Real)
	dir := t.TempDir()
	signingFile := filepath.Join(dir, "signing-keys")
	apiFile := filepath.Join(dir, "api-keys")
	k1, k2 := "1 "+randomB64(32), "2 "+randomB64(32)
	a1, a2 := "gateway-a-"+randomHex(16), "gateway-b-"+randomHex(16)
	write := func(file, text string) { writeAtomically(t, file, []byte(text)) }
	write(signingFile, "# the first key signs\n"+k1+"\n")
	write(apiFile, a1+"\n")
	p := startService(t, map[string]string{
		envRedisURL:        os.Getenv(redistest.EnvRedisURL),
		envKeyPrefix:       b.Prefix,
		envSecret:          randomHex(32),
		envSigningKeysFile: signingFile,
		envAPIKeysFile:     apiFile,
	})
	base := "http://" + p.addr
	poll(t, 10*time.Second, "/readyz 200", func() bool { return readyStatus(base) == http.StatusOK })

	// The API key the workers send; switched once the new one is accepted.
	var apiKey atomic.Value
	apiKey.Store(a1)
	// expectKey is the key id every token minted from now on must carry,
	// or 0 while a change is under way.
	var expectKey atomic.Int32
	expectKey.Store(1)

	hc := &http.Client{Timeout: 10 * time.Second}
	call := func(method, path, body, key string, h http.Header) (int, http.Header, string) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		for k, v := range h {
			req.Header[k] = v
		}
		if req.Header.Get(apiKeyHeader) == "" {
			req.Header.Set(apiKeyHeader, key)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, nil, err.Error()
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(raw)
	}
	field := func(raw, name string) string {
		_, after, ok := strings.Cut(raw, `"`+name+`":"`)
		if !ok {
			return ""
		}
		v, _, _ := strings.Cut(after, `"`)
		return v
	}
	var oldAccess string
	login := func(user string) (string, string) {
		status, _, raw := call("POST", "/v1/sessions", `{"client_id":"test-app","user_id":"`+user+`"}`, apiKey.Load().(string), nil)
		if status != http.StatusCreated {
			t.Fatalf("login: %d %s", status, raw)
		}
		oldAccess = field(raw, "access_token")
		return field(raw, "refresh_token"), field(raw, "session_id")
	}
	// active is 200 for a refresh token that introspects active, 401 for one
	// that does not, or the status of a refused call.
	active := func(tok, key string) int {
		status, _, raw := call("POST", "/v1/tokens/introspect", refreshBody(tok), key, nil)
		switch {
		case status != http.StatusOK:
			return status
		case strings.Contains(raw, `"active":true`):
			return http.StatusOK
		}
		return http.StatusUnauthorized
	}
	// authStatus is the status of /v1/auth with key, for an access token of
	// a live session: 200, or 403 for a key it refuses.
	authStatus := func(key string) int {
		status, _, _ := call("GET", "/v1/auth", "", key, http.Header{"Authorization": {"Bearer " + oldAccess}})
		return status
	}

	// A token signed by key 1 that is never rotated: it must stay valid
	// while key 1 is listed.
	oldToken, _ := login("auth0|" + uuid.NewString())
	if id := tokenKeyID(oldToken); id != 1 {
		t.Fatalf("first token signed by key %d, want 1", id)
	}

	const workers = 4
	ws := make([]*rotationWorker, workers)
	var errMu sync.Mutex
	var errs []string
	fail := func(format string, args ...any) {
		errMu.Lock()
		defer errMu.Unlock()
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := range ws {
		w := &rotationWorker{}
		w.token, w.session = login(fmt.Sprintf("user-%d@example.com-%s", i, uuid.NewString()))
		ws[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				key := apiKey.Load().(string)
				want := expectKey.Load()
				status, _, raw := call("POST", "/v1/tokens/rotate", refreshBody(w.token), key, nil)
				if status != http.StatusOK {
					fail("worker %d: rotation: %d %s", i, status, raw)
					return
				}
				tok := field(raw, "refresh_token")
				if expectKey.Load() != want {
					want = 0 // a change began while the rotation was under way
				}
				if got := tokenKeyID(tok); want != 0 && int32(got) != want || got < 0 {
					fail("worker %d: a token minted while key %d signs carries key id %d", i, want, got)
				}
				w.token = tok
				status, _, raw = call("POST", "/v1/tokens/introspect", refreshBody(tok), key, nil)
				if status != http.StatusOK || !strings.Contains(raw, `"active":true`) || field(raw, "sid") != w.session {
					fail("worker %d: introspection of the new token: %d %s, want active, session %s", i, status, raw, w.session)
					return
				}
				w.rotations.Add(1)
			}
		}()
	}
	stopWorkers := sync.OnceFunc(func() { close(done); wg.Wait() })
	t.Cleanup(stopWorkers)
	// progress waits until every worker has rotated a few more times, and
	// checks that /metrics counted their calls: a reload swaps the store,
	// and the counters must still rise, never fall back.
	var counted redisstore.BatchStats
	progress := func(what string) {
		t.Helper()
		marks := make([]int64, workers)
		for i, w := range ws {
			marks[i] = w.rotations.Load()
		}
		poll(t, 20*time.Second, "every session to rotate "+what, func() bool {
			errMu.Lock()
			n := len(errs)
			errMu.Unlock()
			if n > 0 {
				stopWorkers()
				t.Fatalf("%s: %s", what, strings.Join(errs, "\n"))
			}
			for i, w := range ws {
				if w.rotations.Load() < marks[i]+3 {
					return false
				}
			}
			return true
		})
		got := scrapeBatching(t, "http://"+p.MetricsAddr)
		if got.Calls < counted.Calls+3*2*workers || got.Requests <= counted.Requests {
			t.Errorf("%s: /metrics counts %+v, want at least %d calls more than %+v", what, got, 3*2*workers, counted)
		}
		counted = got
	}
	logCount := func(msg string) int { return strings.Count(p.logs.String(), `"msg":"`+msg+`"`) }
	hup := func(what string, msgs ...string) {
		t.Helper()
		before := make([]int, len(msgs))
		for i, m := range msgs {
			before[i] = logCount(m)
		}
		p.cmd.Process.Signal(syscall.SIGHUP)
		poll(t, 10*time.Second, what, func() bool {
			for i, m := range msgs {
				if logCount(m) <= before[i] {
					return false
				}
			}
			return true
		})
	}
	progress("before any change")

	// 1. Add key 2 to verify only, and the gateways' new API key.
	write(signingFile, k1+"\n"+k2+"\n")
	write(apiFile, a1+"\n"+a2+"\n")
	hup("the first reload", "signing keys reloaded", "API keys reloaded")
	if s := authStatus(a2); s != http.StatusOK {
		t.Fatalf("the new API key after it was added: /v1/auth %d, want 200", s)
	}
	apiKey.Store(a2) // the gateways roll over to the new key
	progress("with key 2 listed second and both API keys")

	// 2. Key 2 signs; key 1 still verifies. Drop the old API key.
	expectKey.Store(0)
	write(signingFile, k2+"\n"+k1+"\n")
	write(apiFile, a2+"\n")
	hup("the second reload", "signing keys reloaded", "API keys reloaded")
	expectKey.Store(2)
	progress("with key 2 signing")
	if s := active(oldToken, a2); s != http.StatusOK {
		t.Errorf("a token signed by key 1 while key 1 is still listed: %d, want active", s)
	}
	if s := authStatus(a1); s != http.StatusForbidden {
		t.Errorf("the removed API key on /v1/auth: %d, want 403", s)
	}
	for key, want := range map[string]int{a1: http.StatusUnauthorized, a2: http.StatusOK} {
		if s, _, raw := call("POST", "/v1/tokens/introspect", refreshBody(oldToken), key, nil); s != want {
			t.Errorf("API key %s on the API: %d %s, want %d", key[:9], s, raw, want)
		}
	}
	fresh, _ := login("12345-" + uuid.NewString())
	if id := tokenKeyID(fresh); id != 2 {
		t.Errorf("a login after the change got a token of key %d, want 2", id)
	}

	// 3. Malformed files change nothing.
	write(signingFile, "2 "+randomB64(16)+"\n") // a short secret
	write(apiFile, "short\n")
	hup("the refusal of the malformed files", "signing keys not reloaded: keeping the previous ones", "API keys not reloaded: keeping the previous ones")
	progress("after the malformed files")
	if s := active(oldToken, a2); s != http.StatusOK {
		t.Errorf("after the malformed files: the key-1 token with the current API key: %d, want active", s)
	}
	if s := authStatus(a1); s != http.StatusForbidden {
		t.Errorf("after the malformed files: the removed API key: %d, want 403", s)
	}
	write(signingFile, "")
	hup("the refusal of an empty keys file", "signing keys not reloaded: keeping the previous ones")
	progress("after the empty file")

	// 4. After AbsoluteTTL, key 1 goes: its tokens are unknown from then on.
	write(signingFile, k2+"\n")
	hup("the last reload", "signing keys reloaded")
	progress("with key 2 alone")
	if s := active(oldToken, a2); s != http.StatusUnauthorized {
		t.Errorf("a token of the dropped key 1: %d, want inactive", s)
	}
	stopWorkers()
	if len(errs) > 0 {
		t.Fatalf("%s", strings.Join(errs, "\n"))
	}
	for i, w := range ws {
		if id := tokenKeyID(w.token); id != 2 {
			t.Errorf("worker %d ends with a token of key %d, want 2", i, id)
		}
		if s := active(w.token, a2); s != http.StatusOK {
			t.Errorf("worker %d: its session did not survive: %d", i, s)
		}
		t.Logf("worker %d: %d rotations", i, w.rotations.Load())
	}
	logs := p.logs.String()
	for _, secret := range []string{k1[2:], k2[2:], a1, a2} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log shows a key")
		}
	}
	select {
	case <-p.done:
		t.Errorf("the service exited: %v", p.Err())
	default:
	}
}

// randomB64 is n random bytes in standard base64.
func randomB64(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}
