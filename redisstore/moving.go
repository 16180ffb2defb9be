package redisstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Moving slots. While redis-cli --cluster reshard or rebalance moves a hash
// slot, the slot's keys go from the source master to the target a few at a
// time (MIGRATE), so a user's session hash and index can sit on different
// nodes for a while. Redis runs a script only where all of its keys are:
// the source answers ASK when none of them is there any more, TRYAGAIN when
// some are; the target (after ASKING) answers TRYAGAIN unless it holds them
// all. A script that names a key that does not exist yet (Issue's new
// session) therefore gets TRYAGAIN until the slot's last key has moved. So
// a script never runs on a node that holds only part of its keys, and never
// mistakes a key that moved for one that is missing, as long as both nodes
// keep the slot's migration state (a failover of either loses it on Redis
// 7: RELIABILITY.md). Within a script running on the source, a command on a
// key the node does not hold fails after the commands before it ran, which
// is why the scripts never delete a key they write again (tombstone in the
// scripts).
//
// go-redis follows MOVED and ASK (sending ASKING first) for a command alone
// and in a pipeline, but within ClusterOptions.MaxRedirects (3) hops, each
// ASK, MOVED and TRYAGAIN counting as one; it retries TRYAGAIN a few times
// within some 50 ms for a command alone, and never in a pipeline. A slot
// holding many keys takes longer than that to move. Every one of these
// refusals comes before the script runs, so the store sends the call again,
// with growing pauses, until it runs, its context ends, or
// movingAttempts were refused; BatchStats.Moving counts the sends again.
// CLUSTERDOWN (a slot without a master, during a failover) is refused
// before running too and is retried alike.

// movingAttempts bounds the attempts of one call refused while its slot
// moves: with the pauses below, 1.7 to 3.4 seconds in all.
const movingAttempts = 40

// The pause before the n-th attempt again doubles from movingMinPause up to
// movingMaxPause, with jitter. A call whose context ends during a pause
// returns Redis's last refusal.
const (
	movingMinPause = 2 * time.Millisecond
	movingMaxPause = 100 * time.Millisecond
)

// run sends c (see runOnce), and sends it again while Redis refuses it
// unrun because its slot is moving.
func (b *batcher) run(ctx context.Context, c *call) (*redis.Cmd, bool) {
	for attempt := 1; ; attempt++ {
		cmd, owned := b.runOnce(ctx, c)
		if !owned || attempt >= movingAttempts || !slotMoving(cmd.Err()) {
			return cmd, owned
		}
		pause := min(movingMaxPause, movingMinPause<<min(attempt-1, 10))
		t := time.NewTimer(pause/2 + rand.N(pause/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return cmd, owned
		case <-t.C:
		}
		b.moving.Add(1)
	}
}

// slotMoving reports whether err is Redis refusing a command, before
// running it, because the command's slot is moving or has no master.
func slotMoving(err error) bool {
	if err == nil {
		return false
	}
	for _, p := range [...]string{"TRYAGAIN", "ASK ", "MOVED ", "CLUSTERDOWN"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// touchAndWait runs touch.lua on key, then WAIT for n replicas, in one
// pipeline on the master c (see awaitReplicas). On a cluster, a slot that
// moves (or moved since the client's slot map) sends touch.lua on with ASK
// or MOVED: the write it follows happened on the node that holds key now,
// so the pipeline goes there (after ASKING, for ASK), up to 3 hops, and the
// WAIT counts that node's replicas.
func (s *Store) touchAndWait(ctx context.Context, c *redis.Client, key string, args []any, n int) (touch, wait *redis.Cmd, err error) {
	asking := false
	for hop := 0; ; hop++ {
		_, err = c.Pipelined(ctx, func(p redis.Pipeliner) error {
			if asking {
				p.Do(ctx, "asking")
			}
			touch = scriptTouch.Eval(ctx, p, []string{key}, args...)
			wait = p.Do(ctx, "wait", n, s.opt.ReplicationTimeout.Milliseconds())
			return nil
		})
		cc, _ := s.rdb.(*redis.ClusterClient)
		addr, ask := redirection(touch.Err())
		if addr == "" || cc == nil || hop == 3 {
			return touch, wait, err
		}
		if c, err = masterAt(ctx, cc, addr); err != nil {
			return touch, wait, err
		}
		asking = ask
	}
}

// redirection returns the node an ASK or MOVED error names, and whether it
// is an ASK.
func redirection(err error) (addr string, ask bool) {
	for _, p := range [...]string{"ASK ", "MOVED "} {
		if redis.HasErrorPrefix(err, p) {
			if f := strings.Fields(err.Error()); len(f) == 3 {
				return f[2], p == "ASK "
			}
		}
	}
	return "", false
}

// masterAt returns cc's client of the master at addr.
func masterAt(ctx context.Context, cc *redis.ClusterClient, addr string) (*redis.Client, error) {
	var mu sync.Mutex
	var found *redis.Client
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		if c.Options().Addr == addr {
			mu.Lock()
			found = c
			mu.Unlock()
		}
		return nil
	})
	if err == nil && found == nil {
		err = fmt.Errorf("no master at %s", addr)
	}
	return found, err
}
