package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Reshaping a live cluster as an operator does: redis-cli --cluster
// reshard, add-node, rebalance and del-node, and one slot moved by hand
// (CLUSTER SETSLOT and MIGRATE) so that a test can hold it half moved.

// clusterCLI runs redis-cli --cluster command with args and returns its
// output. redis-cli checks the cluster before it changes anything and
// refuses while the nodes' views of the slots differ, as they do for a
// moment after a change: it runs again then, for up to 30 seconds.
func clusterCLI(ctx context.Context, command string, args ...string) (string, error) {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return "", fmt.Errorf("redis-cli not on PATH: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.CommandContext(ctx, cli, append([]string{"--cluster", command}, args...)...).CombinedOutput()
		if err == nil {
			return string(out), nil
		}
		if command != "check" && strings.Contains(string(out), "Please fix your cluster problems") && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		return string(out), fmt.Errorf("redis-cli --cluster %s %s: %v\n%s", command, strings.Join(args, " "), err, tail(out))
	}
}

// tail returns the last lines of a command's output.
func tail(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// Entry returns the address of a node of the cluster that answers and
// takes part in it (del-node shuts a node down).
func (tc *TestCluster) Entry(ctx context.Context) (string, error) {
	for _, n := range tc.Nodes {
		if n.cmd == nil {
			continue
		}
		c := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
		err := c.Ping(ctx).Err()
		c.Close()
		if err == nil {
			return n.Addr, nil
		}
	}
	return "", fmt.Errorf("no node of the cluster answers")
}

// NodeID returns the cluster id of the node at addr.
func NodeID(ctx context.Context, addr string) (string, error) {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	return c.Do(ctx, "cluster", "myid").Text()
}

// Masters lists the masters that serve slots, ordered by address, as the
// node at an entry point sees them.
func (tc *TestCluster) Masters(ctx context.Context) ([]ClusterNode, error) {
	entry, err := tc.Entry(ctx)
	if err != nil {
		return nil, err
	}
	c := redis.NewClient(&redis.Options{Addr: entry})
	defer c.Close()
	ns, err := ClusterNodes(ctx, c)
	if err != nil {
		return nil, err
	}
	var out []ClusterNode
	for _, n := range ns {
		if n.Master && !n.Failed && len(n.Slots) > 0 {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out, nil
}

// SlotCount returns how many slots n serves.
func (n ClusterNode) SlotCount() int {
	k := 0
	for _, r := range n.Slots {
		k += r[1] - r[0] + 1
	}
	return k
}

// WaitAgreed waits until redis-cli --cluster check finds every node in
// agreement, every slot served and none open.
func (tc *TestCluster) WaitAgreed(ctx context.Context) error {
	var last error
	for {
		entry, err := tc.Entry(ctx)
		if err == nil {
			var out string
			out, err = clusterCLI(ctx, "check", entry)
			if err == nil && strings.Contains(out, "[OK] All 16384 slots covered") && !strings.Contains(out, "[WARNING]") && !strings.Contains(out, "[ERR]") {
				return nil
			}
			if err == nil {
				err = fmt.Errorf("redis-cli --cluster check:\n%s", tail([]byte(out)))
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not in agreement: %w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitConfigAgreed waits until redis-cli --cluster check finds every node
// in agreement on who serves which slot, and every slot served; open slots
// may remain.
func (tc *TestCluster) WaitConfigAgreed(ctx context.Context) error {
	for {
		entry, err := tc.Entry(ctx)
		if err == nil {
			out, _ := clusterCLI(ctx, "check", entry)
			if strings.Contains(out, "[OK] All nodes agree about slots configuration") && strings.Contains(out, "[OK] All 16384 slots covered") {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster configuration not in agreement: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Reshard moves slots slots from the master at from to the master at to
// with redis-cli --cluster reshard, MIGRATE-ing pipeline keys at a time.
func (tc *TestCluster) Reshard(ctx context.Context, from, to string, slots, pipeline int) error {
	fromID, err := NodeID(ctx, from)
	if err != nil {
		return err
	}
	toID, err := NodeID(ctx, to)
	if err != nil {
		return err
	}
	_, err = clusterCLI(ctx, "reshard", to, "--cluster-from", fromID, "--cluster-to", toID,
		"--cluster-slots", strconv.Itoa(slots), "--cluster-yes", "--cluster-pipeline", strconv.Itoa(pipeline))
	if err != nil {
		return err
	}
	return tc.WaitAgreed(ctx)
}

// AddMaster starts a node, joins it to the cluster as a master without
// slots (redis-cli --cluster add-node) and waits until every node agrees.
// The node stops when the test ends.
func (tc *TestCluster) AddMaster(ctx context.Context, tb testing.TB) (*Server, error) {
	tb.Helper()
	entry, err := tc.Entry(ctx)
	if err != nil {
		return nil, err
	}
	s := StartServer(tb, tc.args...)
	tc.Nodes = append(tc.Nodes, s)
	if _, err := clusterCLI(ctx, "add-node", s.Addr, entry); err != nil {
		return s, err
	}
	if err := tc.waitKnown(ctx); err != nil {
		return s, err
	}
	return s, tc.WaitAgreed(ctx)
}

// waitKnown waits until every running node of tc knows every other one:
// redis-cli refuses to move a slot to a node that the source does not know
// yet ("I don't know about node"), and leaves the slot open.
func (tc *TestCluster) waitKnown(ctx context.Context) error {
	var live []string
	for _, n := range tc.Nodes {
		if n.cmd != nil {
			live = append(live, n.Addr)
		}
	}
	want := "cluster_known_nodes:" + strconv.Itoa(len(live)) + "\r"
	for _, addr := range live {
		c := redis.NewClient(&redis.Options{Addr: addr})
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, want) && strings.Contains(info, "cluster_state:ok") {
				break
			}
			select {
			case <-ctx.Done():
				c.Close()
				return fmt.Errorf("node %s does not know the %d nodes: %v", addr, len(live), ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
		c.Close()
	}
	return nil
}

// Rebalance runs redis-cli --cluster rebalance, moving pipeline keys at a
// time; useEmpty gives slots to masters that have none; weights
// ("addr=w") change masters' shares (0 empties a master).
func (tc *TestCluster) Rebalance(ctx context.Context, pipeline int, useEmpty bool, weights ...string) error {
	entry, err := tc.Entry(ctx)
	if err != nil {
		return err
	}
	args := []string{entry, "--cluster-pipeline", strconv.Itoa(pipeline)}
	if useEmpty {
		args = append(args, "--cluster-use-empty-masters")
	}
	for _, w := range weights {
		addr, weight, _ := strings.Cut(w, "=")
		id, err := NodeID(ctx, addr)
		if err != nil {
			return err
		}
		args = append(args, "--cluster-weight", id+"="+weight)
	}
	if _, err := clusterCLI(ctx, "rebalance", args...); err != nil {
		return err
	}
	return tc.WaitAgreed(ctx)
}

// RemoveMaster empties the master at addr (rebalance with its weight 0),
// removes it (redis-cli --cluster del-node, which also shuts it down) and
// waits until the remaining nodes agree.
func (tc *TestCluster) RemoveMaster(ctx context.Context, addr string, pipeline int) error {
	if err := tc.Rebalance(ctx, pipeline, false, addr+"=0"); err != nil {
		return err
	}
	id, err := NodeID(ctx, addr)
	if err != nil {
		return err
	}
	for i, n := range tc.Nodes {
		if n.Addr == addr {
			tc.Nodes = append(tc.Nodes[:i:i], tc.Nodes[i+1:]...)
			defer n.Stop()
			break
		}
	}
	entry, err := tc.Entry(ctx)
	if err != nil {
		return err
	}
	if _, err := clusterCLI(ctx, "del-node", entry, id); err != nil {
		return err
	}
	if err := tc.waitKnown(ctx); err != nil {
		return err
	}
	return tc.WaitAgreed(ctx)
}

// Fix runs redis-cli --cluster fix, which closes open slots, and waits
// until every node agrees.
func (tc *TestCluster) Fix(ctx context.Context) (string, error) {
	entry, err := tc.Entry(ctx)
	if err != nil {
		return "", err
	}
	out, err := clusterCLI(ctx, "fix", entry)
	if err != nil {
		return out, err
	}
	return out, tc.WaitAgreed(ctx)
}

// Forget makes every running node forget the node id (CLUSTER FORGET), as
// an operator does for a dead master that its replica replaced: redis-cli
// --cluster fix refuses to run while a master is unreachable.
func (tc *TestCluster) Forget(ctx context.Context, id string) error {
	for _, n := range tc.Nodes {
		if n.cmd == nil {
			continue
		}
		c := redis.NewClient(&redis.Options{Addr: n.Addr})
		err := c.Do(ctx, "cluster", "forget", id).Err()
		c.Close()
		if err != nil && !strings.Contains(err.Error(), "Unknown node") {
			return fmt.Errorf("CLUSTER FORGET on %s: %w", n.Addr, err)
		}
	}
	return nil
}

// KeySlot returns the hash slot of key.
func KeySlot(ctx context.Context, c *redis.Client, key string) (int, error) {
	n, err := c.ClusterKeySlot(ctx, key).Result()
	return int(n), err
}

// SlotMove is one slot moved by hand from one master to another, as
// redis-cli does it: Begin opens it (IMPORTING on the target, MIGRATING on
// the source), Keys moves some of its keys, Finish moves the rest and
// gives the slot to the target on every master.
type SlotMove struct {
	Slot     int
	From, To *redis.Client
	fromID   string
	toID     string
	toHost   string
	toPort   string
}

// BeginSlotMove opens slot for moving from the master at from to the one
// at to. The clients close when the test ends.
func BeginSlotMove(ctx context.Context, tb testing.TB, slot int, from, to string) (*SlotMove, error) {
	m := &SlotMove{Slot: slot, From: redis.NewClient(&redis.Options{Addr: from}), To: redis.NewClient(&redis.Options{Addr: to})}
	tb.Cleanup(func() { m.From.Close(); m.To.Close() })
	var err error
	if m.fromID, err = m.From.Do(ctx, "cluster", "myid").Text(); err != nil {
		return nil, err
	}
	if m.toID, err = m.To.Do(ctx, "cluster", "myid").Text(); err != nil {
		return nil, err
	}
	m.toHost, m.toPort, _ = strings.Cut(to, ":")
	if err := m.To.Do(ctx, "cluster", "setslot", slot, "importing", m.fromID).Err(); err != nil {
		return nil, err
	}
	if err := m.From.Do(ctx, "cluster", "setslot", slot, "migrating", m.toID).Err(); err != nil {
		return nil, err
	}
	return m, nil
}

// Keys moves keys (of the slot, on the source) to the target.
func (m *SlotMove) Keys(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	args := []any{"migrate", m.toHost, m.toPort, "", 0, 5000, "keys"}
	for _, k := range keys {
		args = append(args, k)
	}
	return m.From.Do(ctx, args...).Err()
}

// Finish moves the slot's remaining keys to the target and gives it the
// slot: on the target, the source, then every other master (masters).
func (m *SlotMove) Finish(ctx context.Context, masters ...string) error {
	for {
		keys, err := m.From.ClusterGetKeysInSlot(ctx, m.Slot, 100).Result()
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			break
		}
		if err := m.Keys(ctx, keys...); err != nil {
			return err
		}
	}
	for _, c := range []*redis.Client{m.To, m.From} {
		if err := c.Do(ctx, "cluster", "setslot", m.Slot, "node", m.toID).Err(); err != nil {
			return err
		}
	}
	for _, addr := range masters {
		c := redis.NewClient(&redis.Options{Addr: addr})
		err := c.Do(ctx, "cluster", "setslot", m.Slot, "node", m.toID).Err()
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
