package reliability_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// TestMoveOntoCluster moves live sessions from a single Redis, and from a
// Sentinel group, onto a 3-master cluster, with Options.MoveFrom and a walk
// of the old keyspace with MoveKey (what `sessioncache move` does), while
// rotations run on both sides: instances still on the old Redis rotate a
// quarter of the sessions (when one meets a session already moved it
// answers ErrMoved, never ErrUnknown, and its client retries at an instance
// on the cluster, with the same token), and
// instances on the cluster (with MoveFrom) rotate another quarter. After the
// move, on the cluster alone: every session's current token rotates (nobody
// is logged out); a token rotated on the old Redis during the move,
// presented again, revokes its session (grace is off); the TTLs of the
// sessions left alone are within 1 s of what they were; a second walk moves
// nothing and the old Redis holds none of the store's keys but moved
// markers, each with a TTL.
func TestMoveOntoCluster(t *testing.T) {
	t.Parallel()
	t.Run("from=redis", func(t *testing.T) {
		old := startServer(t)
		moveOntoCluster(t, old.Client(t), pick(10000, 100000))
	})
	t.Run("from=sentinel", func(t *testing.T) {
		master := startServer(t)
		host, port, _ := net.SplitHostPort(master.Addr)
		startServer(t, "--replicaof", host, port)
		sen := redistest.StartSentinels(t, master.Addr, 1, redistest.SentinelConfig{})
		c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: sen.Name, SentinelAddrs: sen.Addrs})
		t.Cleanup(func() { c.Close() })
		moveOntoCluster(t, c, pick(3000, 30000))
	})
}

func moveOntoCluster(t *testing.T, oldClient redis.UniversalClient, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), pick(2*time.Minute, 30*time.Minute))
	t.Cleanup(cancel)
	prefix := redistest.NewPrefix()
	opt := redisstore.Options{KeyPrefix: prefix, Grace: redisstore.NoGrace, IdleTTL: time.Hour, AbsoluteTTL: 2 * time.Hour}
	oldSt := wrap(t, oldClient, opt)
	grants := issueMany(t, oldSt, n, 16)

	cc, newSt := startMoveTarget(t, oldClient, opt)
	if err := newSt.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	before := deadlines(t, ctx, oldClient, prefix)

	// Sessions [0, n/4) rotate on the old Redis, [n/4, n/2) on the
	// cluster; the rest are left alone.
	cur := tokensOf(grants)
	stale := make([]string, n) // a token rotated on the old Redis during the move
	var stop atomic.Bool
	var rotations, onOld, handoffs atomic.Int64
	var failMu sync.Mutex
	var failures []string
	fail := func(format string, err error) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, format+": "+err.Error())
		}
	}
	var wg sync.WaitGroup
	const workers = 4
	for w := 0; w < 2*workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			onOldSide := w < workers
			base := 0
			if !onOldSide {
				base = n / 4
			}
			for !stop.Load() {
				for j := base + w%workers; j < base+n/4 && !stop.Load(); j += workers {
					var g redisstore.Grant
					var err error
					if onOldSide {
						g, err = oldSt.Rotate(ctx, cur[j], redisstore.Client{})
						if errors.Is(err, redisstore.ErrMoved) {
							handoffs.Add(1)
							g, err = newSt.Rotate(ctx, cur[j], redisstore.Client{})
						} else if err == nil {
							onOld.Add(1)
							stale[j] = cur[j]
						}
					} else {
						g, err = newSt.Rotate(ctx, cur[j], redisstore.Client{})
					}
					if err != nil {
						fail("rotation during the move", err)
						continue
					}
					rotations.Add(1)
					cur[j] = g.Token
				}
			}
		}()
	}

	t0 := time.Now()
	moved := walkMove(t, ctx, newSt, oldClient, prefix)
	took := time.Since(t0)
	stop.Store(true)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if again := walkMove(t, ctx, newSt, oldClient, prefix); again != 0 {
		t.Errorf("a second walk moved %d keys, want 0", again)
	}
	if left, markers := leftOnOld(t, ctx, oldClient, prefix); left != 0 || markers == 0 {
		t.Errorf("the old Redis holds %d keys of the store after the move (want 0) and %d moved markers (want > 0)", left, markers)
	}
	if onOld.Load() == 0 || handoffs.Load() == 0 {
		t.Errorf("rotations on the old Redis: %d, handed off to the cluster: %d; want both > 0 (the move was too quick to overlap them)", onOld.Load(), handoffs.Load())
	}

	// TTLs of the sessions left alone, on the cluster alone.
	after := deadlines(t, ctx, cc, prefix)
	ids := make(map[string]int, n) // session id as in its key -> grant
	for i, g := range grants {
		id := uuid.MustParse(g.SessionID)
		ids[base64.RawURLEncoding.EncodeToString(id[:])] = i
	}
	checked, worst := 0, time.Duration(0)
	for key, d := range before {
		i, ok := ids[key[strings.LastIndexByte(key, ':')+1:]]
		if !ok || i < n/2 {
			continue
		}
		a, ok := after[key]
		if !ok {
			t.Errorf("session %d is missing on the cluster", i)
			continue
		}
		checked++
		worst = max(worst, (a - d).Abs())
	}
	if checked != n-n/2 || worst > time.Second {
		t.Errorf("TTLs of %d sessions left alone (want %d): the worst differs by %v, want within 1s", checked, n-n/2, worst)
	}

	// On the cluster alone: nobody is logged out, and a token rotated on
	// the old Redis, presented again, revokes its session.
	plain := wrap(t, cc, opt)
	var replays, loggedOut, missed atomic.Int64
	each(n, func(i int) {
		g, err := plain.Rotate(ctx, cur[i], redisstore.Client{})
		if err != nil {
			if loggedOut.Add(1) <= 5 {
				t.Errorf("session %d: its current token does not rotate after the move: %v", i, err)
			}
			return
		}
		if stale[i] == "" {
			return
		}
		replays.Add(1)
		_, err = plain.Rotate(ctx, stale[i], redisstore.Client{})
		_, err2 := plain.Rotate(ctx, g.Token, redisstore.Client{})
		if !errors.Is(err, redisstore.ErrReused) || !errors.Is(err2, redisstore.ErrRevoked) {
			if missed.Add(1) <= 5 {
				t.Errorf("session %d: a token rotated on the old Redis, replayed after the move: %v (want ErrReused), then its current token: %v (want ErrRevoked)", i, err, err2)
			}
		}
	})
	figure(t, "move_onto_cluster", "sessions", n, "keys_moved", moved, "took", took.Round(time.Millisecond),
		"keys_per_s", int(float64(moved)/took.Seconds()), "rotations_during", rotations.Load(),
		"rotated_on_old", onOld.Load(), "handed_off", handoffs.Load(), "replays", replays.Load(), "replays_missed", missed.Load(),
		"ttl_checked", checked, "ttl_worst_diff", worst, "logged_out", loggedOut.Load())
}

// startMoveTarget starts a 3-master cluster and returns a client of it and
// a store on it that moves from oldClient (opt with MoveFrom).
func startMoveTarget(t *testing.T, oldClient redis.UniversalClient, opt redisstore.Options) (*redis.ClusterClient, store) {
	t.Helper()
	tc := redistest.StartCluster(t, 3, 0, time.Second)
	for _, s := range tc.Nodes {
		t.Cleanup(func() { scanServer(t, s) })
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: tc.Addrs()})
	t.Cleanup(func() { cc.Close() })
	moving := opt
	moving.MoveFrom = oldClient
	newSt := wrap(t, cc, moving)
	return cc, newSt
}

// walkMove moves every key under prefix on the old Redis, as `sessioncache
// move` does: SCAN, then MoveKey per key, 8 at a time. It returns the keys
// written.
func walkMove(t *testing.T, ctx context.Context, st store, old redis.UniversalClient, prefix string) int {
	t.Helper()
	var moved atomic.Int64
	var cursor uint64
	for {
		keys, next, err := old.Scan(ctx, cursor, prefix+"*", 500).Result()
		if err != nil {
			t.Fatal(err)
		}
		each(len(keys), func(i int) {
			if strings.HasSuffix(keys[i], "}:g") {
				return // a moved marker: nothing to move
			}
			m, err := st.MoveKey(ctx, keys[i])
			if err != nil {
				t.Errorf("MoveKey: %v", err)
			}
			moved.Add(int64(m))
		})
		if t.Failed() {
			t.FailNow()
		}
		if cursor = next; cursor == 0 {
			return int(moved.Load())
		}
	}
}

// each calls f(0) to f(n-1), 8 at a time.
func each(n int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// leftOnOld counts the keys under prefix on the old Redis after a move:
// the store's keys, and the moved markers (<prefix>{T}:g), each of which
// must expire within movedMarkerTTL (24h).
func leftOnOld(t *testing.T, ctx context.Context, c redis.UniversalClient, prefix string) (left, markers int) {
	t.Helper()
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if !strings.HasSuffix(k, "}:g") {
				left++
				continue
			}
			markers++
			if ttl, err := c.PTTL(ctx, k).Result(); err != nil || ttl <= 0 || ttl > 24*time.Hour {
				t.Errorf("moved marker %s: TTL %v, %v; want within 24h", k, ttl, err)
			}
		}
		if cursor = next; cursor == 0 {
			return left, markers
		}
	}
}

// deadlines returns the expiry of every session key under prefix
// (PEXPIRETIME, unix ms), on a single Redis or every master of a cluster.
func deadlines(t *testing.T, ctx context.Context, c redis.UniversalClient, prefix string) map[string]time.Duration {
	t.Helper()
	out := make(map[string]time.Duration)
	var mu sync.Mutex
	read := func(ctx context.Context, c redis.UniversalClient) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, prefix+"*:s:*", 1000).Result()
			if err != nil {
				return err
			}
			pipe := c.Pipeline()
			cmds := make([]*redis.Cmd, len(keys))
			for i, k := range keys {
				cmds[i] = pipe.Do(ctx, "pexpiretime", k)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
			mu.Lock()
			for i, k := range keys {
				at, _ := cmds[i].Int64()
				out[k] = time.Duration(at) * time.Millisecond
			}
			mu.Unlock()
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	var err error
	if cc, ok := c.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return read(ctx, m) })
	} else {
		err = read(ctx, c)
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}
