package redisstore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Batching. Most of what Redis spends on a short script or a GET is the
// request around it: reading the socket, parsing, writing the reply. So
// calls to one Redis node (a master of a cluster) share requests when they
// are many. A call that finds fewer than Options.MaxInFlight requests in
// flight to its node, and no call waiting, goes out at once, alone, exactly
// as it would without batching. Otherwise it joins the node's queue; when a
// request to the node completes and fewer than maxLoops pipelines are in
// flight, what is queued (up to maxBatch calls) goes out as one pipeline, and
// that pipeline's loop keeps sending what queued meanwhile until the queue is
// empty. No call ever waits on a timer: a few callers never queue at all.

// A call is one script run (or one plain command) sent through the batcher.
type call struct {
	script *redis.Script // nil: args is the whole command
	keys   []string
	args   []any
	route  string // a key of the call: its node

	// Set while the call is queued or in flight in a batch.
	ctx   context.Context
	cmd   *redis.Cmd
	state atomic.Int32
	done  chan struct{} // one signal when a batch completes the call
}

// States of a queued call: whoever moves it out of pending owns the ending.
const (
	callPending int32 = iota
	callDone          // the batch completed it (and signals done)
	callLeft          // its caller's context ended first; the caller is gone
)

// The batching numbers, stated here only (Options.MaxInFlight, the package
// doc and the READMEs point here).

// maxBatch bounds the calls of one pipeline, so that one request never
// holds Redis long; the rest wait for the next.
const maxBatch = 256

// maxLoops bounds the pipelines in flight to one node (of the MaxInFlight
// requests): two, so that Redis runs one while the client reads the other's
// replies and the next one fills. More split the waiting calls into smaller
// pipelines, which cost Redis more per call; fewer leave Redis idle between
// pipelines. A lone call never waits for them: while the queue is empty, it
// takes any free request.
const maxLoops = 2

// lane is the queue of one node.
type lane struct {
	mu       sync.Mutex
	inflight int // requests in flight: lone calls and batch loops
	loops    int // batch loops running
	queue    []*call
}

// batcher sends the store's calls to rdb, batching those that meet a busy
// node.
type batcher struct {
	rdb     redis.UniversalClient
	cluster *redis.ClusterClient // rdb, if it is a cluster
	limit   int                  // requests in flight per node; 0: no batching
	one     lane                 // the node of a non-cluster client
	lanes   sync.Map             // cluster: master address -> *lane

	calls, requests, batched, waited, largest, moving atomic.Uint64
	waiting                                           atomic.Int64
}

func newBatcher(rdb redis.UniversalClient, limit int) *batcher {
	b := &batcher{rdb: rdb, limit: limit}
	b.cluster, _ = rdb.(*redis.ClusterClient)
	return b
}

// BatchStats counts how a Store's calls went to Redis: Rotate, Validate,
// Issue and the other calls of one script each. Calls/Requests is the mean
// number of calls a request carried.
type BatchStats struct {
	// Calls is how many calls were sent.
	Calls uint64
	// Requests is how many requests (round trips) carried them: a call sent
	// alone, or a pipeline of calls that waited for a busy node.
	Requests uint64
	// Batched is how many calls went out in a pipeline with others.
	Batched uint64
	// Waited is how many calls found their node busy and waited, whether
	// they then went out in a pipeline, alone, or not at all (their
	// context ended first).
	Waited uint64
	// Largest is the most calls one pipeline carried.
	Largest uint64
	// Moving is how many times a call was sent again because Redis had
	// refused it, unrun, while its hash slot moved between cluster nodes
	// (TRYAGAIN, or ASK and MOVED beyond go-redis's redirects), or while the
	// slot had no master (CLUSTERDOWN).
	Moving uint64
	// Waiting is how many calls wait for a busy node now.
	Waiting int64
}

// stats returns the counts since newBatcher.
func (b *batcher) stats() BatchStats {
	return BatchStats{Calls: b.calls.Load(), Requests: b.requests.Load(), Batched: b.batched.Load(), Waited: b.waited.Load(),
		Largest: b.largest.Load(), Moving: b.moving.Load(), Waiting: b.waiting.Load()}
}

// runOnce sends c and returns its command, done. owned is false if c's
// caller left (its context ended) while c was queued or in flight: the
// batcher still uses c, which must not be reused; the command then holds
// the context's error. run (moving.go) sends c again while its slot moves.
func (b *batcher) runOnce(ctx context.Context, c *call) (cmd *redis.Cmd, owned bool) {
	if b.limit == 0 {
		b.calls.Add(1)
		b.requests.Add(1)
		return c.alone(ctx, b.rdb), true
	}
	l := b.lane(ctx, c.route)
	l.mu.Lock()
	if l.inflight < b.limit && len(l.queue) == 0 {
		l.inflight++
		l.mu.Unlock()
		b.calls.Add(1)
		b.requests.Add(1)
		cmd = c.alone(ctx, b.rdb)
		b.release(l)
		return cmd, true
	}
	if err := ctx.Err(); err != nil {
		l.mu.Unlock()
		return errCmd(ctx, err), true
	}
	if c.done == nil {
		c.done = make(chan struct{}, 1)
	}
	c.ctx, c.cmd = ctx, nil
	c.state.Store(callPending)
	l.queue = append(l.queue, c)
	b.waiting.Add(1)
	b.waited.Add(1)
	l.mu.Unlock()
	select {
	case <-c.done:
	case <-ctx.Done():
		if c.state.CompareAndSwap(callPending, callLeft) {
			return errCmd(ctx, ctx.Err()), false
		}
		<-c.done // completed meanwhile: its answer is on the way
	}
	cmd, c.ctx, c.cmd = c.cmd, nil, nil
	return cmd, true
}

// lane returns the queue of the node that holds key.
func (b *batcher) lane(ctx context.Context, key string) *lane {
	if b.cluster == nil {
		return &b.one
	}
	addr := ""
	if m, err := b.cluster.MasterForKey(ctx, key); err == nil {
		addr = m.Options().Addr
	}
	// A failed lookup shares one lane (""): its calls fail or are routed
	// by go-redis.
	if l, ok := b.lanes.Load(addr); ok {
		return l.(*lane)
	}
	l, _ := b.lanes.LoadOrStore(addr, &lane{})
	return l.(*lane)
}

// release ends a lone call's request: if calls queued meanwhile, the slot
// passes to a loop that sends them, on a goroutine of its own so that the
// caller returns at once.
func (b *batcher) release(l *lane) {
	l.mu.Lock()
	if len(l.queue) == 0 || l.loops >= maxLoops {
		l.inflight--
		l.mu.Unlock()
		return
	}
	l.loops++
	batch := b.take(l, nil)
	l.mu.Unlock()
	go b.loop(l, batch)
}

// loop sends batches to l's node until its queue is empty.
func (b *batcher) loop(l *lane, batch []*call) {
	for {
		b.send(batch)
		clear(batch)
		l.mu.Lock()
		if len(l.queue) == 0 {
			l.inflight--
			l.loops--
			l.mu.Unlock()
			return
		}
		batch = b.take(l, batch[:0])
		l.mu.Unlock()
	}
}

// take moves up to maxBatch queued calls of l to dst. l.mu is held.
func (b *batcher) take(l *lane, dst []*call) []*call {
	n := min(len(l.queue), maxBatch)
	b.waiting.Add(-int64(n))
	dst = append(dst, l.queue[:n]...)
	rest := copy(l.queue, l.queue[n:])
	clear(l.queue[rest:])
	l.queue = l.queue[:rest]
	return dst
}

// send runs a batch of queued calls and completes each. Calls whose callers
// have left are skipped; a single call goes out alone, with its own context.
func (b *batcher) send(batch []*call) {
	n := 0
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.finish(errCmd(c.ctx, err))
			continue
		}
		batch[n] = c
		n++
	}
	batch = batch[:n]
	b.calls.Add(uint64(n))
	switch n {
	case 0:
		return
	case 1:
		b.requests.Add(1)
		c := batch[0]
		c.finish(c.alone(c.ctx, b.rdb))
		return
	}
	b.requests.Add(1)
	b.batched.Add(uint64(n))
	for {
		m := b.largest.Load()
		if uint64(n) <= m || b.largest.CompareAndSwap(m, uint64(n)) {
			break
		}
	}
	ctx, cancel := batchContext(batch)
	defer cancel()
	pipe := b.rdb.Pipeline()
	cmds := make([]*redis.Cmd, n)
	for i, c := range batch {
		if c.script != nil {
			cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
		} else {
			cmds[i] = pipe.Do(ctx, c.args...)
		}
	}
	pipe.Exec(ctx) // each command holds its own error
	// A script cache emptied by a restart or a failover: EVALSHA did not
	// run the script, so EVAL runs it (and caches it again).
	var again redis.Pipeliner
	for i, c := range batch {
		if c.script != nil && redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
			if again == nil {
				again = b.rdb.Pipeline()
			}
			cmds[i] = c.script.Eval(ctx, again, c.keys, c.args...)
		}
	}
	if again != nil {
		again.Exec(ctx)
	}
	for i, c := range batch {
		if !netErr(cmds[i].Err()) || c.ctx.Err() != nil {
			c.finish(cmds[i])
			continue
		}
		// The request failed on the network, after go-redis's retries of
		// the whole pipeline. A fault that each of several calls met on
		// its own request (a reset, a lost reply) has cost every call of
		// the pipeline an attempt: send each again alone, with retries of
		// its own, so that no call gets fewer attempts than it would have
		// had alone. The scripts recognise a retry by its call id.
		b.requests.Add(1)
		go func() { c.finish(c.alone(c.ctx, b.rdb)) }()
	}
}

// netErr reports whether err is a failure to reach Redis or to read its
// answer, rather than Redis's answer (an error reply, or redis.Nil).
func netErr(err error) bool {
	var re redis.Error
	return err != nil && !errors.As(err, &re)
}

// batchContext is the context of a batch's request: the values of its first
// call's context (for tracing hooks), none of their cancellations (a caller
// who leaves must not fail the others), and the latest of their deadlines
// if they all have one (for ContextTimeoutEnabled clients).
func batchContext(batch []*call) (context.Context, context.CancelFunc) {
	ctx := context.WithoutCancel(batch[0].ctx)
	var last time.Time
	for _, c := range batch {
		d, ok := c.ctx.Deadline()
		if !ok {
			return ctx, func() {}
		}
		if d.After(last) {
			last = d
		}
	}
	return context.WithDeadline(ctx, last)
}

// alone sends c as a request of its own: EVALSHA, and EVAL on NOSCRIPT.
func (c *call) alone(ctx context.Context, rdb redis.UniversalClient) *redis.Cmd {
	if c.script != nil {
		return c.script.Run(ctx, rdb, c.keys, c.args...)
	}
	return rdb.Do(ctx, c.args...)
}

// finish completes a queued call, unless its caller has left.
func (c *call) finish(cmd *redis.Cmd) {
	c.cmd = cmd
	if c.state.CompareAndSwap(callPending, callDone) {
		c.done <- struct{}{}
	}
}

func errCmd(ctx context.Context, err error) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}
