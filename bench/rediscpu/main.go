// Command rediscpu measures what sessioncache costs Redis: Redis main-thread
// CPU per call (INFO cpu, used_cpu_sys_main_thread + used_cpu_user_main_thread,
// networking included) of rotations and validations, with and without
// batching (Options.MaxInFlight), next to the ceilings measured in the same
// run on the same server through the same go-redis client: an unpipelined
// SET and GET of a 32-byte value, over as many distinct keys as there are
// sessions and over a few hot keys. Redis CPU per call does not depend on
// how fast the client is, so the ratios hold on a small shared machine.
//
// It starts its own redis-server on a free port, pinned to one core
// (taskset -c 0), and runs itself pinned to another (-client-core), so
// that neither steals the other's core. Every cell runs in each of -rounds
// interleaved rounds; the table gives medians and ranges, and ratios
// computed within each round.
//
//	go run ./bench/rediscpu -issue                # one pinned Redis: 64 callers, and 1, 2 and 4 callers' latency
//	go run ./bench/rediscpu -no-main -rounds 8    # the latency cells alone
//	go run ./bench/rediscpu -cluster 1,3 -no-latency -cluster-callers 192
//	                                              # and clusters of 1 and 3 masters (64 callers per master)
//	go run ./bench/rediscpu -cluster 1,2,3,4 -per-master -only rotate-off -no-latency
//	                                              # Redis CPU per rotation on 1 to 4 masters, 64 callers per master
//	go run ./bench/rediscpu -cluster 3 -redis-core 0,1,2 -client-core 3-15 -cluster-callers 192 -no-latency
//	                                              # on a bigger machine: a core per master
//	go run ./bench/rediscpu -addr 10.0.0.5:6379   # a Redis of your own (no pinning)
//	go run ./bench/rediscpu -cluster-addrs a:7000,b:7001,c:7002
//
// Keys are written under a prefix of their own and deleted at the end (a
// server it started is simply stopped). Linux only for pinning.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/bench"
	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

type config struct {
	addr, clusterAddrs string
	clusters           []int
	clusterCallers     int
	perMaster          bool
	sessions, callers  int
	hot                int
	latCallers         []int
	inflight           []string
	rounds             int
	dur, warm          time.Duration
	redisCore, cliCore string
	only               string
	skipLatency, noPin bool
	skipMain           bool
	poolSize           int
	issue              bool
	clusterOnly        bool
}

func main() {
	var c config
	var lat, infl string
	flag.StringVar(&c.addr, "addr", "", "measure this Redis (host:port) instead of starting one; no pinning")
	flag.StringVar(&c.clusterAddrs, "cluster-addrs", "", "measure this Redis Cluster (seed addresses, comma-separated) instead of starting one")
	var clusters string
	flag.StringVar(&clusters, "cluster", "", "also measure clusters of these numbers of masters (comma-separated, e.g. 1,3) started here, every master pinned to -redis-core")
	flag.BoolVar(&c.clusterOnly, "cluster-only", false, "measure the cluster only (with -cluster or -cluster-addrs)")
	flag.IntVar(&c.sessions, "sessions", 20000, "sessions (and distinct keys of the SET and GET ceilings)")
	flag.IntVar(&c.callers, "callers", 64, "concurrent callers of the main cells")
	flag.IntVar(&c.clusterCallers, "cluster-callers", 0, "concurrent callers of the clusters' main cells (default: -callers)")
	flag.BoolVar(&c.perMaster, "per-master", false, "give a cluster -callers callers per master (64 per master: as loaded as the single Redis); overrides -cluster-callers")
	flag.IntVar(&c.hot, "hot", 8, "keys of the hot-key ceilings")
	flag.StringVar(&lat, "latency-callers", "1,2,4", "callers of the latency cells")
	flag.StringVar(&infl, "inflight", "4", "MaxInFlight values measured with batching on (comma-separated)")
	flag.IntVar(&c.rounds, "rounds", 3, "interleaved rounds")
	flag.DurationVar(&c.dur, "duration", 2*time.Second, "measured time of each cell")
	flag.DurationVar(&c.warm, "warmup", 300*time.Millisecond, "unmeasured time before each cell")
	flag.StringVar(&c.redisCore, "redis-core", "0", "core (taskset list) of the Redis this command starts; a cluster's masters share it, unless it lists one core per master (0,1,2)")
	flag.StringVar(&c.cliCore, "client-core", "1", "core (taskset list) of this command")
	flag.StringVar(&c.only, "only", "", "run only the cells whose name contains this")
	flag.BoolVar(&c.skipLatency, "no-latency", false, "skip the latency cells")
	flag.BoolVar(&c.skipMain, "no-main", false, "skip the cells of -callers callers (latency cells only)")
	flag.BoolVar(&c.noPin, "no-pin", false, "pin nothing")
	flag.BoolVar(&c.issue, "issue", false, "also measure Issue (logins)")
	flag.IntVar(&c.poolSize, "pool", 128, "go-redis PoolSize")
	flag.Parse()
	for _, s := range strings.Split(lat, ",") {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			c.latCallers = append(c.latCallers, n)
		}
	}
	for _, s := range strings.Split(clusters, ",") {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			c.clusters = append(c.clusters, n)
		}
	}
	for _, s := range strings.Split(infl, ",") {
		if s != "" {
			c.inflight = append(c.inflight, s)
		}
	}
	if c.addr != "" || c.clusterAddrs != "" {
		c.noPin = true
	}
	if c.clusterCallers <= 0 {
		c.clusterCallers = c.callers
	}
	if !c.noPin {
		bench.PinSelf(c.cliCore)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "rediscpu:", err)
		os.Exit(1)
	}
}

// target is a Redis (or cluster) under measurement: a client and the
// masters whose CPU is summed.
type target struct {
	name    string
	rdb     redis.UniversalClient
	masters []*redis.Client
	stop    func()
}

func run(c config) error {
	ctx := context.Background()
	fmt.Printf("# rediscpu: GOMAXPROCS %d, %d sessions, %d callers, %d rounds of %v per cell\n",
		runtime.GOMAXPROCS(0), c.sessions, c.callers, c.rounds, c.dur)
	if !c.noPin {
		fmt.Printf("# Redis pinned to core %s, this command to core %s\n", c.redisCore, c.cliCore)
	}
	var targets []*target
	if !c.clusterOnly {
		t, err := single(ctx, c)
		if err != nil {
			return err
		}
		defer t.stop()
		targets = append(targets, t)
	}
	sizes := c.clusters
	if c.clusterAddrs != "" {
		sizes = []int{0}
	}
	for _, n := range sizes {
		t, err := cluster(ctx, c, n)
		if err != nil {
			return err
		}
		defer t.stop()
		targets = append(targets, t)
	}
	if len(targets) == 0 {
		return errors.New("nothing to measure")
	}
	var all []*cellSet
	for _, t := range targets {
		cs, err := prepare(ctx, c, t)
		if err != nil {
			return err
		}
		defer cs.cleanup()
		all = append(all, cs)
	}
	res := map[string][]result{}
	var order []string
	for r := 0; r < c.rounds; r++ {
		for _, cs := range all {
			for _, cl := range cs.cells {
				if c.only != "" && !strings.Contains(cl.name, c.only) {
					continue
				}
				x, err := measure(ctx, c, cs.t, cl)
				if err != nil {
					return fmt.Errorf("%s: %w", cl.name, err)
				}
				if r == 0 {
					order = append(order, cl.name)
				}
				res[cl.name] = append(res[cl.name], x)
				fmt.Printf("round %d %-44s %9.0f ops/s  redis %6.2f us/op  client %6.2f us/op  p50 %7.1f us  p99 %8.1f us  %5.1f calls/req\n",
					r+1, cl.name, x.opsPerSec, x.redisUS, x.clientUS, x.p50, x.p99, x.perReq)
			}
		}
	}
	report(c, order, res)
	return nil
}

func single(ctx context.Context, c config) (*target, error) {
	if c.addr != "" {
		rdb := redis.NewClient(&redis.Options{Addr: c.addr, PoolSize: c.poolSize})
		return &target{name: "redis", rdb: rdb, masters: []*redis.Client{rdb}, stop: func() { rdb.Close() }}, nil
	}
	srv, err := redistest.Launch("--maxmemory-policy", "noeviction")
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: c.poolSize})
	stop := func() { rdb.Close(); srv.Stop() }
	if !c.noPin {
		core, _, _ := strings.Cut(c.redisCore, ",")
		if err := bench.PinServer(ctx, rdb, core); err != nil {
			stop()
			return nil, err
		}
	}
	return &target{name: "redis", rdb: rdb, masters: []*redis.Client{rdb}, stop: stop}, nil
}

// cluster starts a cluster of n masters, each with an equal share of the
// slots (or connects to -cluster-addrs: n 0).
func cluster(ctx context.Context, c config, n int) (*target, error) {
	var addrs []string
	var servers []*redistest.Server
	stopServers := func() {
		for _, s := range servers {
			s.Stop()
		}
	}
	if c.clusterAddrs != "" {
		addrs = strings.Split(c.clusterAddrs, ",")
	} else {
		for i := range n {
			s, err := redistest.Launch("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--maxmemory-policy", "noeviction")
			if err != nil {
				stopServers()
				return nil, err
			}
			servers = append(servers, s)
			addrs = append(addrs, s.Addr)
			nc := redis.NewClient(&redis.Options{Addr: s.Addr})
			err = nc.Do(ctx, "cluster", "addslotsrange", i*16384/n, (i+1)*16384/n-1).Err()
			if err == nil && i > 0 {
				err = nc.ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(servers[0].Port)).Err()
			}
			nc.Close()
			if err != nil {
				stopServers()
				return nil, fmt.Errorf("cluster set-up: %w", err)
			}
		}
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, PoolSize: c.poolSize})
	stop := func() { rdb.Close(); stopServers() }
	deadline := time.Now().Add(30 * time.Second)
	for {
		var masters []*redis.Client
		var mu sync.Mutex
		rdb.ReloadState(ctx)
		err := rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			st, err := bench.InfoField(ctx, m, "cluster", "cluster_enabled")
			if err != nil || st != "1" {
				return fmt.Errorf("not a cluster node")
			}
			ci, err := m.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(ci, "cluster_state:ok") {
				return fmt.Errorf("cluster not ok")
			}
			mu.Lock()
			masters = append(masters, m)
			mu.Unlock()
			return nil
		})
		if err == nil && (len(masters) == n || c.clusterAddrs != "") {
			// Clients of their own for the masters' INFO: the cluster
			// client closes its node clients when it reloads its state.
			for i, m := range masters {
				masters[i] = redis.NewClient(&redis.Options{Addr: m.Options().Addr})
			}
			own := masters
			stop = func() {
				for _, m := range own {
					m.Close()
				}
				rdb.Close()
				stopServers()
			}
			if !c.noPin {
				// -redis-core 0,1,2 gives each master a core of its own;
				// any other list is shared by all of them.
				cores := strings.Split(c.redisCore, ",")
				for i, m := range masters {
					core := c.redisCore
					if len(cores) == len(masters) {
						core = cores[i]
					}
					if err := bench.PinServer(ctx, m, core); err != nil {
						stop()
						return nil, err
					}
				}
			}
			return &target{name: fmt.Sprintf("cluster%d", len(masters)), rdb: rdb, masters: masters, stop: stop}, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("cluster not ready: %v (%d masters)", err, len(masters))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A cell is one measured workload: mk returns the loop body of one caller.
type cell struct {
	name    string
	callers int
	store   *redisstore.Store // for its batch counts
	mk      func(w, callers int) func(ctx context.Context) error
}

type cellSet struct {
	t       *target
	cells   []cell
	cleanup func()
}

var value = strings.Repeat("v", 32)

// prepare writes the keys and sessions of every cell of t.
func prepare(ctx context.Context, c config, t *target) (*cellSet, error) {
	var rb [4]byte
	rand.Read(rb[:])
	prefix := "rediscpu:" + hex.EncodeToString(rb[:]) + ":"
	cs := &cellSet{t: t}
	cs.cleanup = func() {
		for _, m := range t.masters {
			bench.DeletePrefix(m, prefix)
		}
	}

	secret := []byte("rediscpu-secret-0123456789abcdef-0123456789")
	newStore := func(inflight int) (*redisstore.Store, error) {
		return redisstore.New(t.rdb, redisstore.Options{Secret: secret, KeyPrefix: prefix + "s:", MaxInFlight: inflight})
	}
	off, err := newStore(redisstore.NoBatching)
	if err != nil {
		return nil, err
	}
	if err := off.Ping(ctx); err != nil {
		return nil, err
	}
	// Distinct keys of the ceilings, one per session.
	keys := make([]string, c.sessions)
	for i := range keys {
		keys[i] = prefix + "k:{" + strconv.Itoa(i) + "}"
	}
	hot := make([]string, c.hot)
	for i := range hot {
		hot[i] = prefix + "hot:{" + strconv.Itoa(i) + "}"
	}
	if err := bench.Parallel(c.sessions, func(i int) error { return t.rdb.Set(ctx, keys[i], value, time.Hour).Err() }); err != nil {
		return nil, err
	}
	for _, k := range hot {
		t.rdb.Set(ctx, k, value, time.Hour)
	}
	// One session per user: the worst case for the index.
	toks := make([]string, c.sessions)
	userBase := "user-" + hex.EncodeToString(rb[:]) + "-"
	if err := bench.Parallel(c.sessions, func(i int) error {
		g, err := off.Issue(ctx, userBase+strconv.Itoa(i), bench.Login)
		toks[i] = g.Token
		return err
	}); err != nil {
		return nil, err
	}
	// Caller w of n uses the w-th n-th of the keys and sessions (callers
	// of the latency cells use the first ones' shares).
	share := func(w, n int) (lo, hi int) {
		per := c.sessions / max(n, c.callersOf(t.name))
		return w * per, (w + 1) * per
	}
	rawCell := func(name string, n int, op func(ctx context.Context, k string) error, ks func(w, n int) []string) cell {
		return cell{name: name, callers: n, mk: func(w, n int) func(ctx context.Context) error {
			mine := ks(w, n)
			i := 0
			return func(ctx context.Context) error {
				k := mine[i%len(mine)]
				i++
				return op(ctx, k)
			}
		}}
	}
	distinct := func(w, n int) []string { lo, hi := share(w, n); return keys[lo:hi] }
	hotKeys := func(w, n int) []string { return hot }
	set := func(ctx context.Context, k string) error { return t.rdb.Set(ctx, k, value, time.Hour).Err() }
	get := func(ctx context.Context, k string) error { return t.rdb.Get(ctx, k).Err() }
	sessionCell := func(name string, n int, st *redisstore.Store, op func(ctx context.Context, st *redisstore.Store, tok *string) error) cell {
		return cell{name: name, callers: n, store: st, mk: func(w, n int) func(ctx context.Context) error {
			lo, hi := share(w, n)
			mine := toks[lo:hi]
			i := 0
			return func(ctx context.Context) error {
				tok := &mine[i%len(mine)]
				i++
				return op(ctx, st, tok)
			}
		}}
	}
	rotate := func(ctx context.Context, st *redisstore.Store, tok *string) error {
		g, err := st.Rotate(ctx, *tok, bench.Refresh)
		if err == nil {
			*tok = g.Token
		}
		return err
	}
	validate := func(ctx context.Context, st *redisstore.Store, tok *string) error {
		_, err := st.Validate(ctx, *tok)
		return err
	}
	var issued atomic.Int64
	issue := func(ctx context.Context, st *redisstore.Store, _ *string) error {
		_, err := st.Issue(ctx, userBase+"login-"+strconv.FormatInt(issued.Add(1), 10), bench.Login)
		return err
	}
	stores := []struct {
		name string
		st   *redisstore.Store
	}{{"off", off}}
	for _, n := range c.inflight {
		k, err := strconv.Atoi(n)
		if err != nil {
			return nil, fmt.Errorf("-inflight %q", n)
		}
		st, err := newStore(k)
		if err != nil {
			return nil, err
		}
		stores = append(stores, struct {
			name string
			st   *redisstore.Store
		}{"on" + n, st})
	}
	n := c.callersOf(t.name)
	p := t.name + "/"
	if !c.skipMain {
		cs.cells = append(cs.cells,
			rawCell(p+"set-distinct/c"+strconv.Itoa(n), n, set, distinct),
			rawCell(p+"get-distinct/c"+strconv.Itoa(n), n, get, distinct),
			rawCell(p+"set-hot/c"+strconv.Itoa(n), n, set, hotKeys),
			rawCell(p+"get-hot/c"+strconv.Itoa(n), n, get, hotKeys),
		)
		for _, s := range stores {
			cs.cells = append(cs.cells,
				sessionCell(p+"rotate-"+s.name+"/c"+strconv.Itoa(n), n, s.st, rotate),
				sessionCell(p+"validate-"+s.name+"/c"+strconv.Itoa(n), n, s.st, validate))
			if c.issue {
				cs.cells = append(cs.cells, sessionCell(p+"issue-"+s.name+"/c"+strconv.Itoa(n), n, s.st, issue))
			}
		}
	}
	if !c.skipLatency && t.name == "redis" {
		for _, k := range c.latCallers {
			for _, s := range stores {
				cs.cells = append(cs.cells,
					sessionCell(p+"rotate-"+s.name+"/c"+strconv.Itoa(k), k, s.st, rotate),
					sessionCell(p+"validate-"+s.name+"/c"+strconv.Itoa(k), k, s.st, validate))
			}
			cs.cells = append(cs.cells,
				rawCell(p+"set-distinct/c"+strconv.Itoa(k), k, set, distinct),
				rawCell(p+"get-distinct/c"+strconv.Itoa(k), k, get, distinct))
		}
	}
	return cs, nil
}

type result struct {
	opsPerSec, redisUS, clientUS, p50, p99, perReq float64
	hist                                           *bench.Histogram
}

// measure runs one cell: a warm-up, then dur of calls, with the masters'
// CPU and this process's CPU read around it.
func measure(ctx context.Context, c config, t *target, cl cell) (result, error) {
	loops := make([]func(ctx context.Context) error, cl.callers)
	for w := range loops {
		loops[w] = cl.mk(w, cl.callers)
	}
	hists := make([]bench.Histogram, cl.callers)
	var phase atomic.Int32 // 0 warm-up, 1 measured, 2 stop
	var calls atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &hists[w]
			n := int64(0)
			for {
				ph := phase.Load()
				if ph == 2 {
					break
				}
				t0 := time.Now()
				err := loops[w](ctx)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					phase.Store(2)
					break
				}
				if ph == 1 && phase.Load() == 1 {
					h.Record(time.Since(t0))
					n++
				}
			}
			calls.Add(n)
		}()
	}
	time.Sleep(c.warm)
	cpu0, err := redisCPU(ctx, t)
	if err != nil {
		return result{}, err
	}
	var st0 redisstore.BatchStats
	if cl.store != nil {
		st0 = cl.store.BatchStats()
	}
	ru0 := rusage()
	t0 := time.Now()
	phase.Store(1)
	time.Sleep(c.dur)
	phase.Store(2)
	el := time.Since(t0)
	ru1 := rusage()
	wg.Wait()
	cpu1, err := redisCPU(ctx, t)
	if err != nil {
		return result{}, err
	}
	if e := firstErr.Load(); e != nil {
		return result{}, e.(error)
	}
	var all bench.Histogram
	for i := range hists {
		all.Merge(&hists[i])
	}
	n := float64(calls.Load())
	if n == 0 {
		return result{}, errors.New("no call completed")
	}
	r := result{
		opsPerSec: n / el.Seconds(),
		redisUS:   (cpu1 - cpu0) * 1e6 / n,
		clientUS:  (ru1 - ru0).Seconds() * 1e6 / n,
		p50:       float64(all.Quantile(0.5)) / 1e3,
		p99:       float64(all.Quantile(0.99)) / 1e3,
		perReq:    1,
		hist:      &all,
	}
	if cl.store != nil {
		st1 := cl.store.BatchStats()
		if d := st1.Requests - st0.Requests; d > 0 {
			r.perReq = float64(st1.Calls-st0.Calls) / float64(d)
		}
	}
	return r, nil
}

// redisCPU is the main-thread CPU seconds of the masters, summed.
func redisCPU(ctx context.Context, t *target) (float64, error) {
	total := 0.0
	for _, m := range t.masters {
		cpu, err := bench.MainThreadCPU(ctx, m)
		if err != nil {
			return 0, err
		}
		total += cpu
	}
	return total, nil
}

func rusage() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// report prints medians (and ranges) of every cell, then the ratios,
// computed within each round.
func report(c config, order []string, res map[string][]result) {
	fmt.Printf("\n| cell | ops/s | Redis CPU µs/call | client CPU µs/call | p50 µs | p99 µs | p50 / p99 µs, all rounds | calls per request |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	pooled := map[string]*bench.Histogram{}
	for _, name := range order {
		rs := res[name]
		var h bench.Histogram
		for _, r := range rs {
			h.Merge(r.hist)
		}
		pooled[name] = &h
		col := func(f func(result) float64, prec int) string {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = f(r)
			}
			return medRange(v, prec)
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %.0f / %.0f | %s |\n", name,
			col(func(r result) float64 { return r.opsPerSec }, 0),
			col(func(r result) float64 { return r.redisUS }, 2),
			col(func(r result) float64 { return r.clientUS }, 2),
			col(func(r result) float64 { return r.p50 }, 0),
			col(func(r result) float64 { return r.p99 }, 0),
			float64(h.Quantile(0.5))/1e3, float64(h.Quantile(0.99))/1e3,
			col(func(r result) float64 { return r.perReq }, 1))
	}
	ratio := func(label, num, den string, f func(a, b result) float64) {
		a, b := res[num], res[den]
		if len(a) == 0 || len(b) == 0 {
			return
		}
		v := make([]float64, min(len(a), len(b)))
		for i := range v {
			v[i] = f(a[i], b[i])
		}
		fmt.Printf("| %s | %s |\n", label, medRange(v, 2))
	}
	cost := func(a, b result) float64 { return a.redisUS / b.redisUS }
	thr := func(a, b result) float64 { return a.opsPerSec / b.opsPerSec }
	lat50 := func(a, b result) float64 { return a.p50 / b.p50 }
	lat99 := func(a, b result) float64 { return a.p99 / b.p99 }
	fmt.Printf("\n| ratio (within each round) | median (range) |\n|---|---:|\n")
	targets := []string{"redis"}
	for _, n := range c.clusters {
		targets = append(targets, "cluster"+strconv.Itoa(n))
	}
	for _, t := range targets {
		n := strconv.Itoa(c.callersOf(t))
		p := t + "/"
		for _, s := range append([]string{"off"}, onNames(c)...) {
			ratio(p+"SET-distinct ÷ rotate-"+s+", Redis CPU per call", p+"set-distinct/c"+n, p+"rotate-"+s+"/c"+n, cost)
			ratio(p+"SET-hot ÷ rotate-"+s+", Redis CPU per call", p+"set-hot/c"+n, p+"rotate-"+s+"/c"+n, cost)
			ratio(p+"GET-distinct ÷ validate-"+s+", Redis CPU per call", p+"get-distinct/c"+n, p+"validate-"+s+"/c"+n, cost)
			ratio(p+"GET-hot ÷ validate-"+s+", Redis CPU per call", p+"get-hot/c"+n, p+"validate-"+s+"/c"+n, cost)
		}
		for _, s := range onNames(c) {
			ratio(p+"rotations per Redis core-second, "+s+" ÷ off", p+"rotate-off/c"+n, p+"rotate-"+s+"/c"+n, cost)
			ratio(p+"validations per Redis core-second, "+s+" ÷ off", p+"validate-off/c"+n, p+"validate-"+s+"/c"+n, cost)
			ratio(p+"logins per Redis core-second, "+s+" ÷ off", p+"issue-off/c"+n, p+"issue-"+s+"/c"+n, cost)
			ratio(p+"rotations/s, "+s+" ÷ off", p+"rotate-"+s+"/c"+n, p+"rotate-off/c"+n, thr)
			for _, k := range c.latCallers {
				kn := strconv.Itoa(k)
				for _, op := range []string{"rotate", "validate"} {
					ratio(p+op+" p50 at "+kn+" callers, "+s+" ÷ off", p+op+"-"+s+"/c"+kn, p+op+"-off/c"+kn, lat50)
					ratio(p+op+" p99 at "+kn+" callers, "+s+" ÷ off", p+op+"-"+s+"/c"+kn, p+op+"-off/c"+kn, lat99)
					on, off := pooled[p+op+"-"+s+"/c"+kn], pooled[p+op+"-off/c"+kn]
					if on != nil && off != nil && off.Count() > 0 {
						fmt.Printf("| %s | %.2f / %.2f |\n", p+op+" p50 / p99 at "+kn+" callers, all rounds, "+s+" ÷ off",
							float64(on.Quantile(0.5))/float64(off.Quantile(0.5)), float64(on.Quantile(0.99))/float64(off.Quantile(0.99)))
					}
				}
			}
		}
	}
	for _, a := range targets[1:] {
		for _, b := range targets {
			if a <= b && b != "redis" {
				continue
			}
			an, bn := "/c"+strconv.Itoa(c.callersOf(a)), "/c"+strconv.Itoa(c.callersOf(b))
			ratio(a+an+" ÷ "+b+bn+", Redis CPU per SET", a+"/set-distinct"+an, b+"/set-distinct"+bn, cost)
			for _, s := range append([]string{"off"}, onNames(c)...) {
				ratio(a+an+" ÷ "+b+bn+", Redis CPU per rotation, "+s, a+"/rotate-"+s+an, b+"/rotate-"+s+bn, cost)
				ratio(a+an+" ÷ "+b+bn+", Redis CPU per validation, "+s, a+"/validate-"+s+an, b+"/validate-"+s+bn, cost)
			}
		}
	}
}

// callersOf is the number of callers of target t's main cells.
func (c config) callersOf(t string) int {
	if n, ok := strings.CutPrefix(t, "cluster"); ok {
		if m, err := strconv.Atoi(n); err == nil && c.perMaster {
			return c.callers * m
		}
		return c.clusterCallers
	}
	return c.callers
}

func onNames(c config) []string {
	var out []string
	for _, n := range c.inflight {
		out = append(out, "on"+n)
	}
	return out
}

func medRange(v []float64, prec int) string {
	s := slices.Clone(v)
	sort.Float64s(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	f := "%." + strconv.Itoa(prec) + "f"
	if len(s) == 1 {
		return fmt.Sprintf(f, med)
	}
	return fmt.Sprintf(f+" ("+f+"–"+f+")", med, s[0], s[len(s)-1])
}
