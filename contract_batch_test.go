package sessioncache_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/lua"
	"github.com/sessioncache/sessioncache/redisstore"
)

// Batching (Options.MaxInFlight): calls that meet a busy Redis node wait and
// go out together as one pipeline. These tests make batches form for sure:
// a gate holds the lone rotations (requests of their own) until every other
// caller waits in a queue, so what follows is one batch per node.

func TestBatching(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		for _, tc := range []struct {
			name string
			run  func(t *testing.T, b *redistest.Backend)
		}{
			{"Results", testBatchResults},
			{"FailingNode", testBatchFailingNode},
			{"CallerLeavesQueue", testBatchCallerLeavesQueue},
			{"CallerLeavesInFlight", testBatchCallerLeavesInFlight},
			{"ScriptCacheLoss", testBatchScriptCacheLoss},
			{"EventContext", testBatchEventContext},
			{"FaultOnEachCall", testBatchFaultOnEachCall},
			{"FewCallersNeverWait", testBatchFewCallersNeverWait},
		} {
			t.Run(tc.name, func(t *testing.T) { tc.run(t, b.Isolated(t)) })
		}
	})
}

// gate is a go-redis hook that holds every lone rotate.lua call (a request
// of its own, not a pipeline) until it is opened.
type gate struct {
	open chan struct{}
	once sync.Once
	held atomic.Int32
}

// newGate returns a closed gate, opened at the latest when the test ends.
func newGate(t *testing.T) *gate {
	g := &gate{open: make(chan struct{})}
	t.Cleanup(g.release)
	return g
}

// release opens the gate.
func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

func (g *gate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if redistest.RunsScript(cmdArgs(cmd), lua.Rotate) {
			select {
			case <-g.open:
			default:
				g.held.Add(1)
				<-g.open
			}
		}
		return next(ctx, cmd)
	}
}

func (g *gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// cmdArgs returns the first two arguments of a command as text.
func cmdArgs(cmd redis.Cmder) []string {
	var out []string
	for _, a := range cmd.Args() {
		if len(out) == 2 {
			break
		}
		s, _ := a.(string)
		out = append(out, s)
	}
	return out
}

// onClient returns a fixture whose store runs on c, a client of b's server
// of the test's own (so that hooks and faults touch no other test).
func onClient(t *testing.T, b *redistest.Backend, c redis.UniversalClient, opt redisstore.Options) *fixture {
	t.Helper()
	own := *b
	own.Client = c
	return newFixture(t, &own, opt)
}

// rotateAll rotates toks[i] on n goroutines at once, holds the lone calls at
// g until the rest wait in queues, and returns every outcome.
func rotateAll(t *testing.T, f *fixture, g *gate, toks []string) ([]redisstore.Grant, []error) {
	t.Helper()
	n := len(toks)
	grants, errs := make([]redisstore.Grant, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			grants[i], errs[i] = f.Store.Rotate(context.Background(), toks[i], redisstore.Client{})
		}()
	}
	waitUntil(t, "every rotation held or queued", func() bool {
		return int(g.held.Load())+int(f.Store.BatchStats().Waiting) == n
	})
	g.release()
	wg.Wait()
	return grants, errs
}

// waitUntil polls cond until it holds, for at most 20 seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// issueN logs in n users (one session each) and returns their tokens.
func issueN(t *testing.T, f *fixture, n int) []string {
	t.Helper()
	toks := make([]string, n)
	for i := range toks {
		toks[i] = f.issue(t, fmt.Sprintf("user-%d", i), laptop).Token
	}
	return toks
}

// testBatchResults: 64 concurrent callers get exactly what they would get
// alone, in batches that really formed, and then keep calling.
func testBatchResults(t *testing.T, b *redistest.Backend) {
	c := b.Faulty(t, nil)
	g := newGate(t)
	c.AddHook(g)
	f := onClient(t, b, c, redisstore.Options{MaxInFlight: 1})
	ctx := context.Background()
	const n = 64
	toks := issueN(t, f, n)
	grants, errs := rotateAll(t, f, g, toks)
	st := f.Store.BatchStats()
	if st.Batched < n-3 || st.Largest < 2 || st.Waited < st.Batched {
		t.Fatalf("stats after %d gated rotations: %+v; want at least %d batched, and as many waited", n, st, n-3)
	}
	t.Logf("%s: %d concurrent rotations: %+v", b.Kind, n, st)
	for i := range grants {
		if errs[i] != nil {
			t.Fatalf("rotation %d: %v", i, errs[i])
		}
		if grants[i].Replayed || grants[i].UserID != fmt.Sprintf("user-%d", i) {
			t.Fatalf("rotation %d: %+v", i, grants[i])
		}
		toks[i] = grants[i].Token
	}
	// More rounds, ungated: every caller rotates, validates its new token
	// and sees its old one refused as rotated.
	rounds := 3
	if b.Kind != redistest.Mini {
		rounds = 20
	}
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				g, err := f.Store.Rotate(ctx, toks[i], redisstore.Client{})
				if err != nil {
					errc <- fmt.Errorf("rotate: %w", err)
					return
				}
				if info, err := f.Store.Validate(ctx, g.Token); err != nil || info.UserID != fmt.Sprintf("user-%d", i) {
					errc <- fmt.Errorf("validate the successor: %+v, %v", info, err)
					return
				}
				var re *redisstore.RevokedError
				if _, err := f.Store.Validate(ctx, toks[i]); !errors.As(err, &re) || re.Reason != redisstore.ReasonRotated {
					errc <- fmt.Errorf("validate the predecessor: %v, want rotated", err)
					return
				}
				toks[i] = g.Token
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	// Issue (n), the gated rotations (n), then per round a rotation, a
	// validation (one read) and a refused validation (two reads).
	st = f.Store.BatchStats()
	if want := uint64(n + n + rounds*n*4); st.Calls != want || st.Requests >= st.Calls || st.Waiting != 0 {
		t.Fatalf("stats at the end: %+v; want %d calls in fewer requests, none waiting", st, want)
	}
	t.Logf("%s: after %d more rounds: %+v (%.1f calls per request)", b.Kind, rounds, st, float64(st.Calls)/float64(st.Requests))
	for i := range toks {
		if s := f.list(t, fmt.Sprintf("user-%d", i)); len(s) != 1 {
			t.Fatalf("user-%d has %d sessions, want 1", i, len(s))
		}
	}
}

// testBatchFailingNode: a node that fails while a batch is in flight is an
// error to every caller of the batch, never a success and never a panic;
// callers on other nodes are served. Retried afterwards, each gets its
// successor: the same one if Redis had rotated (grace), one rotation only.
func testBatchFailingNode(t *testing.T, b *redistest.Backend) {
	ctx := context.Background()
	var failing atomic.Bool
	var victim string // master address on a cluster, "" otherwise
	cc, _ := b.Client.(*redis.ClusterClient)
	nodeOf := func(key string) string {
		if cc == nil {
			return ""
		}
		m, err := cc.MasterForKey(ctx, key)
		if err != nil {
			return "?"
		}
		return m.Options().Addr
	}
	c := b.Faulty(t, func(args []string) redistest.Fault {
		if failing.Load() && redistest.RunsScript(args, lua.Rotate) && len(args) > 3 && nodeOf(args[3]) == victim {
			return redistest.DropReply
		}
		return redistest.Pass
	})
	g := newGate(t)
	c.AddHook(g)
	f := onClient(t, b, c, redisstore.Options{MaxInFlight: 1})
	const n = 64
	toks := issueN(t, f, n)
	onVictim := make([]bool, n)
	victims := 0
	for i, tok := range toks {
		if cc != nil && i == 0 {
			victim = nodeOf(sessionKey(t, f, tok))
		}
		onVictim[i] = nodeOf(sessionKey(t, f, tok)) == victim
		if onVictim[i] {
			victims++
		}
	}
	failing.Store(true)
	grants, errs := rotateAll(t, f, g, toks)
	failing.Store(false)
	if st := f.Store.BatchStats(); st.Batched < n-3 {
		t.Fatalf("no batches formed: %+v", st)
	}
	for i := range toks {
		if !onVictim[i] {
			if errs[i] != nil {
				t.Fatalf("rotation %d on a healthy node: %v", i, errs[i])
			}
			continue
		}
		if errs[i] == nil || grants[i].Token != "" {
			t.Fatalf("rotation %d on the failing node: %+v, %v; want an error", i, grants[i], errs[i])
		}
		for _, o := range []error{redisstore.ErrMalformed, redisstore.ErrUnknown, redisstore.ErrExpired, redisstore.ErrRevoked, redisstore.ErrReused} {
			if errors.Is(errs[i], o) {
				t.Fatalf("rotation %d on the failing node: %v, an outcome, not an infrastructure error", i, errs[i])
			}
		}
	}
	t.Logf("%s: %d of %d rotations on the failing node, all errors; the rest served", b.Kind, victims, n)
	// The node is back: the callers try again with the same tokens.
	for i := range toks {
		if !onVictim[i] {
			continue
		}
		g, err := f.Store.Rotate(ctx, toks[i], redisstore.Client{})
		if err != nil {
			t.Fatalf("retry of rotation %d: %v", i, err)
		}
		if _, err := f.Store.Validate(ctx, g.Token); err != nil {
			t.Fatalf("successor of retried rotation %d: %v", i, err)
		}
		if s := f.list(t, fmt.Sprintf("user-%d", i)); len(s) != 1 {
			t.Fatalf("user-%d has %d sessions after the retry, want 1", i, len(s))
		}
	}
}

// sessionKey returns the Redis key of a token's session, from what the
// store lists: the key ends with the session id (base64url).
func sessionKey(t *testing.T, f *fixture, tok string) string {
	t.Helper()
	info, err := f.Store.Validate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := f.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sid, err := uuid.Parse(info.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	id := base64.RawURLEncoding.EncodeToString(sid[:])
	for _, k := range keys {
		if len(k) > len(id) && k[len(k)-len(id):] == id && k[len(k)-len(id)-3:len(k)-len(id)] == ":s:" {
			return k
		}
	}
	t.Fatalf("no key for session %s", info.SessionID)
	return ""
}

// testBatchCallerLeavesQueue: a caller whose context ends while its call
// waits for a busy node returns at once with the context's error, and its
// call is never sent.
func testBatchCallerLeavesQueue(t *testing.T, b *redistest.Backend) {
	c := b.Faulty(t, nil)
	g := newGate(t)
	c.AddHook(g)
	f := onClient(t, b, c, redisstore.Options{MaxInFlight: 1})
	// Three sessions of one user: one slot, one node.
	toks := []string{f.issue(t, "one", laptop).Token, f.issue(t, "one", laptop).Token, f.issue(t, "one", laptop).Token}
	lone := make(chan error, 1)
	go func() {
		_, err := f.Store.Rotate(context.Background(), toks[0], redisstore.Client{})
		lone <- err
	}()
	waitUntil(t, "the lone rotation is held", func() bool { return g.held.Load() == 1 })

	cancelled, cancel := context.WithCancel(context.Background())
	left := make(chan error, 1)
	go func() {
		_, err := f.Store.Rotate(cancelled, toks[1], redisstore.Client{})
		left <- err
	}()
	waitUntil(t, "the second rotation waits", func() bool { return f.Store.BatchStats().Waiting == 1 })
	cancel()
	select {
	case err := <-left:
		wantErr(t, "rotation whose context was cancelled while it waited", err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting rotation did not return when its context was cancelled")
	}

	short, cancel2 := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel2()
	_, err := f.Store.Rotate(short, toks[2], redisstore.Client{})
	wantErr(t, "rotation whose deadline passed while it waited", err, context.DeadlineExceeded)
	if g.held.Load() != 1 || len(lone) != 0 {
		t.Fatal("the gate opened early")
	}

	g.release()
	if err := <-lone; err != nil {
		t.Fatalf("the lone rotation: %v", err)
	}
	// Neither waiting call was sent: their tokens are still current.
	for _, tok := range toks[1:] {
		if _, err := f.Store.Validate(context.Background(), tok); err != nil {
			t.Fatalf("a token whose rotation was abandoned before it was sent: %v", err)
		}
	}
	waitUntil(t, "no call waits", func() bool { return f.Store.BatchStats().Waiting == 0 })
}

// pipeGate is a go-redis hook that holds the first pipeline of rotations
// until opened.
type pipeGate struct {
	once   sync.Once
	inside chan struct{}
	open   chan struct{}
}

func (g *pipeGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *pipeGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (g *pipeGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		first := false
		if rotations(cmds) {
			g.once.Do(func() { first = true })
		}
		if first {
			close(g.inside)
			<-g.open
		}
		return next(ctx, cmds)
	}
}

// testBatchCallerLeavesInFlight: a caller whose context ends while its
// batch is in flight returns at once; the batch still completes for the
// others, and the store's pooled memory is not reused before it does (the
// race detector watches the rounds that follow).
func testBatchCallerLeavesInFlight(t *testing.T, b *redistest.Backend) {
	c := b.Faulty(t, nil)
	g := newGate(t)
	pg := &pipeGate{inside: make(chan struct{}), open: make(chan struct{})}
	var opened sync.Once
	openPipes := func() { opened.Do(func() { close(pg.open) }) }
	t.Cleanup(openPipes)
	c.AddHook(g)
	c.AddHook(pg)
	f := onClient(t, b, c, redisstore.Options{MaxInFlight: 1})
	ctx := context.Background()
	const n = 8
	toks := issueN(t, f, n)
	grants, errs := make([]redisstore.Grant, n), make([]error, n)
	ctxs, cancels := make([]context.Context, n), make([]context.CancelFunc, n)
	for i := range ctxs {
		ctxs[i], cancels[i] = context.WithCancel(ctx)
	}
	var wg sync.WaitGroup
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			grants[i], errs[i] = f.Store.Rotate(ctxs[i], toks[i], redisstore.Client{})
		}()
	}
	waitUntil(t, "every rotation held or queued", func() bool {
		return int(g.held.Load())+int(f.Store.BatchStats().Waiting) == n
	})
	g.release()
	<-pg.inside // a batch is in flight, held before it is written
	// Every caller leaves: those of the held batch return at once.
	for _, cancel := range cancels {
		cancel()
	}
	returned := make(chan struct{})
	go func() { wg.Wait(); close(returned) }()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("callers of a batch in flight did not return when their contexts were cancelled")
	}
	openPipes()
	left := 0
	for i := range toks {
		switch {
		case errs[i] == nil:
		case errors.Is(errs[i], context.Canceled):
			left++
			// It left. Its rotation may have run: asking again gets the
			// successor (a grace replay) or rotates now.
			g, err := f.Store.Rotate(ctx, toks[i], redisstore.Client{})
			if err != nil {
				t.Fatalf("rotation %d asked again: %v", i, err)
			}
			grants[i] = g
		default:
			t.Fatalf("rotation %d: %v", i, errs[i])
		}
	}
	if left == 0 {
		t.Fatal("no caller left while its batch was in flight")
	}
	for i := range grants {
		if _, err := f.Store.Validate(ctx, grants[i].Token); err != nil {
			t.Fatalf("successor %d: %v", i, err)
		}
		toks[i] = grants[i].Token
	}
	// Keep the pools busy.
	for range 5 {
		for i := range toks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				g, err := f.Store.Rotate(ctx, toks[i], redisstore.Client{})
				if err != nil {
					t.Errorf("rotation %d: %v", i, err)
					return
				}
				toks[i] = g.Token
			}()
		}
		wg.Wait()
	}
}

// testBatchScriptCacheLoss: the script cache is emptied just before a batch
// goes out; every EVALSHA of the batch gets NOSCRIPT, and the batch runs
// again with EVAL, which also loads the script.
func testBatchScriptCacheLoss(t *testing.T, b *redistest.Backend) {
	// Servers of its own: on the shared ones, another package's test may
	// load rotate.lua between the flush and the batch.
	b = b.Private(t)
	c := b.Faulty(t, nil)
	g := newGate(t)
	var evals atomic.Int32
	var flush sync.Once
	c.AddHook(g)
	c.AddHook(pipelineHook(func(ctx context.Context, cmds []redis.Cmder) {
		if rotations(cmds) {
			flush.Do(func() { flushScripts(t, b) })
		}
		for _, cmd := range cmds {
			if a := cmdArgs(cmd); len(a) > 0 && a[0] == "eval" {
				evals.Add(1)
			}
		}
	}))
	f := onClient(t, b, c, redisstore.Options{MaxInFlight: 1})
	const n = 16
	toks := issueN(t, f, n)
	grants, errs := rotateAll(t, f, g, toks)
	for i := range grants {
		if errs[i] != nil {
			t.Fatalf("rotation %d: %v", i, errs[i])
		}
		if _, err := f.Store.Validate(context.Background(), grants[i].Token); err != nil {
			t.Fatalf("successor %d: %v", i, err)
		}
	}
	if evals.Load() == 0 {
		t.Fatal("no batch ran EVAL after NOSCRIPT")
	}
	t.Logf("%s: %d rotations ran again with EVAL", b.Kind, evals.Load())
}

// rotations reports whether a pipeline runs rotate.lua (go-redis sends
// pipelines of its own when it sets a connection up).
func rotations(cmds []redis.Cmder) bool {
	for _, cmd := range cmds {
		if redistest.RunsScript(cmdArgs(cmd), lua.Rotate) {
			return true
		}
	}
	return false
}

// pipelineHook is called before every pipeline is sent.
type pipelineHook func(ctx context.Context, cmds []redis.Cmder)

func (h pipelineHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h pipelineHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h pipelineHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h(ctx, cmds)
		return next(ctx, cmds)
	}
}

func flushScripts(t *testing.T, b *redistest.Backend) {
	ctx := context.Background()
	var err error
	if cc, ok := b.Client.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.ScriptFlush(ctx).Err() })
	} else {
		err = b.Client.ScriptFlush(ctx).Err()
	}
	if err != nil {
		t.Errorf("SCRIPT FLUSH: %v", err)
	}
}

// testBatchEventContext: 16 tabs rotate one token at once, in one batch;
// each grace replay is reported with the context of the call that got it.
func testBatchEventContext(t *testing.T, b *redistest.Backend) {
	type key struct{}
	c := b.Faulty(t, nil)
	g := newGate(t)
	c.AddHook(g)
	var mu sync.Mutex
	seen := map[any]redisstore.EventKind{}
	s := onClient(t, b, c, redisstore.Options{MaxInFlight: 1, Grace: time.Minute,
		OnEvent: func(ctx context.Context, e redisstore.Event) {
			mu.Lock()
			seen[ctx.Value(key{})] = e.Kind
			mu.Unlock()
		}}).Store
	first, err := s.Issue(context.Background(), "alice", laptop)
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	grants, errs := make([]redisstore.Grant, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.WithValue(context.Background(), key{}, i)
			grants[i], errs[i] = s.Rotate(ctx, first.Token, redisstore.Client{})
		}()
	}
	waitUntil(t, "every rotation held or queued", func() bool { return int(g.held.Load())+int(s.BatchStats().Waiting) == n })
	g.release()
	wg.Wait()
	replays := 0
	for i := range n {
		if errs[i] != nil || grants[i].Token != grants[0].Token {
			t.Fatalf("tab %d: %v; want the one successor", i, errs[i])
		}
		kind, ok := seen[i]
		if grants[i].Replayed != ok || ok && kind != redisstore.EventGraceReplay {
			t.Fatalf("tab %d: replayed %v, event %v (%v)", i, grants[i].Replayed, kind, ok)
		}
		if ok {
			replays++
		}
	}
	if replays != n-1 || len(seen) != n-1 {
		t.Fatalf("%d grace replays, %d events; want %d", replays, len(seen), n-1)
	}
}

// testBatchFaultOnEachCall: the first attempt of every rotation is cut half
// way (Redis never runs it; the connection is reset). In one pipeline, each
// cut costs every call behind it an attempt, and go-redis gives up on the
// pipeline after its retries (MaxRetries 3): the store then sends each call
// again alone, with retries of its own. Every rotation succeeds, as it
// would have alone, with the one successor.
func testBatchFaultOnEachCall(t *testing.T, b *redistest.Backend) {
	var mu sync.Mutex
	seen := map[string]bool{}
	c := b.Faulty(t, func(args []string) redistest.Fault {
		if !redistest.RunsScript(args, lua.Rotate) {
			return redistest.Pass
		}
		call := fmt.Sprint(args[2:])
		mu.Lock()
		defer mu.Unlock()
		if seen[call] {
			return redistest.Pass
		}
		seen[call] = true
		return redistest.ResetRequest
	})
	g := newGate(t)
	c.AddHook(g)
	f := onClient(t, b, c, redisstore.Options{MaxInFlight: 1})
	const n = 16
	toks := issueN(t, f, n)
	grants, errs := rotateAll(t, f, g, toks)
	for i := range grants {
		if errs[i] != nil || grants[i].Replayed {
			t.Fatalf("rotation %d: %+v, %v; want a plain rotation", i, grants[i], errs[i])
		}
		if _, err := f.Store.Validate(context.Background(), grants[i].Token); err != nil {
			t.Fatalf("successor %d: %v", i, err)
		}
		var re *redisstore.RevokedError
		if _, err := f.Store.Validate(context.Background(), toks[i]); !errors.As(err, &re) || re.Reason != redisstore.ReasonRotated {
			t.Fatalf("predecessor %d: %v, want rotated", i, err)
		}
	}
	st := f.Store.BatchStats()
	if st.Batched < n-3 {
		t.Fatalf("no batch formed: %+v", st)
	}
	t.Logf("%s: %d rotations, each cut once: %+v", b.Kind, n, st)
}

// testBatchFewCallersNeverWait: with the default MaxInFlight (4), four
// concurrent calls to one node all go out at once, alone; only a fifth
// waits. (All sessions of one user: one slot, one node.)
func testBatchFewCallersNeverWait(t *testing.T, b *redistest.Backend) {
	c := b.Faulty(t, nil)
	g := newGate(t)
	c.AddHook(g)
	f := onClient(t, b, c, redisstore.Options{MaxInFlight: redisstore.DefaultMaxInFlight})
	toks := make([]string, redisstore.DefaultMaxInFlight+1)
	for i := range toks {
		toks[i] = f.issue(t, "one", laptop).Token
	}
	var wg sync.WaitGroup
	errs := make([]error, len(toks))
	rotate := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.Store.Rotate(context.Background(), toks[i], redisstore.Client{})
		}()
	}
	for i := range redisstore.DefaultMaxInFlight {
		rotate(i)
	}
	waitUntil(t, "four lone rotations in flight", func() bool { return g.held.Load() == redisstore.DefaultMaxInFlight })
	if w := f.Store.BatchStats().Waiting; w != 0 {
		t.Fatalf("%d calls wait with %d in flight", w, redisstore.DefaultMaxInFlight)
	}
	rotate(redisstore.DefaultMaxInFlight)
	waitUntil(t, "the fifth rotation waits", func() bool { return f.Store.BatchStats().Waiting == 1 })
	g.release()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
	}
}
