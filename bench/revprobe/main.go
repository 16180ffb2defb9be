// Command revprobe measures how soon a revocation reaches every instance of
// the sessioncache service (issue 16's goal: with 3 instances under 5,000
// forward-auth requests/s, after a revoking call returns, p99 ≤ 50 ms until
// every instance refuses the session's access tokens, and 0 requests
// admitted after that window).
//
// It starts its own redis-server (or uses -redis, -cluster-addrs), builds
// cmd/sessioncache and starts -instances of it on the same Redis, secret,
// API key, issuer and key prefix. It logs in a pool of sessions, has every
// instance answer each of them twice (so that each remembers it), and
// drives GET /v1/auth at -rate over that pool, spread over the instances,
// for the whole run. Then:
//
//   - a quiet stretch (-quiet) of that load alone, over which it reads INFO
//     commandstats: forward auth of live sessions answered from memory
//     costs no data command, only the revocation feed's heartbeat PINGs;
//   - -revocations revocations, in turn a logout (DELETE
//     /v1/users/{u}/sessions/{s}), a log out everywhere (DELETE
//     /v1/users/{u}/sessions, a user with two sessions) and a reuse (a
//     refresh token replayed after two refreshes at /oauth2/token), each
//     through another instance. Before each, every instance answers every
//     access token of the target 200, and its metrics show no Redis check
//     meanwhile (the answers came from memory). When the revoking call
//     returns, one poller per instance sends GET /v1/auth with the target's
//     access tokens, in turn, every -poll-every, for -poll-for (longer until
//     each instance has refused every token, up to -timeout).
//
// For each instance it records the time from the call's return to the send
// time of its first refused (401) request of each session (the latest over
// the target's sessions; every token must be refused too); the
// revocation's figure is the latest over the instances. A 200 to a request
// sent more than -window after the return is "admitted after the window";
// a 200 to a request sent after the same instance refused the same session
// (with any of its tokens) is "admitted after a refusal".
//
//	go run ./bench/revprobe                      # the figures (about 2 minutes)
//	go run ./bench/revprobe -cluster             # on a 3-master Redis Cluster of its own
//	go run ./bench/revprobe -short               # seconds, small numbers
//	go run ./bench/revprobe -json > out.json
//
// Run it in the repository: it builds cmd/sessioncache unless -service
// names a binary. Every process runs on this machine: the load, the probe, the instances
// and Redis share its cores, so the figures include their contention. Linux
// only. Sessions live under a key prefix of their own and expire within two
// hours; on a Redis it did not start, the probe deletes them at the end.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/bench"
	"github.com/sessioncache/sessioncache/internal/redistest"
)

// module is the import path the service is built from.
const module = "github.com/sessioncache/sessioncache"

type config struct {
	redisURL     string // an existing standalone Redis
	clusterAddrs string // an existing cluster's seeds, comma-separated
	cluster      bool   // start a 3-master cluster
	service      string // the binary; "" builds cmd/sessioncache
	env          bench.ListFlag

	instances   int
	rate        float64
	workers     int
	sessions    int
	quiet       time.Duration
	revocations int
	window      time.Duration
	pollEvery   time.Duration
	pollFor     time.Duration
	timeout     time.Duration
	json        bool
}

// defaults are the figures; short ones run in seconds.
var (
	defaults = config{instances: 3, rate: 5000, workers: 64, sessions: 2000, quiet: 20 * time.Second,
		revocations: 300, window: 50 * time.Millisecond, pollEvery: 500 * time.Microsecond,
		pollFor: 100 * time.Millisecond, timeout: 5 * time.Second}
	shortConfig = config{instances: 3, rate: 500, workers: 16, sessions: 100, quiet: time.Second,
		revocations: 9, window: 50 * time.Millisecond, pollEvery: 500 * time.Microsecond,
		pollFor: 100 * time.Millisecond, timeout: 5 * time.Second}
)

func main() {
	c := defaults
	short := flag.Bool("short", false, "small numbers that run in seconds: "+shortText())
	flag.StringVar(&c.redisURL, "redis", "", "redis:// URL of an existing standalone Redis to use (default: start a redis-server of its own; on a shared server, INFO commandstats counts others' commands too)")
	flag.StringVar(&c.clusterAddrs, "cluster-addrs", "", "comma-separated seeds of an existing Redis Cluster to use")
	flag.BoolVar(&c.cluster, "cluster", false, "start a 3-master Redis Cluster of its own instead of a standalone redis-server")
	flag.StringVar(&c.service, "service", "", "sessioncache binary (default: built from ./cmd/sessioncache)")
	flag.Var(&c.env, "env", "`VAR=value` given to every instance (repeatable), such as SESSIONCACHE_REVOCATION_HEARTBEAT=100ms")
	flag.IntVar(&c.instances, "instances", c.instances, "service instances")
	flag.Float64Var(&c.rate, "rate", c.rate, "background forward-auth requests per second, over all instances")
	flag.IntVar(&c.workers, "workers", c.workers, "goroutines sending the background load")
	flag.IntVar(&c.sessions, "sessions", c.sessions, "sessions of the background load")
	flag.DurationVar(&c.quiet, "quiet", c.quiet, "stretch of background load alone over which Redis's commands are counted")
	flag.IntVar(&c.revocations, "revocations", c.revocations, "revocations, the three kinds in turn, each through the next instance")
	flag.DurationVar(&c.window, "window", c.window, "after the revoking call returns, the time within which every instance must refuse")
	flag.DurationVar(&c.pollEvery, "poll-every", c.pollEvery, "interval between the polls of one instance")
	flag.DurationVar(&c.pollFor, "poll-for", c.pollFor, "how long every instance is polled after the call returns (longer until it refuses)")
	flag.DurationVar(&c.timeout, "timeout", c.timeout, "give up polling an instance that still admits the session after this")
	flag.BoolVar(&c.json, "json", false, "print the report as JSON")
	flag.Parse()
	if *short {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		c = applyShort(c, set)
	}
	rep, err := run(c, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "revprobe:", err)
		os.Exit(1)
	}
	if c.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
		return
	}
	rep.print(os.Stdout)
}

func shortText() string {
	s := shortConfig
	return fmt.Sprintf("-rate %g -sessions %d -quiet %s -revocations %d", s.rate, s.sessions, s.quiet, s.revocations)
}

// applyShort gives c the short figures, except those set on the command line.
func applyShort(c config, set map[string]bool) config {
	s := shortConfig
	if !set["rate"] {
		c.rate = s.rate
	}
	if !set["workers"] {
		c.workers = s.workers
	}
	if !set["sessions"] {
		c.sessions = s.sessions
	}
	if !set["quiet"] {
		c.quiet = s.quiet
	}
	if !set["revocations"] {
		c.revocations = s.revocations
	}
	return c
}

// run sets everything up, measures, tears down and returns the report;
// progress goes to log.
func run(c config, log io.Writer) (*report, error) {
	if c.instances < 1 || c.rate <= 0 || c.workers < 1 || c.sessions < 1 || c.revocations < 0 {
		return nil, fmt.Errorf("want at least 1 instance, worker and session, a positive -rate and no negative -revocations")
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "revprobe")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if c.service == "" {
		fmt.Fprintln(log, "revprobe: building cmd/sessioncache")
		if c.service, err = bench.Build(dir, module+"/cmd/sessioncache", "sessioncache"); err != nil {
			return nil, err
		}
	}

	rd, err := openRedis(c)
	if err != nil {
		return nil, err
	}
	defer rd.close()
	prefix := "revprobe:" + bench.RandomHex(4) + ":"
	if !rd.own {
		defer rd.deletePrefix(prefix)
	}

	apiKey, secret := bench.RandomHex(32), bench.RandomHex(32)
	var insts []*instance
	for i := range c.instances {
		cmd := exec.Command(c.service)
		cmd.Env = append([]string{
			"PATH=" + os.Getenv("PATH"),
			"SESSIONCACHE_LISTEN=127.0.0.1:0",
			"SESSIONCACHE_METRICS_LISTEN=127.0.0.1:0",
			"SESSIONCACHE_REDIS_URL=" + rd.url,
			"SESSIONCACHE_REDIS_MODE=" + rd.mode,
			"SESSIONCACHE_API_KEY=" + apiKey,
			"SESSIONCACHE_SECRET=" + secret,
			"SESSIONCACHE_ISSUER=https://revprobe.example",
			"SESSIONCACHE_KEY_PREFIX=" + prefix,
			"SESSIONCACHE_IDLE_TTL=1h",
			"SESSIONCACHE_ABSOLUTE_TTL=2h",
			"SESSIONCACHE_ACCESS_TOKEN_TTL=1h",
		}, c.env...)
		srv, err := bench.StartServer(fmt.Sprintf("instance %d", i+1), cmd)
		if err != nil {
			return nil, err
		}
		defer srv.Stop()
		if err := srv.WaitReady(30 * time.Second); err != nil {
			return nil, err
		}
		insts = append(insts, newInstance(i, srv, apiKey))
	}

	rep := &report{Instances: c.instances, Redis: rd.describe(ctx), Commit: commit(), LoadStart: bench.LoadAvg(),
		Settings: settingsOf(c)}
	p := &probe{c: c, insts: insts, rd: rd, log: log, runID: bench.RandomHex(4)}
	if err := p.measure(ctx, rep); err != nil {
		return nil, err
	}
	rep.LoadEnd = bench.LoadAvg()
	return rep, nil
}

// commit names the tree the service was built from, if this runs in one.
func commit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		c += "+changes"
	}
	return c
}

// redisSetup is the Redis the instances share.
type redisSetup struct {
	url, mode string
	rdb       redis.UniversalClient
	own       bool
	stop      func()
}

func openRedis(c config) (*redisSetup, error) {
	switch {
	case c.redisURL != "" && (c.clusterAddrs != "" || c.cluster):
		return nil, fmt.Errorf("-redis and a cluster: pick one")
	case c.redisURL != "":
		opt, err := redis.ParseURL(c.redisURL)
		if err != nil {
			return nil, err
		}
		return ping(&redisSetup{url: c.redisURL, mode: "standalone", rdb: redis.NewClient(opt)})
	case c.clusterAddrs != "":
		return ping(&redisSetup{url: "redis://" + c.clusterAddrs, mode: "cluster",
			rdb: redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(c.clusterAddrs, ",")})})
	case c.cluster:
		tc, err := redistest.LaunchCluster(3, 0, 5*time.Second)
		if err != nil {
			return nil, err
		}
		addrs := tc.Addrs()
		return ping(&redisSetup{url: "redis://" + strings.Join(addrs, ","), mode: "cluster", own: true, stop: tc.Stop,
			rdb: redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})})
	}
	srv, err := redistest.Launch("--maxmemory-policy", "noeviction")
	if err != nil {
		return nil, err
	}
	return ping(&redisSetup{url: "redis://" + srv.Addr + "/0", mode: "standalone", own: true, stop: srv.Stop,
		rdb: redis.NewClient(&redis.Options{Addr: srv.Addr})})
}

func ping(r *redisSetup) (*redisSetup, error) {
	if err := r.rdb.Ping(context.Background()).Err(); err != nil {
		r.close()
		return nil, fmt.Errorf("redis %s: %w", r.url, err)
	}
	return r, nil
}

func (r *redisSetup) close() {
	r.rdb.Close()
	if r.stop != nil {
		r.stop()
	}
}

// describe names the Redis: its version, its kind and whose it is.
func (r *redisSetup) describe(ctx context.Context) string {
	version := "?"
	if infos, err := r.infos(ctx, "server"); err == nil && len(infos) > 0 {
		version = infoField(infos[0], "redis_version")
	}
	whose := "given"
	if r.own {
		whose = "its own"
	}
	return fmt.Sprintf("Redis %s, %s (%s): %s", version, r.mode, whose, strings.TrimPrefix(r.url, "redis://"))
}

// infos returns INFO section of every master.
func (r *redisSetup) infos(ctx context.Context, section string) ([]string, error) {
	cc, ok := r.rdb.(*redis.ClusterClient)
	if !ok {
		s, err := r.rdb.Info(ctx, section).Result()
		return []string{s}, err
	}
	ch := make(chan string, 64)
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		s, err := c.Info(ctx, section).Result()
		ch <- s
		return err
	})
	close(ch)
	var out []string
	for s := range ch {
		out = append(out, s)
	}
	return out, err
}

// deletePrefix deletes the run's sessions from a Redis it did not start.
func (r *redisSetup) deletePrefix(prefix string) {
	if cc, ok := r.rdb.(*redis.ClusterClient); ok {
		cc.ForEachMaster(context.Background(), func(_ context.Context, c *redis.Client) error {
			bench.DeletePrefix(c, prefix)
			return nil
		})
		return
	}
	bench.DeletePrefix(r.rdb.(*redis.Client), prefix)
}

func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}
