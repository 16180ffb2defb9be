package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestCluster is a Redis Cluster started for one test, with replicas, on
// free loopback ports (bus ports +10000).
type TestCluster struct {
	Nodes []*Server
	// args start a node of this cluster (AddMaster).
	args []string
}

// StartCluster starts masters*(1+replicas) nodes with the given
// cluster-node-timeout, joins them with redis-cli --cluster create, and
// waits until every node reports cluster_state:ok and knows every node. It
// stops when the test ends.
func StartCluster(tb testing.TB, masters, replicas int, nodeTimeout time.Duration) *TestCluster {
	tb.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		unavailable(tb, "redis-cli not on PATH")
	}
	tc, err := createCluster(masters, replicas, nodeTimeout, func(args ...string) (*Server, error) {
		return StartServer(tb, args...), nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return tc
}

// LaunchCluster starts a cluster like StartCluster, for a caller that
// outlives one test (a measuring command): the caller calls Stop.
func LaunchCluster(masters, replicas int, nodeTimeout time.Duration) (*TestCluster, error) {
	tc, err := createCluster(masters, replicas, nodeTimeout, Launch)
	if err != nil {
		tc.Stop()
		return nil, err
	}
	return tc, nil
}

// Stop stops every node.
func (tc *TestCluster) Stop() {
	for _, n := range tc.Nodes {
		n.Stop()
	}
}

// createCluster starts the nodes with start and joins them; on an error,
// the nodes started so far are in the cluster returned.
func createCluster(masters, replicas int, nodeTimeout time.Duration, start func(args ...string) (*Server, error)) (*TestCluster, error) {
	tc := &TestCluster{args: []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.FormatInt(nodeTimeout.Milliseconds(), 10),
		"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return tc, fmt.Errorf("redis-cli not on PATH: %w", err)
	}
	args := []string{"--cluster", "create"}
	for i := 0; i < masters*(1+replicas); i++ {
		s, err := start(tc.args...)
		if err != nil {
			return tc, err
		}
		tc.Nodes = append(tc.Nodes, s)
		args = append(args, s.Addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		return tc, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range tc.Nodes {
		c := redis.NewClient(&redis.Options{Addr: n.Addr})
		for {
			ok, why := nodeReady(c, len(tc.Nodes), masters)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				return tc, fmt.Errorf("cluster node %s not ready: %s", n.Addr, why)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Close()
	}
	return tc, nil
}

func nodeReady(c *redis.Client, nodes, masters int) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return false, err.Error()
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return false, "cluster_state not ok"
	}
	if !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(nodes)+"\r") {
		return false, "not every node known"
	}
	if role, err := c.Do(ctx, "role").Slice(); err != nil || len(role) == 0 {
		return false, fmt.Sprint("ROLE: ", err)
	} else if role[0] == "slave" && (len(role) < 4 || role[3] != "connected") {
		return false, "replica not in sync"
	}
	ns, err := ClusterNodes(ctx, c)
	if err != nil {
		return false, err.Error()
	}
	n := 0
	for _, x := range ns {
		if x.Master && len(x.Slots) > 0 {
			n++
		}
	}
	if n != masters {
		return false, fmt.Sprintf("%d of %d masters with slots", n, masters)
	}
	return true, ""
}

// Addrs lists every node's address.
func (tc *TestCluster) Addrs() []string {
	out := make([]string, len(tc.Nodes))
	for i, n := range tc.Nodes {
		out[i] = n.Addr
	}
	return out
}

// Node returns the started node at addr, or nil.
func (tc *TestCluster) Node(addr string) *Server {
	for _, n := range tc.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// ClusterNode is one line of CLUSTER NODES.
type ClusterNode struct {
	ID, Addr string
	Master   bool
	Failed   bool
	MasterID string
	Slots    [][2]int // ranges, inclusive
}

// ClusterNodes parses CLUSTER NODES as seen by c.
func ClusterNodes(ctx context.Context, c *redis.Client) ([]ClusterNode, error) {
	s, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []ClusterNode
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		n := ClusterNode{ID: f[0], Addr: addr, MasterID: f[3],
			Master: strings.Contains(f[2], "master"),
			Failed: strings.Contains(f[2], "fail")}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated
			}
			lo, hi, found := strings.Cut(r, "-")
			a, err1 := strconv.Atoi(lo)
			b := a
			var err2 error
			if found {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 == nil && err2 == nil {
				n.Slots = append(n.Slots, [2]int{a, b})
			}
		}
		out = append(out, n)
	}
	return out, nil
}
