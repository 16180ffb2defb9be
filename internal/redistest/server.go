package redistest

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process started for a test or a benchmark run.
type Server struct {
	Addr string
	Port int
	Dir  string
	cmd  *exec.Cmd
	args []string
	// ownDir: Launch made Dir, and Stop removes it.
	ownDir bool
}

// StartServer starts redis-server on a free loopback port with the given
// extra arguments (e.g. "--maxmemory-policy", "allkeys-lru"), and stops it
// when the test ends. Without redis-server on PATH the test is skipped, or
// fails under SESSIONCACHE_TEST_REQUIRE_REAL=1.
func StartServer(tb testing.TB, args ...string) *Server {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		unavailable(tb, "redis-server not on PATH")
	}
	s := &Server{Dir: tb.TempDir(), args: args}
	s.Port = FreePort(tb)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	if err := s.start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Launch starts redis-server like StartServer, for a caller that outlives
// one test (a benchmark binary's shared server): the caller calls Stop,
// which also removes the server's folder.
func Launch(args ...string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "sessioncache-redis-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), args: args, ownDir: true}
	if err := s.start(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("redis-server not on PATH: %w", err)
	}
	all := append([]string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", s.Dir, "--logfile", filepath.Join(s.Dir, "redis.log")}, s.args...)
	s.cmd = exec.Command(bin, all...)
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			return fmt.Errorf("redis-server on %s did not start: %v\n%s", s.Addr, err, log)
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
	if s.ownDir {
		os.RemoveAll(s.Dir)
	}
}

// Restart stops the server and starts it again on the same port and
// directory (an append-only file there survives).
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
	if err := s.start(); err != nil {
		tb.Fatal(err)
	}
}

// Client returns a client for the server, closed when the test ends.
func (s *Server) Client(tb testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	tb.Cleanup(func() { c.Close() })
	return c
}

// Backend returns a backend of kind Real on the server, with a client of
// go-redis's defaults and a key prefix of its own. Its keys are left in
// place when the test ends: the server ends with it, and a test may still
// read what it holds.
func (s *Server) Backend(tb testing.TB) *Backend {
	c := s.Client(tb)
	return &Backend{Kind: Real, Client: c, Prefix: NewPrefix(), Clock: &Clock{rdb: c}}
}

// FreePort returns a loopback TCP port that was free a moment ago, and
// whose cluster bus port (+10000) was too. Both lie below the kernel's
// ephemeral range, where outgoing connections take source ports at any
// moment: a port found free there may be taken before Redis binds it.
func FreePort(tb testing.TB) int {
	tb.Helper()
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	return port
}

func freePort() (int, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 20100 {
				low = v
			}
		}
	}
	for i := 0; i < 200; i++ {
		port := 10000 + mrand.IntN(low-20000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		bus, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+10000))
		l.Close()
		if err == nil {
			bus.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free port pair below the ephemeral range")
}
