// Command loadgen drives sessioncache (the library on a Redis, or the HTTP
// service) with N workers for a duration or a number of operations, shows
// progress while it runs, and reports throughput and p50/p95/p99/p99.9
// latency per operation, as text or as JSON.
//
//	loadgen -target library -redis redis://127.0.0.1:6379/0 -workers 64 -duration 30s -mix realistic
//	loadgen -target http -http http://127.0.0.1:8080 -workers 64 -count 100000 -mix rotate -json
//	loadgen -mix rotate -rate 20000 -duration 30s   # latency at a fixed load
//	loadgen -target http -mix auth-validate -workers 64 -duration 10s   # forward auth (access tokens) beside introspection (refresh tokens)
//	loadgen -target bare -http http://127.0.0.1:8090 -mix bare -server-pid 1234   # the ceiling, with its CPU per request
//
// Each worker owns its sessions, so every outcome is predictable: an
// unexpected one (a grace replay that does not return the current token, a
// reuse that goes unnoticed) counts as an error. The baselines of bench/
// (-target naive or postgres) take the same workload, without replays.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/bench"
	"github.com/sessioncache/sessioncache/redisstore"
)

type config struct {
	target, redisURL, httpURL, apiKey, pgURL, mixName, prefix string
	redisStats                                                string
	workers, count, sessions, perUser, listLimit, serverPID   int
	duration, progress, grace                                 time.Duration
	rate                                                      float64
	json, dpop                                                bool
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.target, "target", "library", "what to drive: library, http, bare (the service's ceiling: bench/bare at -http, one SET per request), naive (WATCH/MULTI baseline) or postgres (SQL baseline)")
	fs.StringVar(&c.redisURL, "redis", "redis://127.0.0.1:6379/0", "Redis URL for -target library and naive")
	fs.StringVar(&c.httpURL, "http", "http://127.0.0.1:8080", "base URL of the service for -target http, or of bench/bare for -target bare")
	fs.StringVar(&c.apiKey, "api-key", os.Getenv("SESSIONCACHE_API_KEY"), "bearer key for -target http (default $SESSIONCACHE_API_KEY)")
	fs.StringVar(&c.pgURL, "postgres", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL URL for -target postgres")
	fs.StringVar(&c.mixName, "mix", "realistic", "workload: realistic, validate, rotate, replay, issue, list, revoke, get (raw GET: the ceiling), bare (-target bare), bare-auth (forward auth's ceiling, -target bare with bench/bare -headers), auth (forward auth, -target http), refresh (the token endpoint, -target http), auth-validate, or op=weight,... over "+fmt.Sprint(allOps))
	fs.StringVar(&c.prefix, "prefix", "", "Redis key prefix for -target library and naive, deleted at the end (default: loadgen:<random>:)")
	fs.IntVar(&c.workers, "workers", 64, "concurrent workers")
	fs.IntVar(&c.count, "count", 0, "stop after this many operations (0: run for -duration)")
	fs.IntVar(&c.sessions, "sessions", 10000, "live sessions, logged in before the clock starts and shared out among the workers")
	fs.IntVar(&c.perUser, "sessions-per-user", 2, "sessions of each user")
	fs.IntVar(&c.listLimit, "list-limit", 0, "sessions per page of the list operation, which reads every page (-target library and http; 0: the store's default)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long to run, if -count is 0")
	fs.DurationVar(&c.progress, "progress", time.Second, "progress line interval on stderr (0: none)")
	fs.DurationVar(&c.grace, "grace", redisstore.DefaultGrace, "the store's grace window: replays are sent well within it")
	fs.Float64Var(&c.rate, "rate", 0, "target operations per second over all workers (0: as fast as they go)")
	fs.BoolVar(&c.json, "json", false, "print the report as JSON on stdout instead of text")
	fs.BoolVar(&c.dpop, "dpop", false, "-target http: bind every session to a DPoP key (RFC 9449) and send proofs: a new one with each refresh at the token endpoint and each forward auth (for GET https://app.example.com/orders, as nginx passes it)")
	fs.StringVar(&c.redisStats, "redis-stats", "", "also report the calls of each command this Redis (URL) served during the timed part, from INFO commandstats: what a service in front of it sent")
	fs.IntVar(&c.serverPID, "server-pid", 0, "also report the CPU time (user+system, from /proc/<pid>/stat) this process uses during the timed part, per operation: the server's CPU per request (Linux)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.workers < 1 || c.sessions < c.workers || c.perUser < 1 {
		return c, errors.New("want -workers >= 1, -sessions >= -workers and -sessions-per-user >= 1")
	}
	if c.listLimit < 0 || c.listLimit > redisstore.MaxListLimit {
		return c, fmt.Errorf("want -list-limit from 0 (the default) to %d", redisstore.MaxListLimit)
	}
	if c.target == "library" && c.perUser > redisstore.DefaultMaxSessions {
		// A login at the cap would evict sessions that workers still hold.
		return c, fmt.Errorf("-sessions-per-user %d: the store caps a user at %d sessions", c.perUser, redisstore.DefaultMaxSessions)
	}
	if c.prefix == "" {
		var b [4]byte
		rand.Read(b[:])
		c.prefix = "loadgen:" + hex.EncodeToString(b[:]) + ":"
	}
	return c, nil
}

// target is what loadgen drives.
type target struct {
	st bench.Store
	// grants is st when it hands out access tokens (-target http).
	grants granter
	// get is one raw GET through the store's Redis client: the ceiling to
	// read the store's figures against (nil without a Redis client).
	get func(context.Context) error
	// auth is one forward-auth request to the service (nil but for -target
	// http).
	auth forwardAuth
	// bare is one request to bench/bare, the service's ceiling (nil but for
	// -target bare, which has no store).
	bare  func(context.Context) error
	close func()
}

// open returns the target of c.
func open(ctx context.Context, c config) (target, error) {
	switch c.target {
	case "library", "naive":
		opt, err := redis.ParseURL(c.redisURL)
		if err != nil {
			return target{}, err
		}
		opt.PoolSize = max(opt.PoolSize, 2*c.workers)
		rdb := redis.NewClient(opt)
		key := c.prefix + "get"
		if err := rdb.Set(ctx, key, "0123456789abcdef-user-0123456789", time.Hour).Err(); err != nil {
			rdb.Close()
			return target{}, err
		}
		t := target{get: func(ctx context.Context) error { return rdb.Get(ctx, key).Err() },
			close: func() { bench.DeletePrefix(rdb, c.prefix); rdb.Close() }}
		if c.target == "naive" {
			t.st = bench.NewNaive(rdb, c.prefix, time.Hour)
			return t, nil
		}
		secret := make([]byte, 32)
		rand.Read(secret)
		// Sessions idle out after an hour: what a run leaves behind goes away.
		s, err := redisstore.New(rdb, redisstore.Options{Secret: secret, KeyPrefix: c.prefix, Grace: c.grace,
			IdleTTL: time.Hour, AbsoluteTTL: 2 * time.Hour})
		if err == nil {
			err = s.Ping(ctx)
		}
		if err != nil {
			t.close()
			return target{}, err
		}
		t.st = bench.Library{S: s, ListLimit: c.listLimit}
		return t, nil
	case "http":
		h := bench.NewHTTP(c.httpURL, c.apiKey, 2*c.workers)
		h.ListLimit = c.listLimit
		if c.dpop {
			d, err := newDPoPClient()
			if err != nil {
				return target{}, err
			}
			h.DPoP = d
		}
		return target{st: h, grants: h, auth: newForwardAuth(c.httpURL, c.apiKey, 2*c.workers, h.DPoP), close: func() {}}, nil
	case "bare":
		if c.mixName == opBareAuth {
			return target{bare: newBareAuth(c.httpURL, c.apiKey, 2*c.workers), close: func() {}}, nil
		}
		return target{bare: newBare(c.httpURL, c.apiKey, 2*c.workers), close: func() {}}, nil
	case "postgres":
		cfg, err := pgxpool.ParseConfig(c.pgURL)
		if err != nil {
			return target{}, err
		}
		cfg.MaxConns = int32(c.workers)
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return target{}, err
		}
		pg, err := bench.NewPostgres(ctx, pool, time.Hour)
		if err != nil {
			pool.Close()
			return target{}, err
		}
		return target{st: pg, close: func() { pg.Drop(context.Background()); pool.Close() }}, nil
	}
	return target{}, fmt.Errorf("unknown -target %q (library, http, bare, naive, postgres)", c.target)
}

func run(args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	m, err := parseMix(c.mixName)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	t, err := open(ctx, c)
	if err != nil {
		return err
	}
	defer t.close()
	if m.has(opGet) && t.get == nil {
		return fmt.Errorf("-mix %s: the %s operation needs a Redis target (library or naive)", c.mixName, opGet)
	}
	if m.has(opAuth) && t.auth == nil {
		return fmt.Errorf("-mix %s: the %s operation needs the service (-target http)", c.mixName, opAuth)
	}
	if (m.has(opBare) || m.has(opBareAuth)) != (t.bare != nil) || t.bare != nil && len(m.ops) > 1 {
		return fmt.Errorf("-mix %s: the %s or %s operation, alone, is what -target bare runs", c.mixName, opBare, opBareAuth)
	}
	if m.has(opRefresh) && t.grants == nil {
		return fmt.Errorf("-mix %s: the %s operation needs the service (-target http)", c.mixName, opRefresh)
	}

	var done, failed atomic.Int64
	first := &firstErrors{seen: map[string]bool{}}
	ws, err := setup(ctx, c, t, &done, &failed, first)
	if err != nil {
		return err
	}
	done.Store(0)
	fmt.Fprintf(stderr, "loadgen: %d sessions ready; %s mix on %s with %d workers\n", c.sessions, c.mixName, c.target, c.workers)

	// runCtx ends the run; the operations in flight then finish under ctx.
	runCtx := ctx
	if c.count == 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, c.duration)
		defer cancel()
	}
	var stats *redis.Client
	var calls0 map[string]int64
	if c.redisStats != "" {
		opt, err := redis.ParseURL(c.redisStats)
		if err != nil {
			return fmt.Errorf("-redis-stats: %w", err)
		}
		stats = redis.NewClient(opt)
		defer stats.Close()
		if calls0, err = commandCalls(ctx, stats); err != nil {
			return fmt.Errorf("-redis-stats: %w", err)
		}
	}
	var cpu0 time.Duration
	if c.serverPID != 0 {
		if cpu0, err = cpuTime(c.serverPID); err != nil {
			return fmt.Errorf("-server-pid: %w", err)
		}
	}
	start := time.Now()
	stopProgress := progress(stderr, c.progress, start, &done, &failed)
	var claimed atomic.Int64
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			drive(runCtx, ctx, c, m, w, i, start, &claimed)
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	var cpu time.Duration
	if c.serverPID != 0 {
		cpu1, err := cpuTime(c.serverPID)
		if err != nil {
			return fmt.Errorf("-server-pid: %w", err)
		}
		cpu = cpu1 - cpu0
	}
	var calls1 map[string]int64
	if stats != nil {
		if calls1, err = commandCalls(ctx, stats); err != nil {
			return fmt.Errorf("-redis-stats: %w", err)
		}
	}
	stopProgress()

	recs := make([]*recorder, len(ws))
	for i, w := range ws {
		recs[i] = w.rec
	}
	rep := buildReport(Report{Target: c.target, Mix: c.mixName, Workers: c.workers, Rate: c.rate,
		Sessions: c.sessions, Seconds: secs, StartedAt: start}, recs, first)
	if c.serverPID != 0 {
		rep.Server = &ServerCPU{PID: c.serverPID, Seconds: cpu.Seconds()}
		if rep.Total.Count > 0 {
			rep.Server.PerOp = float64(cpu.Microseconds()) / float64(rep.Total.Count)
		}
	}
	if stats != nil {
		rep.RedisCommands = map[string]int64{}
		for cmd, n := range calls1 {
			// The two INFO calls are loadgen's own.
			if d := n - calls0[cmd]; d > 0 && !(cmd == "info" && d <= 1) {
				rep.RedisCommands[cmd] = d
			}
		}
	}
	if c.json {
		return rep.writeJSON(stdout)
	}
	rep.writeText(stdout)
	return nil
}

// commandCalls reads the calls of every command from INFO commandstats.
func commandCalls(ctx context.Context, rdb *redis.Client) (map[string]int64, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, l := range strings.Split(info, "\r\n") {
		rest, ok := strings.CutPrefix(l, "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.SplitN(fields, ",", 2)[0], 10, 64)
		out[name] = n
	}
	return out, nil
}

// setup logs in every session, shared out among the workers.
func setup(ctx context.Context, c config, t target, done, failed *atomic.Int64, first *firstErrors) ([]*worker, error) {
	ws := make([]*worker, c.workers)
	for i := range ws {
		n := c.sessions / c.workers
		if i < c.sessions%c.workers {
			n++
		}
		w := &worker{st: t.st, grants: t.grants, get: t.get, auth: t.auth, bare: t.bare, byUser: map[string][]int{}, grace: c.grace,
			rnd: mrand.New(mrand.NewPCG(uint64(i), uint64(time.Now().UnixNano()))),
			rec: &recorder{hists: map[string]*bench.Histogram{}, svc: map[string]*bench.Histogram{}, errs: map[string]int64{}, done: done, failed: failed, first: first}}
		var user string
		for j := range n {
			// The service takes UUIDs as user ids.
			if j%c.perUser == 0 {
				user = uuid.NewString()
			}
			w.slots = append(w.slots, slot{user: user})
			w.byUser[user] = append(w.byUser[user], j)
		}
		ws[i] = w
	}
	if t.st == nil {
		return ws, nil // -target bare: no sessions
	}
	errc := make(chan error, len(ws))
	for _, w := range ws {
		go func() {
			for j := range w.slots {
				if err := w.issue(ctx, &w.slots[j]); err != nil {
					errc <- fmt.Errorf("logging in the sessions: %w", err)
					return
				}
			}
			errc <- nil
		}()
	}
	var firstErr error
	for range ws {
		if err := <-errc; firstErr == nil {
			firstErr = err
		}
	}
	return ws, firstErr
}

// drive runs one worker until runCtx ends or the count is reached; the
// operations run under ctx. With a target rate, each worker runs on a
// schedule of its own, and an operation that starts late because the one
// before it was slow counts its latency from when it was due (no
// coordinated omission).
func drive(runCtx, ctx context.Context, c config, m mix, w *worker, i int, start time.Time, claimed *atomic.Int64) {
	var interval time.Duration
	if c.rate > 0 {
		interval = time.Duration(float64(c.workers) / c.rate * float64(time.Second))
	}
	// Stagger the workers' schedules over one interval.
	due := start.Add(interval * time.Duration(i) / time.Duration(c.workers))
	for runCtx.Err() == nil {
		if c.count > 0 && claimed.Add(1) > int64(c.count) {
			return
		}
		opStart := time.Now()
		if interval > 0 {
			if wait := time.Until(due); wait > 0 {
				// On time: the latency counts from the send, so that a
				// timer that wakes late is not blamed on the store.
				select {
				case <-runCtx.Done():
					return
				case <-time.After(wait):
				}
				opStart = time.Now()
			} else {
				// Behind (the previous call was slow): count from when this
				// one was due, as a client on its own schedule would see it.
				opStart = due
			}
			due = due.Add(interval)
		}
		w.run(ctx, m.pick(w.rnd), opStart)
	}
}

// progress prints a line every interval until the returned function is
// called.
func progress(w io.Writer, every time.Duration, start time.Time, done, failed *atomic.Int64) func() {
	if every <= 0 {
		return func() {}
	}
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		var last int64
		lastT := start
		for {
			select {
			case <-quit:
				return
			case now := <-t.C:
				n := done.Load()
				fmt.Fprintf(w, "loadgen: %6.1fs  %10d ops  %9.0f ops/s  %d errors\n",
					now.Sub(start).Seconds(), n, float64(n-last)/now.Sub(lastT).Seconds(), failed.Load())
				last, lastT = n, now
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}
