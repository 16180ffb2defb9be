package main

// Rename-only loading of key files: a file written in place is never
// loaded, however its writer stalls; a refused reload shows in the metrics.

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/redisstore"
)

// keyReloadEnv runs a reloader over an API keys file, looking at it as
// often as the test's loop ticks, as main does every keyCheckInterval.
type keyReloadEnv struct {
	t    *testing.T
	e    *testEnv
	file *keyFile
	logs *syncBuffer
}

func newKeyReloadEnv(t *testing.T, file string) *keyReloadEnv {
	cfg, err := loadConfig(nil, envOf(map[string]string{envSecret: goodSecret, envAPIKeysFile: file}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	e := newTestEnv(t, func(s *envSetup) { s.server.apiKeys = cfg.APIKeys })
	rl := newReloader(cfg, e.srv, e.b.Client, redisstore.Options{Secret: testSecret, KeyPrefix: e.b.Prefix}, slog.New(slog.NewJSONHandler(logs, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				rl.checkFiles()
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return &keyReloadEnv{t: t, e: e, file: rl.files[0], logs: logs}
}

func (k *keyReloadEnv) accepted(key string) bool { return validAPIKey(*k.e.srv.apiKeys.Load(), key) }

// lookTwice waits until the loop has looked at the file twice more: once
// to see a change, once to see it stood still.
func (k *keyReloadEnv) lookTwice() {
	k.t.Helper()
	n := k.file.looks.Load()
	poll(k.t, 10*time.Second, "two more looks at the key file", func() bool { return k.file.looks.Load() >= n+2 })
}

// errors returns sessioncache_keys_reload_errors_total{file="api_keys"}.
func (k *keyReloadEnv) errors() int {
	k.t.Helper()
	n, err := strconv.Atoi(k.metric("sessioncache_keys_reload_errors_total"))
	if err != nil {
		k.t.Fatal(err)
	}
	return n
}

// metric returns the value of the api_keys series of name in /metrics.
func (k *keyReloadEnv) metric(name string) string {
	k.t.Helper()
	w := httptest.NewRecorder()
	k.e.srv.metrics.handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	m := regexp.MustCompile(`(?m)^` + name + `\{file="api_keys"\} (\S+)$`).FindStringSubmatch(w.Body.String())
	if m == nil {
		k.t.Fatalf("/metrics has no %s{file=\"api_keys\"}", name)
	}
	return m[1]
}

// A writer that stalls in the middle of "K2\nK3", in place: the loop looks
// at the half-written file many times and never loads it, K3's first 20
// characters are never an API key; the same file complete, still in place,
// is not loaded either; renamed into place, it is.
func TestKeyFileStalledWriter(t *testing.T) {
	k1, k2, k3 := "gateway-1-"+randomHex(16), "gateway-2-"+randomHex(16), "gateway-3-"+randomHex(16)
	file := filepath.Join(t.TempDir(), "api-keys")
	writeAtomically(t, file, []byte(k1+"\n"+k2+"\n"))
	k := newKeyReloadEnv(t, file)
	k.lookTwice()

	w, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := io.WriteString(w, k2+"\n"+k3[:20]); err != nil {
		t.Fatal(err)
	}
	// The writer stalls: the file stands still, half written. (The loop
	// may have refused the emptied file too, if it looked twice between
	// the truncation and the write.)
	poll(t, 10*time.Second, "the write in place to be refused", func() bool { return k.errors() >= 1 })
	k.lookTwice()
	if k.accepted(k3[:20]) || !k.accepted(k1) || !k.accepted(k2) {
		t.Fatalf("while the writer stalls: K3's prefix accepted %v, K1 %v, K2 %v; want false, true, true\n%s",
			k.accepted(k3[:20]), k.accepted(k1), k.accepted(k2), k.logs)
	}
	if !strings.Contains(k.logs.String(), "written in place") {
		t.Errorf("the log does not say why the file was not loaded:\n%s", k.logs)
	}
	// The writer finishes, in place: not loaded either.
	refused := k.errors()
	if _, err := io.WriteString(w, k3[20:]+"\n"); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, "the finished write in place to be refused", func() bool { return k.errors() == refused+1 })
	if k.accepted(k3) || !k.accepted(k1) {
		t.Fatalf("after a complete write in place: K3 accepted %v, K1 %v; want false, true", k.accepted(k3), k.accepted(k1))
	}
	// Renamed into place: loaded.
	writeAtomically(t, file, []byte(k2+"\n"+k3+"\n"))
	poll(t, 10*time.Second, "K3 to be accepted", func() bool { return k.accepted(k3) })
	if k.accepted(k1) || k.accepted(k3[:20]) {
		t.Errorf("after the rename: K1 accepted %v, K3's prefix %v; want false, false", k.accepted(k1), k.accepted(k3[:20]))
	}
	for _, key := range []string{k1, k2, k3} {
		if strings.Contains(k.logs.String(), key[10:]) {
			t.Errorf("the log shows a key")
		}
	}
}

// A reload that is refused ("K1\nshort", meant to drop a leaked K2) keeps
// the previous keys, K2 included: it shows in
// sessioncache_keys_reload_errors_total, and the time of the last good
// load does not move.
func TestKeyFileRefusedReloadInMetrics(t *testing.T) {
	k1, k2 := "gateway-1-"+randomHex(16), "gateway-2-"+randomHex(16)
	file := filepath.Join(t.TempDir(), "api-keys")
	writeAtomically(t, file, []byte(k1+"\n"+k2+"\n"))
	k := newKeyReloadEnv(t, file)
	if got := k.metric("sessioncache_keys_reload_errors_total"); got != "0" {
		t.Fatalf("reload errors at start: %s, want 0", got)
	}
	loaded := k.metric("sessioncache_keys_last_reload_success_timestamp_seconds")
	if loaded == "0" {
		t.Fatal("no time of the load at start")
	}
	writeAtomically(t, file, []byte(k1+"\nshort\n"))
	poll(t, 10*time.Second, "the refused reload to show in /metrics", func() bool { return k.metric("sessioncache_keys_reload_errors_total") == "1" })
	if !k.accepted(k1) || !k.accepted(k2) {
		t.Errorf("after a refused reload: K1 accepted %v, K2 %v; want both (the previous keys stay)", k.accepted(k1), k.accepted(k2))
	}
	if got := k.metric("sessioncache_keys_last_reload_success_timestamp_seconds"); got != loaded {
		t.Errorf("the time of the last good load moved on a refused reload: %s, was %s", got, loaded)
	}
	writeAtomically(t, file, []byte(k1+"\n"))
	poll(t, 10*time.Second, "K2 to be dropped", func() bool { return !k.accepted(k2) })
	if got := k.metric("sessioncache_keys_reload_errors_total"); got != "1" {
		t.Errorf("reload errors after a good reload: %s, want still 1", got)
	}
}
