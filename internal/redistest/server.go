package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process started for one test.
type Server struct {
	Addr string
	Port int
	Dir  string
	cmd  *exec.Cmd
	args []string
}

// StartServer starts redis-server on a free loopback port with the given
// extra arguments (e.g. "--maxmemory-policy", "allkeys-lru"), and stops it
// when the test ends. Without redis-server on PATH the test is skipped, or
// fails under SESSIONCACHE_TEST_REQUIRE_REAL=1.
func StartServer(tb testing.TB, args ...string) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		unavailable(tb, "redis-server not on PATH")
	}
	s := &Server{Dir: tb.TempDir(), args: args}
	s.Port = FreePort(tb)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	s.start(tb, bin)
	tb.Cleanup(s.Stop)
	return s
}

func (s *Server) start(tb testing.TB, bin string) {
	tb.Helper()
	all := append([]string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", s.Dir, "--logfile", filepath.Join(s.Dir, "redis.log")}, s.args...)
	s.cmd = exec.Command(bin, all...)
	if err := s.cmd.Start(); err != nil {
		tb.Fatalf("start redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			tb.Fatalf("redis-server on %s did not start: %v\n%s", s.Addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (as a crash would) and waits for it to exit.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// Restart stops the server and starts it again on the same port and
// directory (an append-only file there survives).
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatal(err)
	}
	s.start(tb, bin)
}

// Client returns a client for the server, closed when the test ends.
func (s *Server) Client(tb testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	tb.Cleanup(func() { c.Close() })
	return c
}

// FreePort returns a loopback TCP port that was free a moment ago, below
// 45536 so that a cluster bus port (+10000) is valid too.
func FreePort(tb testing.TB) int {
	tb.Helper()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port < 45536 {
			if bus, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+10000)); err == nil {
				bus.Close()
				return port
			}
		}
	}
	tb.Fatal("no free port below 45536")
	return 0
}
