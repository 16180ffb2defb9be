// Command scriptcost drives rotations (or SETs) against one Redis, for bench/callgrind.sh,
// which counts the instructions redis-server runs for them under callgrind:
// a figure that, unlike CPU time, does not move with the load of a shared
// machine.
//
//	PROBE_ADDR=127.0.0.1:6390 [PROBE_OP=set] [PROBE_BATCH=1] [PROBE_CLIENT=web-app] [PROBE_JKT=1] scriptcost N
//
// PROBE_CLIENT binds the sessions to a client and names it at every
// rotation, as the token endpoint does, so that the script compares the
// client binding. PROBE_JKT=1 binds them to a DPoP key too, named at every
// rotation, so that the script compares the key binding.
// Each rotation is a request of its own (Options.MaxInFlight NoBatching),
// so that figures compare with commits before batching (issue 12);
// PROBE_BATCH=1 lets the store batch its 64 callers, and the figure is then
// a rotation's share of a pipeline.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/redisstore"
)

func stat(rdb *redis.Client, cmd string) (calls, usec int64) {
	info := rdb.Info(context.Background(), "commandstats").Val()
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "cmdstat_"+cmd+":"); ok {
			for _, kv := range strings.Split(v, ",") {
				p := strings.SplitN(kv, "=", 2)
				switch p[0] {
				case "calls":
					calls, _ = strconv.ParseInt(p[1], 10, 64)
				case "usec":
					usec, _ = strconv.ParseInt(p[1], 10, 64)
				}
			}
		}
	}
	return
}

func main() {
	ctx := context.Background()
	addr := os.Getenv("PROBE_ADDR")
	if addr == "" {
		addr = "127.0.0.1:26379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
	opt := redisstore.Options{Secret: []byte("probe-secret-probe-secret-probe-secret!!"), KeyPrefix: "probe:"}
	if os.Getenv("PROBE_BATCH") != "1" {
		opt.MaxInFlight = redisstore.NoBatching
	}
	s, err := redisstore.New(rdb, opt)
	if err != nil {
		panic(err)
	}
	n := 20000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	const users = 64
	client := os.Getenv("PROBE_CLIENT")
	var jkt string
	if os.Getenv("PROBE_JKT") == "1" {
		jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I" // RFC 9449's example
	}
	toks := make([]string, users)
	for i := range toks {
		g, err := s.Issue(ctx, fmt.Sprintf("8a1c6a0e-3f7b-4f0e-b1b7-6a2d9f1c0e%02d", i), redisstore.Client{ClientID: client, JKT: jkt, DeviceID: "5b0d1b5e-7d1c-4d3e-9a56-0c9f5e6b2a11", DeviceName: "Chrome on macOS", IPAddress: "203.0.113.77", UserAgent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 Chrome/126.0"})
		if err != nil {
			panic(err)
		}
		toks[i] = g.Token
	}
	if os.Getenv("PROBE_OP") == "set" {
		val := strings.Repeat("v", 32)
		var wg sync.WaitGroup
		for i := 0; i < users; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < n/users; j++ {
					rdb.Set(ctx, fmt.Sprintf("probe:set:%d:%d", i, j%100), val, 0)
				}
			}()
		}
		wg.Wait()
		return
	}
	c0, u0 := stat(rdb, "evalsha")
	var wg sync.WaitGroup
	for i := 0; i < users; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < n/users; j++ {
				g, err := s.Rotate(ctx, toks[i], redisstore.Client{ClientID: client, JKT: jkt, IPAddress: "203.0.113.77", UserAgent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 Chrome/126.0"})
				if err != nil {
					panic(err)
				}
				toks[i] = g.Token
			}
		}()
	}
	wg.Wait()
	c1, u1 := stat(rdb, "evalsha")
	fmt.Printf("%.2f us/call over %d calls\n", float64(u1-u0)/float64(c1-c0), c1-c0)
	keys, _ := rdb.Keys(ctx, "probe:*").Result()
	for _, k := range keys {
		rdb.Del(ctx, k)
	}
}
