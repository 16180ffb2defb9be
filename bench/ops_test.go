package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/redisstore"
)

// sessionsPerUser is how many sessions each user of list and revoke-user has.
const sessionsPerUser = 3

// A worker is one caller's loop body; it returns an error for any outcome
// but the expected one.
type worker func(ctx context.Context) error

// measure runs b.N calls spread over the given number of concurrent callers
// (b.RunParallel goroutines) and reports, besides ns/op and allocs/op:
// ops/s, the p50 and p99 latency of one call, and, for a real Redis, the
// Redis main-thread CPU per call (srv-us/op) and the usec_per_call of cmd in
// INFO commandstats (cmd-us/call); for the naive store, its retried
// transactions per call (retries/op). workers is called before the timer
// starts, with the number of callers, and returns one worker per caller.
func measure(b *testing.B, clients int, srv *server, cmd string, st any, workers func(callers int) []worker) {
	procs := runtime.GOMAXPROCS(0)
	par := (clients + procs - 1) / procs
	callers := par * procs
	ws := workers(callers)
	hists := make([]Histogram, callers)
	ctx := context.Background()
	var before serverStats
	stats := srv != nil && srv.real
	if stats {
		var err error
		if before, err = readStats(ctx, srv.rdb); err != nil {
			b.Fatalf("INFO: %v", err)
		}
	}
	nv, _ := st.(*Naive)
	var retries0 int64
	if nv != nil {
		retries0 = nv.Retries()
	}
	lib, _ := st.(Library)
	var batch0 redisstore.BatchStats
	if lib.S != nil {
		batch0 = lib.S.BatchStats()
	}
	var next atomic.Int32
	var failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	b.ReportAllocs()
	b.SetParallelism(par)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(1) - 1
		w, h := ws[i], &hists[i]
		for pb.Next() {
			t0 := time.Now()
			err := w(ctx)
			h.Record(time.Since(t0))
			if err != nil {
				failed.Add(1)
				errOnce.Do(func() { firstErr = err })
			}
		}
	})
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d calls failed; first: %v", n, b.N, firstErr)
	}
	var all Histogram
	for i := range hists {
		all.Merge(&hists[i])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(all.Quantile(0.50))/1e3, "p50-us")
	b.ReportMetric(float64(all.Quantile(0.99))/1e3, "p99-us")
	if nv != nil {
		b.ReportMetric(float64(nv.Retries()-retries0)/float64(b.N), "retries/op")
	}
	if lib.S != nil {
		if st := lib.S.BatchStats(); st.Requests > batch0.Requests {
			b.ReportMetric(float64(st.Calls-batch0.Calls)/float64(st.Requests-batch0.Requests), "calls/req")
		}
	}
	if stats {
		after, err := readStats(ctx, srv.rdb)
		if err != nil {
			b.Fatalf("INFO: %v", err)
		}
		b.ReportMetric((after.cpu-before.cpu)*1e6/float64(b.N), "srv-us/op")
		if calls := after.cmds[cmd][0] - before.cmds[cmd][0]; cmd != "" && calls > 0 {
			b.ReportMetric(float64(after.cmds[cmd][1]-before.cmds[cmd][1])/float64(calls), "cmd-us/call")
		}
	}
}

// each makes n workers from one function of the caller's index.
func each(n int, f func(i int) worker) []worker {
	ws := make([]worker, n)
	for i := range ws {
		ws[i] = f(i)
	}
	return ws
}

// issueAll logs in perUser sessions for each user, before the timer
// starts, and returns their tokens.
func issueAll(b *testing.B, st Store, users []string, perUser int) [][]string {
	b.Helper()
	toks := make([][]string, len(users))
	for i := range toks {
		toks[i] = make([]string, perUser)
	}
	err := Parallel(len(users)*perUser, func(i int) error {
		t, err := st.Issue(context.Background(), users[i/perUser], Login)
		toks[i/perUser][i%perUser] = t
		return err
	})
	if err != nil {
		b.Fatalf("issue: %v", err)
	}
	return toks
}

// userIDs returns n user ids, unique to this call.
func userIDs(n int) []string {
	var r [4]byte
	rand.Read(r[:])
	base := fmt.Sprintf("user-%x-", r)
	out := make([]string, n)
	for i := range out {
		out[i] = base + strconv.Itoa(i)
	}
	return out
}

// The operations measured on every store.

func benchIssue(b *testing.B, st Store, clients int, srv *server) {
	measure(b, clients, srv, "evalsha", st, func(n int) []worker {
		base := userIDs(1)[0]
		return each(n, func(i int) worker {
			var k int
			prefix := base + strconv.Itoa(i) + "-"
			return func(ctx context.Context) error {
				k++
				_, err := st.Issue(ctx, prefix+strconv.Itoa(k), Login)
				return err
			}
		})
	})
}

func benchValidate(b *testing.B, st Store, clients int, srv *server) {
	measure(b, clients, srv, "hmget", st, func(n int) []worker {
		toks := issueAll(b, st, userIDs(n), 1)
		return each(n, func(i int) worker {
			tok := toks[i][0]
			return func(ctx context.Context) error { return st.Validate(ctx, tok) }
		})
	})
}

// benchRotate rotates one session per caller; with oneUser, all of them
// belong to one user.
func benchRotate(b *testing.B, st Store, clients int, srv *server, oneUser bool) {
	measure(b, clients, srv, "evalsha", st, func(n int) []worker {
		users := userIDs(n)
		if oneUser {
			users = users[:1]
		}
		toks := issueAll(b, st, users, n/len(users))
		return each(n, func(i int) worker {
			tok := toks[i/(n/len(users))][i%(n/len(users))]
			return func(ctx context.Context) error {
				next, _, err := st.Rotate(ctx, tok, Refresh)
				tok = next
				return err
			}
		})
	})
}

func benchList(b *testing.B, st Store, clients int, srv *server) {
	measure(b, clients, srv, "zrangebyscore", st, func(n int) []worker {
		users := userIDs(n)
		issueAll(b, st, users, sessionsPerUser)
		return each(n, func(i int) worker {
			return func(ctx context.Context) error {
				got, err := st.ListSessions(ctx, users[i])
				if err == nil && got != sessionsPerUser {
					err = fmt.Errorf("listed %d sessions, want %d", got, sessionsPerUser)
				}
				return err
			}
		})
	})
}

func benchRevokeSession(b *testing.B, st Store, clients int, srv *server) {
	measure(b, clients, srv, "evalsha", st, func(n int) []worker {
		toks := issueAll(b, st, userIDs(b.N), 1)
		var next atomic.Int64
		return each(n, func(int) worker {
			return func(ctx context.Context) error {
				return st.RevokeSession(ctx, toks[next.Add(1)-1][0])
			}
		})
	})
}

func benchRevokeAll(b *testing.B, st Store, clients int, srv *server) {
	measure(b, clients, srv, "evalsha", st, func(n int) []worker {
		users := userIDs(b.N)
		issueAll(b, st, users, sessionsPerUser)
		var next atomic.Int64
		return each(n, func(int) worker {
			return func(ctx context.Context) error {
				got, err := st.RevokeAll(ctx, users[next.Add(1)-1])
				if err == nil && got != sessionsPerUser {
					err = fmt.Errorf("revoked %d sessions, want %d", got, sessionsPerUser)
				}
				return err
			}
		})
	})
}

// benchStore runs every operation of Store. hot adds rotate-oneuser: the
// sessions of one user rotating at once, where optimistic transactions on
// the user's index conflict.
func benchStore(b *testing.B, st Store, srv *server, hot bool) {
	for _, clients := range []int{1, 64} {
		b.Run(fmt.Sprintf("op=validate/clients=%d", clients), func(b *testing.B) { benchValidate(b, st, clients, srv) })
		b.Run(fmt.Sprintf("op=rotate/clients=%d", clients), func(b *testing.B) { benchRotate(b, st, clients, srv, false) })
	}
	b.Run("op=issue/clients=64", func(b *testing.B) { benchIssue(b, st, 64, srv) })
	if hot {
		b.Run("op=rotate-oneuser/clients=64", func(b *testing.B) { benchRotate(b, st, 64, srv, true) })
	}
	b.Run("op=list/clients=64", func(b *testing.B) { benchList(b, st, 64, srv) })
	b.Run("op=revoke-session/clients=64", func(b *testing.B) { benchRevokeSession(b, st, 64, srv) })
	b.Run("op=revoke-user/clients=64", func(b *testing.B) { benchRevokeAll(b, st, 64, srv) })
}

// benchSecret signs the tokens of every benchmark store.
var benchSecret = []byte("sessioncache-benchmark-secret-0123456789")

func newLibrary(b *testing.B, rdb *redis.Client, opt redisstore.Options) *redisstore.Store {
	b.Helper()
	opt.Secret = benchSecret
	opt.KeyPrefix = newPrefix(b, rdb)
	if opt.Grace == 0 {
		opt.Grace = time.Minute
	}
	s, err := redisstore.New(rdb, opt)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Ping(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s
}

// benchRotateGrace presents, on each call, the predecessor of a session's
// current token within the grace window: the library answers with the
// current token again (a second browser tab) and writes nothing.
func benchRotateGrace(b *testing.B, rdb *redis.Client, srv *server) {
	s := newLibrary(b, rdb, redisstore.Options{})
	st := Library{S: s}
	measure(b, 64, srv, "evalsha", st, func(n int) []worker {
		toks := issueAll(b, st, userIDs(n), 1)
		return each(n, func(i int) worker {
			prev := toks[i][0]
			cur, _, err := st.Rotate(context.Background(), prev, Refresh)
			if err != nil {
				b.Fatal(err)
			}
			return func(ctx context.Context) error {
				g, err := s.Rotate(ctx, prev, Refresh)
				if err == nil && (!g.Replayed || g.Token != cur) {
					err = errors.New("grace replay did not return the current token")
				}
				return err
			}
		})
	})
}

// benchRotateExtend makes (nearly) every rotation the expensive kind: one
// that moves the session's keep-until and so also refreshes the user's index
// (ZADD, PEXPIREAT). Redis's clock decides, so the sessions get an idle
// lifetime of 16 ms: the keep margin (IdleTTL/16) is then 1 ms, shorter than
// the time between two rotations of one session at 64 callers.
func benchRotateExtend(b *testing.B, rdb *redis.Client, srv *server) {
	measure(b, 64, srv, "evalsha", nil, func(n int) []worker {
		users := userIDs(n)
		prefix := newPrefix(b, rdb)
		return each(n, func(i int) worker {
			s, err := redisstore.New(rdb, redisstore.Options{Secret: benchSecret, KeyPrefix: prefix,
				IdleTTL: 16 * time.Millisecond, AbsoluteTTL: 50 * 365 * 24 * time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			g, err := s.Issue(context.Background(), users[i], Login)
			if err != nil {
				b.Fatal(err)
			}
			tok := g.Token
			return func(ctx context.Context) error {
				g, err := s.Rotate(ctx, tok, Refresh)
				if errors.Is(err, redisstore.ErrExpired) {
					// This caller stalled past the idle lifetime: log in again.
					g, err = s.Issue(ctx, users[i], Login)
				}
				tok = g.Token
				return err
			}
		})
	})
}

// value is what the raw GET reads and SET writes: about the size of what a
// validation reads (a 16-byte hash and a user id).
var value = []byte("0123456789abcdef-user-0123456789")

func benchRaw(b *testing.B, rdb *redis.Client, srv *server) {
	for _, clients := range []int{1, 64} {
		b.Run(fmt.Sprintf("op=get/clients=%d", clients), func(b *testing.B) {
			prefix := newPrefix(b, rdb)
			measure(b, clients, srv, "get", nil, func(n int) []worker {
				return each(n, func(i int) worker {
					key := prefix + "raw:" + strconv.Itoa(i)
					if err := rdb.Set(context.Background(), key, value, time.Hour).Err(); err != nil {
						b.Fatal(err)
					}
					return func(ctx context.Context) error { return rdb.Get(ctx, key).Err() }
				})
			})
		})
		b.Run(fmt.Sprintf("op=set/clients=%d", clients), func(b *testing.B) {
			prefix := newPrefix(b, rdb)
			measure(b, clients, srv, "set", nil, func(n int) []worker {
				return each(n, func(i int) worker {
					key := prefix + "raw:" + strconv.Itoa(i)
					return func(ctx context.Context) error { return rdb.Set(ctx, key, value, time.Hour).Err() }
				})
			})
		})
	}
}

// BenchmarkRedis measures, on each Redis: the ceilings (raw GET and SET
// through the same client and pool), the library, and the naive WATCH/MULTI
// store.
func BenchmarkRedis(b *testing.B) {
	for _, srv := range redisServers(b) {
		b.Run("server="+srv.name, func(b *testing.B) {
			b.Run("impl=raw", func(b *testing.B) { benchRaw(b, srv.rdb, srv) })
			b.Run("impl=library", func(b *testing.B) {
				benchStore(b, Library{S: newLibrary(b, srv.rdb, redisstore.Options{})}, srv, true)
				b.Run("op=rotate-grace/clients=64", func(b *testing.B) { benchRotateGrace(b, srv.rdb, srv) })
				b.Run("op=rotate-extend/clients=64", func(b *testing.B) { benchRotateExtend(b, srv.rdb, srv) })
			})
			// The library without batching (Options.MaxInFlight NoBatching),
			// as before issue 12: one request per call.
			b.Run("impl=library-unbatched", func(b *testing.B) {
				st := Library{S: newLibrary(b, srv.rdb, redisstore.Options{MaxInFlight: redisstore.NoBatching})}
				for _, clients := range []int{1, 64} {
					b.Run(fmt.Sprintf("op=validate/clients=%d", clients), func(b *testing.B) { benchValidate(b, st, clients, srv) })
					b.Run(fmt.Sprintf("op=rotate/clients=%d", clients), func(b *testing.B) { benchRotate(b, st, clients, srv, false) })
				}
				b.Run("op=issue/clients=64", func(b *testing.B) { benchIssue(b, st, 64, srv) })
			})
			b.Run("impl=naive", func(b *testing.B) {
				benchStore(b, NewNaive(srv.rdb, newPrefix(b, srv.rdb), redisstore.DefaultIdleTTL), srv, true)
			})
		})
	}
}

// BenchmarkPostgres measures the SQL design the library replaces, with
// synchronous_commit on (each commit waits for the disk) and off (as Redis
// with appendfsync everysec, a crash may lose the last moments).
func BenchmarkPostgres(b *testing.B) {
	for _, sync := range []bool{true, false} {
		name := "server=postgres"
		if !sync {
			name = "server=postgres-async"
		}
		b.Run(name, func(b *testing.B) {
			pool := postgresPool(b, 64, sync)
			pg, err := NewPostgres(context.Background(), pool, redisstore.DefaultIdleTTL)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { pg.Drop(context.Background()) })
			b.Run("impl=sql", func(b *testing.B) { benchStore(b, pg, nil, false) })
		})
	}
}
