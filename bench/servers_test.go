package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

// Where the benchmarks find their servers.
const (
	// envRedisURL names the Redis the benchmarks measure (server=redis).
	envRedisURL = "SESSIONCACHE_TEST_REDIS_URL"
	// envRedisAOFURL names a Redis with appendonly yes, appendfsync everysec
	// (server=redis-aof). Without it, the benchmarks start one of their own
	// when redis-server is on PATH.
	envRedisAOFURL = "SESSIONCACHE_BENCH_REDIS_AOF_URL"
	// envPostgresURL names the PostgreSQL of the SQL baseline; the default
	// is the local one with trust auth. Unreachable: skipped.
	envPostgresURL     = "SESSIONCACHE_BENCH_POSTGRES_URL"
	defaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
)

// poolSize is the go-redis pool of every benchmark client: larger than the
// number of callers, so that callers never wait for a connection.
const poolSize = 128

// ownServers are the redis-server processes this test binary started;
// TestMain stops them.
var ownServers struct {
	sync.Mutex
	all []*redistest.Server
}

func TestMain(m *testing.M) {
	code := m.Run()
	stopOwnServers()
	os.Exit(code)
}

func stopOwnServers() {
	ownServers.Lock()
	defer ownServers.Unlock()
	for _, s := range ownServers.all {
		s.Stop()
	}
	ownServers.all = nil
}

// startRedis starts a redis-server of this process's own on a free loopback
// port with the given extra arguments, and returns its URL. It skips when
// redis-server is not on PATH. The server outlives the benchmark that asked
// for it (later ones share it); TestMain stops it.
func startRedis(tb testing.TB, args ...string) string {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Skip("redis-server is not on PATH")
	}
	srv, err := redistest.Launch(args...)
	if err != nil {
		tb.Fatal(err)
	}
	ownServers.Lock()
	ownServers.all = append(ownServers.all, srv)
	ownServers.Unlock()
	return "redis://" + srv.Addr + "/0"
}

// lazyServer starts one server of its own, the first time a benchmark asks.
type lazyServer struct {
	once sync.Once
	url  string
	skip string
}

func (s *lazyServer) get(tb testing.TB, args ...string) string {
	tb.Helper()
	s.once.Do(func() {
		if _, err := exec.LookPath("redis-server"); err != nil {
			s.skip = "redis-server is not on PATH"
			return
		}
		s.skip = "redis-server did not start"
		s.url = startRedis(tb, args...)
	})
	if s.url == "" {
		tb.Skip(s.skip)
	}
	return s.url
}

var aofServer lazyServer

// server is a Redis to measure on.
type server struct {
	name string
	rdb  *redis.Client
	// real is false for miniredis, which has no INFO.
	real bool
}

func newRedisClient(tb testing.TB, url string) *redis.Client {
	tb.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("%q: %v", url, err)
	}
	if !strings.Contains(url, "pool_size=") {
		opt.PoolSize = poolSize
	}
	c := redis.NewClient(opt)
	tb.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		tb.Skipf("Redis at %s unreachable: %v", opt.Addr, err)
	}
	return c
}

// redisServers lists the servers to measure: the one named by
// SESSIONCACHE_TEST_REDIS_URL, the same with the append-only file on, and,
// in short mode, an in-process miniredis (to exercise the code, not to
// measure it).
func redisServers(b *testing.B) []*server {
	var out []*server
	if url := os.Getenv(envRedisURL); url != "" {
		out = append(out, &server{name: "redis", rdb: newRedisClient(b, url), real: true})
		aof := os.Getenv(envRedisAOFURL)
		if aof == "" {
			if _, err := exec.LookPath("redis-server"); err == nil {
				aof = aofServer.get(b, "--appendonly", "yes", "--appendfsync", "everysec")
			}
		}
		if aof != "" {
			out = append(out, &server{name: "redis-aof", rdb: newRedisClient(b, aof), real: true})
		}
	}
	if testing.Short() {
		mr := miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(mr.Close)
		c := redis.NewClient(&redis.Options{Addr: mr.Addr(), PoolSize: poolSize})
		b.Cleanup(func() { c.Close() })
		out = append(out, &server{name: "miniredis", rdb: c})
	}
	if len(out) == 0 {
		b.Skipf("no Redis: set %s (and, for the append-only comparison, %s or put redis-server on PATH); -short adds miniredis",
			envRedisURL, envRedisAOFURL)
	}
	return out
}

// postgresPool connects to the PostgreSQL of the SQL baseline, with
// synchronous_commit on (the default: a commit waits for the disk) or off
// (a commit returns before the disk, as Redis with appendfsync everysec).
func postgresPool(tb testing.TB, maxConns int32, syncCommit bool) *pgxpool.Pool {
	tb.Helper()
	url := os.Getenv(envPostgresURL)
	if url == "" {
		url = defaultPostgresURL
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatalf("%s: %v", envPostgresURL, err)
	}
	cfg.MaxConns = maxConns
	if !syncCommit {
		cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		if pool != nil {
			pool.Close()
		}
		tb.Skipf("PostgreSQL unreachable (%s): %v", cfg.ConnConfig.Host, err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// newPrefix returns a key prefix of its own, and deletes every key under it
// when tb ends: benchmarks never flush a shared server.
func newPrefix(tb testing.TB, rdb *redis.Client) string {
	var b [6]byte
	rand.Read(b[:])
	prefix := "scbench:" + hex.EncodeToString(b[:]) + ":"
	tb.Cleanup(func() { DeletePrefix(rdb, prefix) })
	return prefix
}

// serverStats is what INFO tells of a server's work so far.
type serverStats struct {
	cpu  float64             // main-thread CPU seconds, user + system
	cmds map[string][2]int64 // command -> calls, microseconds
}

func readStats(ctx context.Context, rdb *redis.Client) (serverStats, error) {
	info, err := rdb.Info(ctx, "cpu", "commandstats").Result()
	if err != nil {
		return serverStats{}, err
	}
	st := serverStats{cmds: map[string][2]int64{}}
	fields := map[string]float64{}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if cmd, ok := strings.CutPrefix(name, "cmdstat_"); ok {
			var calls, usec int64
			for _, kv := range strings.Split(val, ",") {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "calls":
					calls, _ = strconv.ParseInt(v, 10, 64)
				case "usec":
					usec, _ = strconv.ParseInt(v, 10, 64)
				}
			}
			st.cmds[cmd] = [2]int64{calls, usec}
			continue
		}
		if f, err := strconv.ParseFloat(val, 64); err == nil {
			fields[name] = f
		}
	}
	if _, ok := fields["used_cpu_user_main_thread"]; ok {
		st.cpu = fields["used_cpu_user_main_thread"] + fields["used_cpu_sys_main_thread"]
	} else {
		st.cpu = fields["used_cpu_user"] + fields["used_cpu_sys"]
	}
	return st, nil
}

// infoInt reads an integer field of INFO section.
func infoInt(ctx context.Context, rdb *redis.Client, section, field string) (int64, error) {
	info, err := rdb.Info(ctx, section).Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("INFO %s has no %s", section, field)
}
