package bench

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Helpers of the commands that build and run the service and its
// neighbours as processes (bench/cpucost, bench/revprobe). Linux only.

// Build builds the package pkg into dir/name and returns its path.
func Build(dir, pkg, name string) (string, error) {
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return bin, cmd.Run()
}

// Server is a running server process.
type Server struct {
	Name string
	Cmd  *exec.Cmd
	URL  string // http://host:port
	// MetricsURL is http://host:port of its /metrics, for a service whose
	// listening line names a metrics_addr; "" otherwise.
	MetricsURL string
	Tail       *Tail // its last log lines
	done       chan struct{}
}

// StartServer runs a server whose JSON log on stderr names the address it
// listens on ({"msg":"listening","addr":...}), and waits for that line.
func StartServer(name string, cmd *exec.Cmd) (*Server, error) {
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{Name: name, Cmd: cmd, Tail: &Tail{}, done: make(chan struct{})}
	type addrs struct{ api, metrics string }
	addr := make(chan addrs, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			s.Tail.add(sc.Text())
			var l struct {
				Msg, Addr   string
				MetricsAddr string `json:"metrics_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "listening" && l.Addr != "" {
				select {
				case addr <- addrs{l.Addr, l.MetricsAddr}:
				default:
				}
			}
		}
		cmd.Wait()
	}()
	select {
	case a := <-addr:
		s.URL = "http://" + a.api
		if a.metrics != "" && a.metrics != "off" {
			s.MetricsURL = "http://" + a.metrics
		}
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("%s exited before listening:\n%s", name, s.Tail)
	case <-time.After(30 * time.Second):
		s.Stop()
		return nil, fmt.Errorf("%s did not listen within 30s:\n%s", name, s.Tail)
	}
}

// WaitReady polls /readyz until it answers 200.
func (s *Server) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(s.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s:\n%s", s.Name, timeout, s.Tail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop interrupts the server (the service then skips its shutdown delay)
// and waits for it.
func (s *Server) Stop() {
	s.Cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.Cmd.Process.Kill()
		<-s.done
	}
}

// Tail keeps the last lines a server logged, for error messages.
type Tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *Tail) add(l string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lines = append(t.lines, l); len(t.lines) > 20 {
		t.lines = t.lines[1:]
	}
}

func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// ListFlag is a flag that may be given several times.
type ListFlag []string

func (l *ListFlag) String() string     { return strings.Join(*l, " ") }
func (l *ListFlag) Set(v string) error { *l = append(*l, v); return nil }

// LoadAvg is the machine's load average over 1, 5 and 15 minutes.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// RandomHex returns n random bytes, hex-encoded.
func RandomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
