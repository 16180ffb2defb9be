// Package servicetest runs the real sessioncache binary for tests, the way
// an operator runs it: built once from this tree, started with exactly the
// environment the test gives (and PATH), its JSON log collected, its
// address read from its "listening" line, killed when the test ends.
//
// The service's own tests (cmd/sessioncache) and the reliability suite
// share it; each adds only what it checks.
package servicetest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Package is the import path of the service.
const Package = "github.com/sessioncache/sessioncache/cmd/sessioncache"

var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Binary returns the path of cmd/sessioncache built from this tree. The
// first call of a test process builds it (go.work makes the service's
// module visible from every module of the repository); RemoveBinary, from
// TestMain, deletes it.
func Binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "sessioncache-bin-")
		if build.err != nil {
			return
		}
		build.path = filepath.Join(build.dir, "sessioncache")
		out, err := exec.Command("go", "build", "-o", build.path, Package).CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go build %s: %v\n%s", Package, err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

// RemoveBinary deletes what Binary built, if anything. Call it from
// TestMain after m.Run.
func RemoveBinary() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
}

// Buffer collects a process's output; it is safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Command prepares the binary with exactly env (and PATH): nothing leaks
// in from the test's own environment, but for SESSIONCACHE_METRICS_LISTEN,
// 127.0.0.1:0 unless env sets it (its default, a fixed port, would make
// services started at once collide). Its output goes to the returned
// buffer.
func Command(t testing.TB, env map[string]string, args ...string) (*exec.Cmd, *Buffer) {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if _, ok := env[MetricsListen]; !ok {
		cmd.Env = append(cmd.Env, MetricsListen+"=127.0.0.1:0")
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs := &Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	return cmd, logs
}

// MetricsListen is the setting of the listener of /metrics and
// /openapi.yaml.
const MetricsListen = "SESSIONCACHE_METRICS_LISTEN"

// Process is a running service.
type Process struct {
	Cmd  *exec.Cmd
	Logs *Buffer
	// Addr is the API listener's host:port, from the "listening" log line.
	Addr string
	// MetricsAddr is the host:port of /metrics and /openapi.yaml, from the
	// same line; "off" if they are not served.
	MetricsAddr string

	done chan struct{}
	err  error // of Wait, once done is closed
}

// Start starts cmd (from Command, perhaps given credentials or a working
// directory since) and waits up to 30 s until it logs that it listens.
// The process is killed when the test ends, and its log shown if the test
// failed.
func Start(t testing.TB, cmd *exec.Cmd, logs *Buffer) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, Logs: logs, done: make(chan struct{})}
	from := len(logs.String()) // a restart on the same buffer: skip the last run's lines
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("service log:\n%s", logs)
		}
	})
	WaitFor(t, "the service to listen", 30*time.Second, func() bool {
		if !p.Alive() {
			t.Fatalf("the service exited: %v\n%s", p.err, logs)
		}
		for _, l := range LogLines(logs.String()[from:]) {
			if addr, ok := l["addr"].(string); ok && l["msg"] == "listening" {
				p.Addr = addr
				p.MetricsAddr, _ = l["metrics_addr"].(string)
				return true
			}
		}
		return false
	})
	return p
}

// Alive reports whether the process is still running.
func (p *Process) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is what waiting for the process returned: nil for exit status 0, an
// *exec.ExitError otherwise. Read it after Done is closed.
func (p *Process) Err() error { return p.err }

// Kill kills the process, if it runs, and waits for it.
func (p *Process) Kill() {
	if p.Alive() {
		p.Cmd.Process.Kill()
		<-p.done
	}
}

// ExitCode waits up to d for the process to exit and returns its code.
func (p *Process) ExitCode(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("the service did not exit within %v\n%s", d, p.Logs)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// LogLines decodes the JSON lines of a log; other lines are skipped.
func LogLines(s string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// WaitFor calls cond every 10 ms until it holds, or fails the test after d.
func WaitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
