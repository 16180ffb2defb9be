// Command scriptprofile measures what parts of rotate.lua's common path cost
// Redis: variants of the script, each differing from it in one thing, run
// on the same 20,000 real sessions, with Redis pinned to a core of its own
// (as bench/rediscpu), alone (one call per request, 64 callers) and
// pipelined (-depth calls per request, as the store's batching sends
// them). For each: Redis main-thread CPU per call (networking included) and
// INFO commandstats usec_per_call (the script alone).
//
//	go run ./bench/scriptprofile -rounds 3
//
// The variants keep the common path: each call presents the session's
// current token and names the same token as its successor, so every call
// rotates (h, s and p written, PEXPIRE) and the next one finds the same
// state. The arguments are built the way the store builds them.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/bench"
	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/lua"
	"github.com/sessioncache/sessioncache/redisstore"
)

// A variant is rotate.lua with one change.
type variant struct {
	name   string
	src    string   // the script (or, with fn, the library's body)
	fn     bool     // run as a Redis 7 Function (FCALL) instead of EVALSHA
	extra  []string // arguments after ARGV[2]
	cmd    string   // its commandstats name
	script *redis.Script
}

func variants(now string) []*variant {
	src := lua.Rotate
	must := func(s, old, new string) string {
		if !strings.Contains(s, old) {
			panic("rotate.lua changed: " + old)
		}
		return strings.Replace(s, old, new, 1)
	}
	timeBlock := src[strings.Index(src, "local t = redis.call('TIME')"):strings.Index(src, "local a = ARGV[1]")]
	dummies := make([]string, 8)
	for i := range dummies {
		dummies[i] = "1764520000123"
	}
	vs := []*variant{
		{name: "rotate.lua as it is", src: src},
		{name: "reply {1, now, user} (before issue 12)", src: must(src, "return nows .. rest", "return {1, nows, rest}")},
		{name: "reply 1 (no time, no user id)", src: must(src, "return nows .. rest", "return 1")},
		{name: "time from an argument, no TIME", src: must(src, timeBlock, "local nows = ARGV[3]\n"), extra: []string{now}},
		{name: "8 more arguments (13 bytes each, unread)", src: src, extra: dummies},
		{name: "HMGET of 4 fields instead of 2", src: must(src, "redis.call('HMGET', KEYS[1], 'h', 's')", "redis.call('HMGET', KEYS[1], 'h', 's', 'p', 'd')")},
		{name: "no PEXPIRE", src: must(src, "    redis.call('PEXPIRE', KEYS[1], string.sub(a, 72 + l))\n", "")},
		{name: "Redis 7 Function (FCALL), same body", src: src, fn: true},
		// Writes back what it read, so the others find the session as it was.
		{name: "floor: HMGET, 3-field HSET, PEXPIRE, return 1", src: `local v = redis.call('HMGET', KEYS[1], 'h', 's', 'p')
redis.call('HSET', KEYS[1], 'h', v[1], 's', v[2], 'p', v[3])
redis.call('PEXPIRE', KEYS[1], 1209600000)
return 1
`},
	}
	for _, v := range vs {
		v.cmd = "evalsha"
		if v.fn {
			v.cmd = "fcall"
		} else {
			v.script = redis.NewScript(v.src)
		}
	}
	return vs
}

func main() {
	sessions := flag.Int("sessions", 20000, "sessions")
	callers := flag.Int("callers", 64, "concurrent callers, one call per request")
	depth := flag.Int("depth", 12, "calls per request in the pipelined cells")
	rounds := flag.Int("rounds", 3, "interleaved rounds")
	dur := flag.Duration("duration", 2*time.Second, "measured time of each cell")
	redisCore := flag.String("redis-core", "0", "core of redis-server")
	cliCore := flag.String("client-core", "1", "core of this command")
	flag.Parse()
	bench.PinSelf(*cliCore)
	if err := run(*sessions, *callers, *depth, *rounds, *dur, *redisCore); err != nil {
		fmt.Fprintln(os.Stderr, "scriptprofile:", err)
		os.Exit(1)
	}
}

// target holds the arguments of one session's common-path rotation.
type target struct {
	keys []string
	a, b string
}

func run(sessions, callers, depth, rounds int, dur time.Duration, redisCore string) error {
	ctx := context.Background()
	srv, err := redistest.Launch("--maxmemory-policy", "noeviction")
	if err != nil {
		return err
	}
	defer srv.Stop()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 128})
	defer rdb.Close()
	if err := bench.PinServer(ctx, rdb, redisCore); err != nil {
		return err
	}
	targets, err := setUp(ctx, rdb, sessions)
	if err != nil {
		return err
	}
	nowMS, err := rdb.Time(ctx).Result()
	if err != nil {
		return err
	}
	vs := variants(strconv.FormatInt(nowMS.UnixMilli(), 10))
	for _, v := range vs {
		if v.fn {
			body := "#!lua name=scprofile\nredis.register_function('sc_rotate', function(KEYS, ARGV)\n" + v.src + "\nend)\n"
			if err := rdb.FunctionLoadReplace(ctx, body).Err(); err != nil {
				return fmt.Errorf("FUNCTION LOAD: %w", err)
			}
		} else if err := v.script.Load(ctx, rdb).Err(); err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
	}
	fmt.Printf("# scriptprofile: %d sessions, %d callers alone, %d-deep pipelines; %d rounds of %v per cell; Redis on core %s\n",
		sessions, callers, depth, rounds, dur, redisCore)
	type cellKey struct {
		v     int
		piped bool
	}
	res := map[cellKey][]result{}
	for r := 0; r < rounds; r++ {
		for i, v := range vs {
			for _, piped := range []bool{false, true} {
				x, err := measure(ctx, rdb, v, targets, callers, depth, piped, dur)
				if err != nil {
					return fmt.Errorf("%s: %w", v.name, err)
				}
				res[cellKey{i, piped}] = append(res[cellKey{i, piped}], x)
				fmt.Printf("round %d %-45s piped=%-5v redis %6.2f us/call  %s %5.2f us/call\n", r+1, v.name, piped, x.cpu, v.cmd, x.usec)
			}
		}
		set := func(piped bool) (result, error) { return measureSet(ctx, rdb, targets, callers, depth, piped, dur) }
		for _, piped := range []bool{false, true} {
			x, err := set(piped)
			if err != nil {
				return err
			}
			res[cellKey{-1, piped}] = append(res[cellKey{-1, piped}], x)
			fmt.Printf("round %d %-45s piped=%-5v redis %6.2f us/call  set %5.2f us/call\n", r+1, "SET (the ceiling)", piped, x.cpu, x.usec)
		}
	}
	fmt.Printf("\n| variant | Redis CPU µs/call, alone | usec_per_call, alone | Redis CPU µs/call, %d per request | usec_per_call, %d per request |\n|---|---:|---:|---:|---:|\n", depth, depth)
	row := func(name string, k0, k1 cellKey) {
		a, b := res[k0], res[k1]
		fmt.Printf("| %s | %s | %s | %s | %s |\n", name, med(a, func(r result) float64 { return r.cpu }), med(a, func(r result) float64 { return r.usec }),
			med(b, func(r result) float64 { return r.cpu }), med(b, func(r result) float64 { return r.usec }))
	}
	for i, v := range vs {
		row(v.name, cellKey{i, false}, cellKey{i, true})
	}
	row("SET of 32 bytes, 20,000 keys (the ceiling)", cellKey{-1, false}, cellKey{-1, true})
	return nil
}

// setUp logs in sessions users and returns, for each session, the
// arguments of a common-path rotation that leaves it as it was.
func setUp(ctx context.Context, rdb *redis.Client, sessions int) ([]target, error) {
	var rb [4]byte
	rand.Read(rb[:])
	prefix := "scriptprofile:" + hex.EncodeToString(rb[:]) + ":"
	st, err := redisstore.New(rdb, redisstore.Options{Secret: []byte("scriptprofile-secret-0123456789abcdef"), KeyPrefix: prefix, MaxInFlight: redisstore.NoBatching})
	if err != nil {
		return nil, err
	}
	if err := bench.Parallel(sessions, func(i int) error {
		g, err := st.Issue(ctx, "user-"+strconv.Itoa(i), bench.Login)
		if err == nil {
			_, err = st.Rotate(ctx, g.Token, bench.Refresh)
		}
		return err
	}); err != nil {
		return nil, err
	}
	var keys []string
	iter := rdb.Scan(ctx, 0, prefix+"*:s:*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, err
	}
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		return nil, err
	}
	const idle = int64(14 * 24 * time.Hour / time.Millisecond)
	abs := now.UnixMilli() + 2*idle
	// rotate.lua's ARGV[2]: generation, grace, margin, no client binding,
	// no device check, the revocation channel, IP address, user agent.
	channel := prefix + "revoked"
	slow := fmt.Sprintf("%010d%010d%013d", 0, 15000, idle/16) + "\x00\x00" + string(rune(len(channel))) + channel +
		string(rune(len(bench.Refresh.IPAddress))) + bench.Refresh.IPAddress + bench.Refresh.UserAgent
	out := make([]target, 0, len(keys))
	for _, k := range keys {
		f, err := rdb.HMGet(ctx, k, "h", "s").Result()
		if err != nil {
			return nil, err
		}
		h, _ := f[0].(string)
		s, _ := f[1].(string)
		if len(h) < 16 || len(s) < 39 {
			return nil, fmt.Errorf("unexpected session %q", k)
		}
		state := "1:0:"
		var call [8]byte
		rand.Read(call[:])
		a := h[:16] + h[:16] + fmt.Sprintf("%013d%013d", abs, abs-idle) + string(rune(len(state))) + string(call[:]) + s[35:39] + state + strconv.FormatInt(idle, 10)
		out = append(out, target{keys: []string{k, k}, a: a, b: slow})
	}
	return out, nil
}

type result struct{ cpu, usec float64 }

// measure runs v for dur from callers callers, each call alone, or from
// callers/depth callers sending depth calls per request.
func measure(ctx context.Context, rdb *redis.Client, v *variant, targets []target, callers, depth int, piped bool, dur time.Duration) (result, error) {
	send := func(p redis.Cmdable, t *target) redis.Cmder {
		args := append([]any{t.a, t.b}, toAny(v.extra)...)
		if v.fn {
			return p.FCall(ctx, "sc_rotate", t.keys, args...)
		}
		return p.EvalSha(ctx, v.script.Hash(), t.keys, args...)
	}
	return drive(ctx, rdb, v.cmd, targets, callers, depth, piped, dur, send)
}

func measureSet(ctx context.Context, rdb *redis.Client, targets []target, callers, depth int, piped bool, dur time.Duration) (result, error) {
	val := strings.Repeat("v", 32)
	return drive(ctx, rdb, "set", targets, callers, depth, piped, dur, func(p redis.Cmdable, t *target) redis.Cmder {
		return p.Set(ctx, t.keys[0]+":set", val, time.Hour)
	})
}

func drive(ctx context.Context, rdb *redis.Client, cmd string, targets []target, callers, depth int, piped bool, dur time.Duration, send func(p redis.Cmdable, t *target) redis.Cmder) (result, error) {
	n := callers
	if piped {
		n = max(callers/depth, 1)
	}
	var stop atomic.Bool
	var calls atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	measured := atomic.Bool{}
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			per := len(targets) / n
			mine := targets[w*per : (w+1)*per]
			i := 0
			for !stop.Load() {
				var err error
				k := 1
				if piped {
					k = depth
					pipe := rdb.Pipeline()
					for range depth {
						send(pipe, &mine[i%len(mine)])
						i++
					}
					var cmds []redis.Cmder
					cmds, err = pipe.Exec(ctx)
					for _, c := range cmds {
						if err == nil {
							err = c.Err()
						}
					}
				} else {
					err = send(rdb, &mine[i%len(mine)]).Err()
					i++
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					stop.Store(true)
					return
				}
				if measured.Load() {
					calls.Add(int64(k))
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	cpu0, err := bench.MainThreadCPU(ctx, rdb)
	if err != nil {
		return result{}, err
	}
	st0, err := cmdStat(ctx, rdb, cmd)
	if err != nil {
		return result{}, err
	}
	measured.Store(true)
	time.Sleep(dur)
	measured.Store(false)
	cpu1, err1 := bench.MainThreadCPU(ctx, rdb)
	st1, err2 := cmdStat(ctx, rdb, cmd)
	stop.Store(true)
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return result{}, e.(error)
	}
	if err1 != nil || err2 != nil {
		return result{}, fmt.Errorf("INFO: %v %v", err1, err2)
	}
	c := float64(calls.Load())
	if c == 0 || st1[0] == st0[0] {
		return result{}, fmt.Errorf("no call completed")
	}
	return result{cpu: (cpu1 - cpu0) * 1e6 / c, usec: float64(st1[1]-st0[1]) / float64(st1[0]-st0[0])}, nil
}

// cmdStat returns the calls and microseconds INFO commandstats gives cmd.
func cmdStat(ctx context.Context, rdb *redis.Client, cmd string) ([2]int64, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return [2]int64{}, err
	}
	var out [2]int64
	for _, line := range strings.Split(info, "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":")
		if !ok {
			continue
		}
		for _, kv := range strings.Split(v, ",") {
			k, x, _ := strings.Cut(kv, "=")
			switch k {
			case "calls":
				out[0], _ = strconv.ParseInt(x, 10, 64)
			case "usec":
				out[1], _ = strconv.ParseInt(x, 10, 64)
			}
		}
	}
	return out, nil
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func med(rs []result, f func(result) float64) string {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s) == 0 {
		return ""
	}
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	if len(s) == 1 {
		return fmt.Sprintf("%.2f", m)
	}
	return fmt.Sprintf("%.2f (%.2f–%.2f)", m, s[0], s[len(s)-1])
}
