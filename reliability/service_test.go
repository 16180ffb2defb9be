package reliability_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

// The service-level scenarios build cmd/sessioncache once and drive the
// binary over HTTP against redis-server processes of their own.

var build struct {
	once sync.Once
	path string
	err  error
}

func serviceBinary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		dir, err := os.MkdirTemp("", "sessioncache-reliability-")
		if err != nil {
			build.err = err
			return
		}
		build.path = filepath.Join(dir, "sessioncache")
		out, err := exec.Command("go", "build", "-o", build.path, "github.com/sessioncache/sessioncache/cmd/sessioncache").CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go build ./cmd/sessioncache: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

// logBuffer collects a process's output, safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// service is a running cmd/sessioncache.
type service struct {
	URL    string
	APIKey string
	env    map[string]string
	cmd    *exec.Cmd
	logs   *logBuffer
	done   chan struct{}
	err    error
	http   *http.Client
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// startService runs the service on redisAddr with env added to a
// configuration of its own (API key, secret, key prefix), and waits until
// it listens. When the test ends the service is stopped, and its log and
// its /metrics are scanned for every token the suite saw and for its API
// key.
func startService(t testing.TB, redisAddr string, env map[string]string) *service {
	t.Helper()
	s := &service{APIKey: randomHex(32), logs: &logBuffer{}, done: make(chan struct{}),
		http: &http.Client{Timeout: 10 * time.Second}}
	s.env = map[string]string{
		"SESSIONCACHE_LISTEN":     "127.0.0.1:0",
		"SESSIONCACHE_REDIS_URL":  "redis://" + redisAddr + "/0",
		"SESSIONCACHE_API_KEY":    s.APIKey,
		"SESSIONCACHE_SECRET":     randomHex(32),
		"SESSIONCACHE_KEY_PREFIX": redistest.NewPrefix(),
	}
	for k, v := range env {
		s.env[k] = v
	}
	s.start(t)
	t.Cleanup(func() {
		metrics := ""
		if s.alive() {
			if r, err := s.http.Get(s.URL + "/metrics"); err == nil {
				b, _ := io.ReadAll(r.Body)
				r.Body.Close()
				metrics = string(b)
			}
		}
		s.kill()
		ns := needles()
		for what, text := range map[string]string{"log": s.logs.String(), "metrics": metrics} {
			scannedBytes.Add(int64(len(text)))
			if found := leaks([]byte(text), ns); len(found) > 0 {
				t.Errorf("service %s holds token material: %v", what, found)
			}
			if strings.Contains(text, s.APIKey) {
				t.Errorf("service %s holds the API key", what)
			}
		}
		if strings.Contains(s.logs.String(), "panic") {
			t.Errorf("the service panicked:\n%s", s.logs)
		}
		if t.Failed() {
			t.Logf("service log:\n%s", s.logs)
		}
	})
	return s
}

func (s *service) start(t testing.TB) {
	t.Helper()
	s.cmd = exec.Command(serviceBinary(t))
	s.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range s.env {
		s.cmd.Env = append(s.cmd.Env, k+"="+v)
	}
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	s.done = make(chan struct{})
	from := len(s.logs.String()) // a restart: skip the last run's lines
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := s.done
	go func() {
		s.err = s.cmd.Wait()
		close(done)
	}()
	s.URL = ""
	waitFor(t, "the service to listen", 30*time.Second, func() bool {
		if !s.alive() {
			t.Fatalf("the service exited: %v\n%s", s.err, s.logs)
		}
		for _, line := range strings.Split(s.logs.String()[from:], "\n") {
			var l map[string]any
			if json.Unmarshal([]byte(line), &l) == nil && l["msg"] == "listening" {
				if addr, ok := l["addr"].(string); ok {
					s.URL = "http://" + addr
				}
			}
		}
		return s.URL != ""
	})
}

func (s *service) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func (s *service) kill() {
	if s.alive() {
		s.cmd.Process.Kill()
		<-s.done
	}
}

// status GETs path and returns the status code (0 on a transport error).
func (s *service) status(path string) int {
	r, err := s.http.Get(s.URL + path)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return r.StatusCode
}

// call sends a JSON request with the API key and decodes a JSON answer.
func (s *service) call(ctx context.Context, method, path string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.APIKey)
	r, err := s.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer r.Body.Close()
	var out map[string]any
	json.NewDecoder(r.Body).Decode(&out)
	if tok, ok := out["refresh_token"].(string); ok {
		remember(tok)
	}
	return r.StatusCode, out, nil
}

func (s *service) waitReady(t testing.TB) {
	t.Helper()
	waitFor(t, "/readyz 200", 30*time.Second, func() bool { return s.status("/readyz") == 200 })
}

// login issues a session through the service and returns its token.
func (s *service) login(t testing.TB, user string) string {
	t.Helper()
	code, out, err := s.call(context.Background(), "POST", "/v1/sessions", map[string]any{"user_id": user})
	if err != nil || code != 201 {
		t.Fatalf("login: %d %v %v", code, out, err)
	}
	return out["refresh_token"].(string)
}

func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
