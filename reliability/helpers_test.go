// Package reliability_test runs sessioncache against Redis as it really
// behaves: lost replies, script cache loss, restarts, Sentinel and Cluster
// failover, memory limits, a stalled server, concurrency checked for
// linearizability, hostile input. Every scenario starts its own redis-server
// processes on free loopback ports and logs its figures on lines that start
// with "FIGURE" (go test -v ./reliability | grep FIGURE). RELIABILITY.md
// explains each scenario and records its figures.
//
// SESSIONCACHE_LONG=1 runs the long variants.
package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/internal/servicetest"
	"github.com/sessioncache/sessioncache/lua"
	"github.com/sessioncache/sessioncache/redisstore"
)

// EnvLong turns on the long variants.
const EnvLong = "SESSIONCACHE_LONG"

func long() bool { return os.Getenv(EnvLong) == "1" }

// pick returns short in the default run and long under SESSIONCACHE_LONG=1.
func pick[T any](short, long_ T) T {
	if long() {
		return long_
	}
	return short
}

func init() {
	// go-redis logs every failed dial; the scenarios cause thousands.
	redis.SetLogger(quietLogger{})
}

// TestMain reports what the secret scans covered over the whole run (each
// scenario scans its servers, files, service log and metrics as it ends),
// and removes the service binary.
func TestMain(m *testing.M) {
	code := m.Run()
	tokens.Lock()
	n, na := len(tokens.all), len(tokens.access)
	tokens.Unlock()
	fmt.Printf("FIGURE secrets_scan tokens_handed_out=%d access_tokens_handed_out=%d keys_scanned=%d bytes_scanned=%d (keyspaces, AOF/RDB files, service logs, /metrics)\n",
		n, na, scannedKeys.Load(), scannedBytes.Load())
	servicetest.RemoveBinary()
	os.Exit(code)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// figure logs one line of measured figures, in a fixed shape that
// RELIABILITY.md quotes.
func figure(t testing.TB, scenario string, kv ...any) {
	t.Helper()
	var b strings.Builder
	b.WriteString("FIGURE ")
	b.WriteString(scenario)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	t.Log(b.String())
}

// ms renders a duration in milliseconds, one decimal.
func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

// isRotate and isIssue tell proxy rules which commands run rotate.lua and
// issue.lua.
func isRotate(args []string) bool { return redistest.RunsScript(args, lua.Rotate) }
func isIssue(args []string) bool  { return redistest.RunsScript(args, lua.Issue) }
func isRevoke(args []string) bool { return redistest.RunsScript(args, lua.Revoke) }

// tokens remembers every token the suite saw, so that keyspaces, files and
// logs can be scanned for them: refresh tokens (all) and the service's
// access tokens (access).
var tokens = struct {
	sync.Mutex
	all, access []string
}{}

// remember files a token by its kind: a refresh token has the store's
// prefix, anything else is an access token.
func remember(tok string) {
	if tok == "" {
		return
	}
	tokens.Lock()
	if strings.HasPrefix(tok, redisstore.DefaultTokenPrefix) {
		tokens.all = append(tokens.all, tok)
	} else {
		tokens.access = append(tokens.access, tok)
	}
	tokens.Unlock()
}

// counter counts outcomes by name, safe for concurrent use.
type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counter) add(name string, n int) {
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]int)
	}
	c.m[name] += n
	c.mu.Unlock()
}

func (c *counter) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[name]
}

func (c *counter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, 0, len(c.m))
	for k := range c.m {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%d", k, c.m[k])
	}
	b.WriteByte('}')
	return b.String()
}

// errClass names an error for the counters: a store outcome, or the kind
// of infrastructure failure.
func errClass(err error) string {
	var re redis.Error
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, redisstore.ErrReused):
		return "reused"
	case errors.Is(err, redisstore.ErrRevoked):
		return "revoked"
	case errors.Is(err, redisstore.ErrUnknown):
		return "unknown"
	case errors.Is(err, redisstore.ErrExpired):
		return "expired"
	case errors.Is(err, redisstore.ErrMalformed):
		return "malformed"
	case errors.Is(err, redisstore.ErrNotReplicated):
		return "not_replicated"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case errors.As(err, &re):
		f, _, _ := strings.Cut(re.Error(), " ")
		return "redis_" + strings.ToLower(f)
	}
	s := err.Error()
	for _, k := range []string{"connection refused", "connection reset", "EOF", "i/o timeout", "broken pipe", "closed"} {
		if strings.Contains(s, k) {
			return "net_" + strings.ReplaceAll(k, " ", "_")
		}
	}
	return "other"
}

// waitFor polls cond until it holds or the deadline passes.
var waitFor = servicetest.WaitFor

func bg(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// listAll pages through every session of user, limit sessions a page
// (0: the store's default).
func listAll(ctx context.Context, st store, user string, limit int) ([]redisstore.Session, error) {
	var all []redisstore.Session
	opt := redisstore.ListOptions{Limit: limit}
	for pages := 0; ; pages++ {
		if pages > 10_000 {
			return all, fmt.Errorf("ListSessions(%q): more than %d pages", user, pages)
		}
		p, err := st.ListSessions(ctx, user, opt)
		if err != nil {
			return all, err
		}
		all = append(all, p.Sessions...)
		if p.Next == "" {
			return all, nil
		}
		opt.Cursor = p.Next
	}
}

// callKey names one call of a script across its attempts: a go-redis retry
// resends the same keys and arguments, call id included, while every call
// has a call id of its own.
func callKey(args []string) string { return strings.Join(args[2:], "\x00") }

// taggedUA returns the user agent a command carries (in whichever argument
// the script takes it) if it starts with tag: tag and what follows, up to
// and including the first ';'. Tests tag calls with a user agent, the one
// input of a rotation they choose freely.
func taggedUA(args []string, tag string) string {
	for _, a := range args[2:] {
		if i := strings.Index(a, tag); i >= 0 {
			if j := strings.IndexByte(a[i:], ';'); j >= 0 {
				return a[i : i+j+1]
			}
		}
	}
	return ""
}
