package redistest

import (
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
)

// Rules for fault proxies (Proxy.SetRule, Backend.Faulty).

// RunsScript reports whether a command, as a proxy rule or a hook sees its
// arguments, runs script src (EVALSHA of its SHA1, or EVAL).
func RunsScript(args []string, src string) bool {
	if len(args) < 2 {
		return false
	}
	switch strings.ToLower(args[0]) {
	case "evalsha":
		sum := sha1.Sum([]byte(src))
		return args[1] == hex.EncodeToString(sum[:])
	case "eval":
		return args[1] == src
	}
	return false
}

// DropFirst returns a proxy rule that drops the reply of the first command
// that match accepts (Redis runs it; the client sees its connection close),
// and a count of the replies it dropped (0 or 1).
func DropFirst(match func(args []string) bool) (func(args []string) Fault, func() int) {
	var mu sync.Mutex
	dropped := 0
	return func(args []string) Fault {
			mu.Lock()
			defer mu.Unlock()
			if dropped == 0 && match(args) {
				dropped++
				return DropReply
			}
			return Pass
		}, func() int {
			mu.Lock()
			defer mu.Unlock()
			return dropped
		}
}

// DropThenHold returns a proxy rule for a late retry: it drops the reply of
// the first command that match accepts and holds every later one (the
// retries) until release is called, and a count of the commands it
// accepted so far. If the test ends first, its cleanup releases them
// before the proxies close.
func DropThenHold(tb testing.TB, match func(args []string) bool) (rule func(args []string) Fault, release func(), seen func() int) {
	var mu sync.Mutex
	n := 0
	held := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	rule = func(args []string) Fault {
		if !match(args) {
			return Pass
		}
		mu.Lock()
		n++
		first := n == 1
		if n == 2 {
			// Registered now, after the proxies' own cleanups, so that
			// it runs before them: Proxy.Close waits for this call.
			tb.Cleanup(release)
		}
		mu.Unlock()
		if first {
			return DropReply
		}
		<-held
		return Pass
	}
	seen = func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
	return rule, release, seen
}
