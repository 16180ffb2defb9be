package redisstore

import (
	"context"
	"math/rand/v2"
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
// session) therefore gets TRYAGAIN until the slot's last key has moved. A
// script never runs on a node that holds only part of its keys, so it never
// mistakes a key that moved for one that is missing.
//
// go-redis follows MOVED and ASK (sending ASKING first) for a command alone
// and in a pipeline, but within ClusterOptions.MaxRedirects (3) hops, each
// ASK, MOVED and TRYAGAIN counting as one; it retries TRYAGAIN a few times
// within some 50 ms for a command alone, and never in a pipeline. A slot
// holding many keys takes longer than that to move. Every one of these
// refusals comes before the script runs, so the store sends the call again,
// with growing pauses, until it runs, its context ends, or
// movingAttempts were refused; BatchStats.Moving counts the calls sent
// again. CLUSTERDOWN (a slot without a master, during a failover) is refused
// before running too and is retried alike.

// movingAttempts bounds the attempts of one call refused while its slot
// moves: with the pauses below, about 3.5 seconds in all.
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
