package sessioncache_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/lua"
	"github.com/sessioncache/sessioncache/redisstore"
)

// TestHostileUser: one user holds 100,000 sessions (set
// SESSIONCACHE_TEST_HOSTILE_SESSIONS for another count; -short: 10,000).
// Listing all of them page by page, then logging them out everywhere, never
// makes Redis run one command or script for 10 ms or more (SLOWLOG), and
// another user's rotations and validations keep a p99 under 50 ms
// meanwhile. On a private redis-server and a private 3-master cluster, so
// that SLOWLOG can be reset and set to log everything over 1 ms, each in
// the real-time scheduling class when the test runs as root.
//
// SLOWLOG times commands by the wall clock: on 2 cores shared with other
// test binaries, a descheduled Redis logs even a one-field HMGET at 20 ms,
// and three cluster nodes and the test share 2 cores even alone.
// So this test runs only when SESSIONCACHE_TEST_HOSTILE=1, alone: .ci/run
// runs it as a step of its own after the suite.
func TestHostileUser(t *testing.T) {
	if os.Getenv("SESSIONCACHE_TEST_HOSTILE") != "1" {
		t.Skip("measures Redis's command times, so it runs alone: SESSIONCACHE_TEST_HOSTILE=1 go test -run TestHostileUser . (.ci/run does)")
	}
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	if v := os.Getenv("SESSIONCACHE_TEST_HOSTILE_SESSIONS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("redis", func(t *testing.T) {
		srv := redistest.StartServer(t)
		t.Logf("redis-server runs %s", srv.Prioritize(t))
		c := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 128})
		t.Cleanup(func() { c.Close() })
		hostileUser(t, c, []*redis.Client{c}, n)
	})
	t.Run("cluster", func(t *testing.T) {
		tc := redistest.StartCluster(t, 3, 0, 5*time.Second)
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: tc.Addrs(), PoolSize: 128})
		t.Cleanup(func() { c.Close() })
		var nodes []*redis.Client
		for _, s := range tc.Nodes {
			t.Logf("cluster node %s runs %s", s.Addr, s.Prioritize(t))
			nodes = append(nodes, s.Client(t))
		}
		hostileUser(t, c, nodes, n)
	})
}

func hostileUser(t *testing.T, c redis.UniversalClient, nodes []*redis.Client, n int) {
	ctx := context.Background()
	for _, node := range nodes {
		if err := node.ConfigSet(ctx, "slowlog-log-slower-than", "1000").Err(); err != nil {
			t.Fatal(err)
		}
		node.ConfigSet(ctx, "slowlog-max-len", "100000")
	}
	s := redistest.NewStore(t, c, redisstore.Options{MaxSessions: redisstore.NoSessionCap})
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	// The hostile user's sessions, 64 logins at a time.
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	sample := make([]string, 64)
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				g, err := s.Issue(ctx, "hostile", redisstore.Client{DeviceName: "bot"})
				if err != nil {
					t.Errorf("Issue: %v", err)
					return
				}
				sample[w] = g.Token
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d sessions of one user created in %v", n, time.Since(start).Round(time.Millisecond))

	// Another user works throughout.
	by, err := s.Issue(ctx, "bystander", laptop)
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range nodes {
		node.SlowLogReset(ctx)
	}
	stop := make(chan struct{})
	var lat []time.Duration
	var bystander sync.WaitGroup
	bystander.Add(1)
	go func() {
		defer bystander.Done()
		tok := by.Token
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			if i%2 == 0 {
				g, err := s.Rotate(ctx, tok, redisstore.Client{})
				if err != nil {
					t.Errorf("bystander Rotate: %v", err)
					return
				}
				tok = g.Token
			} else if _, err := s.Validate(ctx, tok); err != nil {
				t.Errorf("bystander Validate: %v", err)
				return
			}
			lat = append(lat, time.Since(t0))
		}
	}()

	start = time.Now()
	listed, pages := 0, 0
	for opt := (redisstore.ListOptions{Limit: redisstore.MaxListLimit}); ; {
		p, err := s.ListSessions(ctx, "hostile", opt)
		if err != nil {
			t.Fatal(err)
		}
		listed += len(p.Sessions)
		pages++
		if p.Next == "" {
			break
		}
		opt.Cursor = p.Next
	}
	listTime := time.Since(start)
	start = time.Now()
	revoked, err := s.RevokeAll(ctx, "hostile", "")
	revokeTime := time.Since(start)
	close(stop)
	bystander.Wait()
	if err != nil {
		t.Fatalf("RevokeAll: %v", err)
	}
	if listed != n || revoked != n {
		t.Fatalf("listed %d, revoked %d; want %d", listed, revoked, n)
	}
	for _, tok := range sample {
		if _, err := s.Validate(ctx, tok); !errors.Is(err, redisstore.ErrRevoked) {
			t.Fatalf("a session after RevokeAll: %v", err)
		}
	}

	var slowest time.Duration
	var slowCmd string
	over := 0
	for _, node := range nodes {
		log, err := node.SlowLogGet(ctx, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range log {
			over++
			if e.Duration > slowest {
				slowest, slowCmd = e.Duration, describe(e.Args)
			}
		}
	}
	slices.Sort(lat)
	if len(lat) < 20 {
		t.Fatalf("the bystander made only %d calls", len(lat))
	}
	p99 := lat[len(lat)*99/100]
	t.Logf("%d sessions: listed in %d pages in %v, RevokeAll in %v; SLOWLOG: %d entries over 1 ms, the longest %v (%s); bystander: %d calls, p50 %v, p99 %v, max %v",
		n, pages, listTime.Round(time.Millisecond), revokeTime.Round(time.Millisecond), over, slowest, slowCmd,
		len(lat), lat[len(lat)/2], p99, lat[len(lat)-1])
	if slowest >= 10*time.Millisecond {
		t.Errorf("Redis ran %s for %v: one user's sessions blocked everyone", slowCmd, slowest)
	}
	if p99 >= 50*time.Millisecond {
		t.Errorf("another user's p99 was %v while one user's sessions were listed and revoked, want under 50ms", p99)
	}
}

// describe names a SLOWLOG entry's command: for a script, which one and how
// many keys it was passed.
func describe(args []string) string {
	if len(args) < 3 || !strings.EqualFold(args[0], "evalsha") {
		return strings.Join(args[:min(len(args), 1)], " ")
	}
	for name, src := range map[string]string{"issue.lua": lua.Issue, "evict.lua": lua.Evict, "rotate.lua": lua.Rotate,
		"revoke.lua": lua.Revoke, "revoke_all.lua": lua.RevokeAll, "list.lua": lua.List, "inspect.lua": lua.Inspect} {
		if redistest.RunsScript(args, src) {
			return name + " with " + args[2] + " keys"
		}
	}
	return "evalsha " + args[1]
}
