package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelConfig describes a Sentinel deployment for StartSentinels.
type SentinelConfig struct {
	// Name is the monitored master's name. Default: "m".
	Name string
	// Count is the number of sentinels. Default: 3.
	Count int
	// Quorum is how many sentinels must agree the master is down.
	// Default: 2.
	Quorum int
	// DownAfter is down-after-milliseconds. Default: 1s.
	DownAfter time.Duration
	// FailoverTimeout is failover-timeout. Default: 5s.
	FailoverTimeout time.Duration
}

// Sentinels is a set of Redis Sentinel processes watching one master.
type Sentinels struct {
	Name  string
	Addrs []string
	procs []*exec.Cmd
}

// StartSentinels starts sentinels on free loopback ports, monitoring the
// master at masterAddr, and waits until each of them knows every replica in
// replicas (so that a failover can pick one). They stop when the test ends.
func StartSentinels(tb testing.TB, masterAddr string, replicas int, cfg SentinelConfig) *Sentinels {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		unavailable(tb, "redis-server not on PATH")
	}
	if cfg.Name == "" {
		cfg.Name = "m"
	}
	if cfg.Count == 0 {
		cfg.Count = 3
	}
	if cfg.Quorum == 0 {
		cfg.Quorum = 2
	}
	if cfg.DownAfter == 0 {
		cfg.DownAfter = time.Second
	}
	if cfg.FailoverTimeout == 0 {
		cfg.FailoverTimeout = 5 * time.Second
	}
	host, port, err := net.SplitHostPort(masterAddr)
	if err != nil {
		tb.Fatal(err)
	}
	s := &Sentinels{Name: cfg.Name}
	tb.Cleanup(s.stop)
	for i := 0; i < cfg.Count; i++ {
		dir := tb.TempDir()
		p := FreePort(tb)
		conf := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
			"sentinel monitor %s %s %s %d\n"+
			"sentinel down-after-milliseconds %s %d\n"+
			"sentinel failover-timeout %s %d\n"+
			"sentinel parallel-syncs %s 1\n",
			p, dir, filepath.Join(dir, "sentinel.log"),
			cfg.Name, host, port, cfg.Quorum,
			cfg.Name, cfg.DownAfter.Milliseconds(),
			cfg.Name, cfg.FailoverTimeout.Milliseconds(),
			cfg.Name)
		path := filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			tb.Fatal(err)
		}
		cmd := exec.Command(bin, path, "--sentinel")
		if err := cmd.Start(); err != nil {
			tb.Fatalf("start sentinel: %v", err)
		}
		s.procs = append(s.procs, cmd)
		s.Addrs = append(s.Addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	}
	// Each sentinel must see the master, every replica and the other sentinels.
	deadline := time.Now().Add(30 * time.Second)
	for _, addr := range s.Addrs {
		c := redis.NewSentinelClient(&redis.Options{Addr: addr})
		for {
			ok, why := sentinelReady(c, cfg.Name, replicas, cfg.Count-1)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				tb.Fatalf("sentinel %s not ready: %s", addr, why)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Close()
	}
	return s
}

func sentinelReady(c *redis.SentinelClient, name string, replicas, others int) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	m, err := c.Master(ctx, name).Result()
	if err != nil {
		return false, err.Error()
	}
	if n, _ := strconv.Atoi(m["num-slaves"]); n < replicas {
		return false, fmt.Sprintf("%d of %d replicas", n, replicas)
	}
	if n, _ := strconv.Atoi(m["num-other-sentinels"]); n < others {
		return false, fmt.Sprintf("%d of %d other sentinels", n, others)
	}
	reps, err := c.Replicas(ctx, name).Result()
	if err != nil {
		return false, err.Error()
	}
	for _, r := range reps {
		if r["master-link-status"] != "ok" {
			return false, "replica " + r["name"] + " link " + r["master-link-status"]
		}
	}
	return true, ""
}

// MasterAddr asks the sentinels, in turn, for the master's address.
func (s *Sentinels) MasterAddr(ctx context.Context) (string, error) {
	var last error
	for _, a := range s.Addrs {
		c := redis.NewSentinelClient(&redis.Options{Addr: a})
		addr, err := c.GetMasterAddrByName(ctx, s.Name).Result()
		c.Close()
		if err == nil && len(addr) == 2 {
			return net.JoinHostPort(addr[0], addr[1]), nil
		}
		last = err
	}
	return "", fmt.Errorf("no sentinel knows master %s: %v", s.Name, last)
}

func (s *Sentinels) stop() {
	for _, p := range s.procs {
		if p.Process != nil {
			p.Process.Kill()
			p.Wait()
		}
	}
	s.procs = nil
}
