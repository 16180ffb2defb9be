// Command cpucost measures the CPU the sessioncache service spends per
// request against its ceiling, in one run: a bare net/http handler doing
// one go-redis SET per request (bench/bare), the service's rotation
// (POST /v1/tokens/rotate) and its forward auth (GET /v1/auth with the
// access token of each session's latest grant, as a gateway sees it), each
// driven by cmd/loadgen with the same workers, in interleaved rounds.
//
// CPU per request is the server process's CPU time (user and system, from
// /proc/<pid>/stat) during loadgen's timed part, over the requests served
// in it; loadgen's own CPU is not counted. Run it in the repository (it
// builds cmd/loadgen, bench/bare and, unless -service names binaries,
// cmd/sessioncache):
//
//	go run ./bench/cpucost -redis redis://127.0.0.1:26379/0 -rounds 5 -duration 10s
//	go run ./bench/cpucost -rate 4000   # every target at the same load
//	go run ./bench/cpucost -service before=/tmp/sc-before -service after=/tmp/sc-after
//	go run ./bench/cpucost -dpop -rate 4000   # and the same with DPoP-bound sessions
//
// With -dpop, each service gets two more targets: the token endpoint and
// forward auth with every session bound to a DPoP key (RFC 9449), each
// request with a proof that loadgen signs (loadgen -dpop); their Redis
// commands are counted (the jti of each proof is one).
//
// Linux only. Sessions are written under a key prefix of their own, expire
// within two hours and are deleted at the end; nothing is flushed.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sessioncache/sessioncache/bench"
)

// module is the import path the programs are built from.
const module = "github.com/sessioncache/sessioncache"

type config struct {
	redisURL            string
	services, env       bench.ListFlag
	rounds, workers     int
	sessions            int
	duration            time.Duration
	rate                float64
	loadgenBin, bareBin string
	dpop                bool
}

func main() {
	var c config
	flag.StringVar(&c.redisURL, "redis", "redis://127.0.0.1:26379/0", "the Redis both servers use (a private one: its CPU is not counted, but a busy Redis slows everything)")
	flag.Var(&c.services, "service", "`name=path` of a sessioncache binary to measure (repeatable, to compare builds in one run; default: cmd/sessioncache built from this tree, named service)")
	flag.Var(&c.env, "env", "`VAR=value` given to every service (repeatable), such as SESSIONCACHE_ACCESS_LOG=true")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds; each measures every target once, in a rotating order")
	flag.IntVar(&c.workers, "workers", 64, "loadgen workers")
	flag.IntVar(&c.sessions, "sessions", 1000, "sessions loadgen logs in before each rotate and auth run")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "timed part of each loadgen run")
	flag.Float64Var(&c.rate, "rate", 0, "requests per second loadgen sends to every target (0: as fast as the workers go); a rate every target sustains compares them at the same load")
	flag.StringVar(&c.loadgenBin, "loadgen", "", "loadgen binary (default: built from ./cmd/loadgen)")
	flag.StringVar(&c.bareBin, "bare", "", "bench/bare binary (default: built from ./bench/bare)")
	flag.BoolVar(&c.dpop, "dpop", false, "also measure the token endpoint and forward auth with DPoP-bound sessions and proofs")
	flag.Parse()
	if err := run(c, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "cpucost:", err)
		os.Exit(1)
	}
}

// a target is one row of the result: a server and the loadgen mix run
// against it.
type target struct {
	name    string
	srv     *bench.Server
	mix     string
	loadgen string // -target
	// countRedis: count the Redis commands the run sends (forward auth
	// answers from memory: none).
	countRedis bool
	// dpop: sessions bound to a DPoP key, each request with a proof.
	dpop bool
}

// sample is one loadgen run of a target.
type sample struct {
	usPerReq, perSec float64
	requests         uint64
	// Redis commands during the timed part (countRedis): data commands,
	// and the revocation feed's heartbeat PINGs.
	commands, pings int64
}

func run(c config, out io.Writer) error {
	dir, err := os.MkdirTemp("", "cpucost")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	build := func(pkg, name string) (string, error) { return bench.Build(dir, pkg, name) }
	if c.loadgenBin == "" {
		if c.loadgenBin, err = build(module+"/cmd/loadgen", "loadgen"); err != nil {
			return err
		}
	}
	if c.bareBin == "" {
		if c.bareBin, err = build(module+"/bench/bare", "bare"); err != nil {
			return err
		}
	}
	if len(c.services) == 0 {
		bin, err := build(module+"/cmd/sessioncache", "sessioncache")
		if err != nil {
			return err
		}
		c.services = bench.ListFlag{"service=" + bin}
	}

	opt, err := redis.ParseURL(c.redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", c.redisURL, err)
	}
	prefix := "cpucost:" + bench.RandomHex(4) + ":"
	defer bench.DeletePrefix(rdb, prefix)

	apiKey := bench.RandomHex(32)
	bare, err := bench.StartServer("bare", exec.Command(c.bareBin, "-listen", "127.0.0.1:0", "-redis", c.redisURL))
	if err != nil {
		return err
	}
	defer bare.Stop()
	bareHeaders, err := bench.StartServer("bare-headers", exec.Command(c.bareBin, "-listen", "127.0.0.1:0", "-headers"))
	if err != nil {
		return err
	}
	defer bareHeaders.Stop()
	targets := []target{{name: "bare", srv: bare, mix: "bare", loadgen: "bare"},
		{name: "bare, 3 headers, no I/O", srv: bareHeaders, mix: "bare-auth", loadgen: "bare"}}
	for i, s := range c.services {
		name, bin, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("-service %q: want name=path", s)
		}
		cmd := exec.Command(bin)
		cmd.Env = append([]string{
			"PATH=" + os.Getenv("PATH"),
			"SESSIONCACHE_LISTEN=127.0.0.1:0",
			"SESSIONCACHE_METRICS_LISTEN=127.0.0.1:0",
			"SESSIONCACHE_REDIS_URL=" + c.redisURL,
			"SESSIONCACHE_API_KEY=" + apiKey,
			"SESSIONCACHE_SECRET=" + bench.RandomHex(32),
			"SESSIONCACHE_KEY_PREFIX=" + prefix + strconv.Itoa(i) + ":",
			"SESSIONCACHE_IDLE_TTL=1h",
			"SESSIONCACHE_ABSOLUTE_TTL=2h",
		}, c.env...)
		srv, err := bench.StartServer(name, cmd)
		if err != nil {
			return err
		}
		defer srv.Stop()
		if err := srv.WaitReady(30 * time.Second); err != nil {
			return err
		}
		targets = append(targets,
			target{name: name + " rotate", srv: srv, mix: "rotate", loadgen: "http"},
			target{name: name + " token", srv: srv, mix: "refresh", loadgen: "http"},
			target{name: name + " auth", srv: srv, mix: "auth", loadgen: "http", countRedis: true})
		if c.dpop {
			targets = append(targets,
				target{name: name + " token DPoP", srv: srv, mix: "refresh", loadgen: "http", countRedis: true, dpop: true},
				target{name: name + " auth DPoP", srv: srv, mix: "auth", loadgen: "http", countRedis: true, dpop: true})
		}
	}

	load := "as fast as they go"
	if c.rate > 0 {
		load = fmt.Sprintf("%.0f req/s", c.rate)
	}
	fmt.Fprintf(out, "cpucost: %d rounds of %s, %d workers (%s), %d sessions, Redis %s, load average %s\n",
		c.rounds, c.duration, c.workers, load, c.sessions, c.redisURL, bench.LoadAvg())
	samples := make([][]sample, len(targets))
	for r := range c.rounds {
		for k := range targets {
			i := (k + r) % len(targets) // each round starts with another target
			t := targets[i]
			s, err := measure(c, t, apiKey)
			if err != nil {
				return err
			}
			samples[i] = append(samples[i], s)
			fmt.Fprintf(out, "round %d  %-28s %7.1f us/req %9.0f req/s   load %s", r+1, t.name, s.usPerReq, s.perSec, bench.LoadAvg())
			if t.countRedis {
				fmt.Fprintf(out, "   Redis: %d commands, %d heartbeat PINGs over %d requests", s.commands, s.pings, s.requests)
			}
			fmt.Fprintln(out)
		}
	}
	fmt.Fprintln(out)
	printTable(out, targets, samples)
	return nil
}

// measure runs loadgen once against t.
func measure(c config, t target, apiKey string) (sample, error) {
	args := []string{"-target", t.loadgen, "-http", t.srv.URL, "-api-key", apiKey, "-mix", t.mix,
		"-workers", strconv.Itoa(c.workers), "-sessions", strconv.Itoa(max(c.sessions, c.workers)),
		"-duration", c.duration.String(), "-rate", strconv.FormatFloat(c.rate, 'f', -1, 64), "-progress", "0", "-json",
		"-server-pid", strconv.Itoa(t.srv.Cmd.Process.Pid)}
	if t.countRedis {
		args = append(args, "-redis-stats", c.redisURL)
	}
	if t.dpop {
		args = append(args, "-dpop")
	}
	cmd := exec.Command(c.loadgenBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return sample{}, fmt.Errorf("loadgen %s: %v\n%s\n%s", strings.Join(args, " "), err, stderr.String(), t.srv.Tail)
	}
	var rep struct {
		Total struct {
			Count  uint64  `json:"count"`
			Errors int64   `json:"errors"`
			PerSec float64 `json:"ops_per_s"`
		} `json:"total"`
		Server struct {
			PerOp float64 `json:"us_per_op"`
		} `json:"server_cpu"`
		Redis  map[string]int64 `json:"redis_commands"`
		Errors []string         `json:"first_errors"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		return sample{}, fmt.Errorf("loadgen report: %w", err)
	}
	if rep.Total.Errors != 0 || rep.Total.Count == 0 {
		return sample{}, fmt.Errorf("%s: %d requests, %d errors: %v", t.name, rep.Total.Count, rep.Total.Errors, rep.Errors)
	}
	smp := sample{usPerReq: rep.Server.PerOp, perSec: rep.Total.PerSec, requests: rep.Total.Count}
	for cmd, n := range rep.Redis {
		if cmd == "ping" {
			smp.pings += n
		} else {
			smp.commands += n
		}
	}
	return smp, nil
}

// printTable prints, for each target, the median and range over the rounds
// of its CPU per request, its throughput, and its CPU per request over the
// bare handler's of the same round.
func printTable(w io.Writer, targets []target, samples [][]sample) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tCPU us/req, median (range)\treq/s, median\tCPU / bare's, median (range)\tCPU / bare 3 headers', median (range)\tRedis commands/req")
	for i, t := range targets {
		var cpu, rate, ratio, ratioHeaders []float64
		var commands int64
		var requests uint64
		for r, s := range samples[i] {
			cpu = append(cpu, s.usPerReq)
			rate = append(rate, s.perSec)
			ratio = append(ratio, s.usPerReq/samples[0][r].usPerReq)
			ratioHeaders = append(ratioHeaders, s.usPerReq/samples[1][r].usPerReq)
			commands += s.commands
			requests += s.requests
		}
		redisCol := ""
		if t.countRedis && requests > 0 {
			redisCol = fmt.Sprintf("%.4f (%d over %d)", float64(max(commands, 0))/float64(requests), max(commands, 0), requests)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\n", t.name, spread(cpu, "%.1f"), median(rate), spread(ratio, "%.2f"), spread(ratioHeaders, "%.2f"), redisCol)
	}
	tw.Flush()
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func spread(v []float64, format string) string {
	return fmt.Sprintf(format+" ("+format+"-"+format+")", median(v), slices.Min(v), slices.Max(v))
}
