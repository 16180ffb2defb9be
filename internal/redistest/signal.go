package redistest

import (
	"syscall"
	"testing"
)

// Pause stops the server with SIGSTOP: it keeps its connections open and
// answers nothing until Resume. The test's cleanup resumes it first.
func (s *Server) Pause(tb testing.TB) {
	tb.Helper()
	if s.cmd == nil || s.cmd.Process == nil {
		tb.Fatal("Pause: server not running")
	}
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		tb.Fatalf("SIGSTOP: %v", err)
	}
	p := s.cmd.Process
	tb.Cleanup(func() { p.Signal(syscall.SIGCONT) })
}

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume(tb testing.TB) {
	tb.Helper()
	if s.cmd == nil || s.cmd.Process == nil {
		tb.Fatal("Resume: server not running")
	}
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		tb.Fatalf("SIGCONT: %v", err)
	}
}

// Prioritize raises the server's main thread to nice -10 when the test may
// (it runs as root), so that a test that reads Redis's command times
// (SLOWLOG) measures Redis and not the other load on a shared machine. It
// reports whether it could.
func (s *Server) Prioritize(tb testing.TB) bool {
	tb.Helper()
	if s.cmd == nil || s.cmd.Process == nil {
		tb.Fatal("Prioritize: server not running")
	}
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, s.cmd.Process.Pid, -10); err != nil {
		tb.Logf("redis-server %s keeps its priority: %v", s.Addr, err)
		return false
	}
	return true
}
