package redistest

import (
	"os/exec"
	"strconv"
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

// Prioritize puts the server's main thread in the real-time class
// (SCHED_FIFO, with chrt) when the test may (it runs as root), or else at
// nice -10, so that a test that reads Redis's command times (SLOWLOG, which
// times by the wall clock) measures Redis and not the other load of a
// shared machine: a FIFO thread runs until it waits for input. The kernel's
// real-time throttling keeps the machine usable. It reports what it did.
func (s *Server) Prioritize(tb testing.TB) string {
	tb.Helper()
	if s.cmd == nil || s.cmd.Process == nil {
		tb.Fatal("Prioritize: server not running")
	}
	pid := s.cmd.Process.Pid
	if out, err := exec.Command("chrt", "-f", "-p", "10", strconv.Itoa(pid)).CombinedOutput(); err == nil {
		return "SCHED_FIFO"
	} else if err := syscall.Setpriority(syscall.PRIO_PROCESS, pid, -10); err == nil {
		return "nice -10"
	} else {
		tb.Logf("redis-server %s keeps its priority: chrt: %v %s; setpriority: %v", s.Addr, err, out, err)
	}
	return "unchanged"
}
