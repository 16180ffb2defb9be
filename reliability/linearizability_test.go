package reliability_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/internal/tokenlayout"
	"github.com/sessioncache/sessioncache/redisstore"
)

// The sequential model of one family (one session), after rotate.lua's
// contract: the generation of its current token, whether it is revoked, and
// what the script keeps to answer a retry of a call (go-redis runs a call
// again, with the same call id, after a lost reply). Every token of the
// family is named by its generation, every call the proxy hurts by a number
// (0: a call that is never retried). Grace is longer than any test, so the
// immediate predecessor is always in grace.
type famState struct {
	cur     int
	revoked bool
	// reusedBy is the call that detected reuse and revoked the family (the
	// tombstone's q): its retry answers "reused" again.
	reusedBy int
	// sCall and pCall: the calls that created the current token and its
	// predecessor (the ends of the fields s and p).
	sCall, pCall int
}

type linOp int

const (
	opRotate linOp = iota
	opValidate
	opRevoke
)

// attempt says which part of a rotation whose first reply was lost an
// operation stands for.
type attempt int

const (
	// whole: the call was not hurt, or went wrong as a whole.
	whole attempt = iota
	// first: the attempt whose reply the proxy dropped after Redis ran it,
	// from the call to the moment its retry reached the proxy. It took
	// effect; nobody saw its answer.
	first
	// retry: go-redis's retry, with the same call id, from then to the
	// return; the caller sees its answer.
	retry
	// maybe: every attempt before the retry, when the test cannot tell
	// whether Redis ran it: with batching, a connection carries a pipeline
	// of calls, and when the proxy closes it after dropping one reply (or
	// cuts one request), the calls behind lose their replies too, or never
	// reach Redis. It took effect or it did not; nobody saw its answer.
	maybe
)

type linIn struct {
	op      linOp
	gen     int // of the token presented
	call    int // rotations the proxy hurts: the call's number; 0 otherwise
	attempt attempt
}

// linOut is what the caller saw. kind "error" is an infrastructure error:
// the call may or may not have taken effect; "lost" is the answer of a
// first attempt, which nobody saw.
type linOut struct {
	kind string // rotate: new, replayed, reused, revoked, unknown; validate: active, inactive; revoke: revoke; any: error, lost
	n    int    // revoke: sessions revoked
}

// step is the model: the next state and the output a call must see. A
// rotation runs rotate.lua's checks in its order: the current token
// rotates; a revoked session refuses (but the call that revoked it for reuse
// gets "reused" again); the call that created the current token or its
// predecessor gets that token again ("new"); the immediate predecessor gets
// a grace replay, which writes nothing; an older token revokes the session
// for reuse.
func step(s famState, in linIn) (famState, linOut) {
	switch in.op {
	case opRotate:
		tagged := in.call != 0
		switch {
		case !s.revoked && in.gen == s.cur:
			return famState{cur: s.cur + 1, sCall: in.call, pCall: s.sCall}, linOut{kind: "new"}
		case s.revoked && tagged && in.call == s.reusedBy:
			return s, linOut{kind: "reused"}
		case s.revoked:
			return s, linOut{kind: "revoked"}
		case tagged && (in.call == s.sCall || in.call == s.pCall):
			return s, linOut{kind: "new"}
		case in.gen == s.cur-1:
			return s, linOut{kind: "replayed"}
		case in.gen < s.cur-1:
			return famState{cur: s.cur, revoked: true, reusedBy: in.call}, linOut{kind: "reused"}
		}
		return s, linOut{kind: "unknown"}
	case opValidate:
		if !s.revoked && in.gen == s.cur {
			return s, linOut{kind: "active"}
		}
		return s, linOut{kind: "inactive"}
	}
	if s.revoked {
		return s, linOut{kind: "revoke", n: 0}
	}
	return famState{cur: s.cur, revoked: true, reusedBy: s.reusedBy}, linOut{kind: "revoke", n: 1}
}

// linModel checks histories against step: every operation takes effect
// at one moment between its call and its return.
var linModel = porcupine.NondeterministicModel{
	Init: func() []any { return []any{famState{}} },
	Step: func(state, input, output any) []any {
		s, in, out := state.(famState), input.(linIn), output.(linOut)
		next, want := step(s, in)
		switch {
		case in.attempt == first:
			return []any{next}
		case in.attempt == maybe || out.kind == "error":
			if next == s {
				return []any{s}
			}
			return []any{s, next}
		case out == want:
			return []any{next}
		}
		return nil
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linIn), output.(linOut)
		call := ""
		if in.attempt != whole {
			call = fmt.Sprintf(", call %d %s", in.call, [...]string{"", "first attempt", "retry", "earlier attempts, run or not"}[in.attempt])
		}
		return fmt.Sprintf("%s(g%d%s) -> %s/%d", [...]string{"rotate", "validate", "revoke"}[in.op], in.gen, call, out.kind, out.n)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%+v", state.(famState)) },
}

// genOf reads the generation out of a token.
func genOf(tok string) int { return tokenlayout.Generation(tok, redisstore.DefaultTokenPrefix) }

// family is one session under concurrent use, and its recorded history.
type family struct {
	mu      sync.Mutex
	tokens  map[int]string // every token seen, by generation
	history []porcupine.Operation
	bad     []string // successors that differ for one generation
}

// latest returns the newest generation seen. The caller holds f.mu.
func (f *family) latest() int {
	latest := -1
	for g := range f.tokens {
		latest = max(latest, g)
	}
	return latest
}

func (f *family) learn(tok string) {
	g := genOf(tok)
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, ok := f.tokens[g]; ok && old != tok {
		f.bad = append(f.bad, fmt.Sprintf("two different tokens of generation %d", g))
	}
	f.tokens[g] = tok
}

// dropUA starts the user agent of a rotation whose first attempt the
// proxy is to hurt, callUA that of every other rotation through the proxy;
// the rest names the call, up to a ';' (see taggedUA).
const (
	dropUA = "reliability-drop/"
	callUA = "reliability-call/"
)

// dropper is a proxy rule that sees every attempt of every rotation (each
// carries a user agent that names its call) and notes when the last one
// arrived. With drop, it drops the reply of the first attempt of every
// rotation sent with a dropUA user agent and lets every other rotation
// through; without, it asks other about rotations too. It asks other about
// every other command.
type dropper struct {
	base  time.Time
	drop  bool
	other func(args []string) redistest.Fault
	// sure: the first attempt of a dropUA rotation surely ran (the store
	// sends each call alone, so no other fault can close its connection
	// before Redis reads it).
	sure   bool
	mu     sync.Mutex
	tries  map[string]int   // user agent -> attempts seen
	lastAt map[string]int64 // user agent -> when its last attempt arrived (ns since base)
}

func (d *dropper) rule(args []string) redistest.Fault {
	if !isRotate(args) {
		return d.other(args)
	}
	ua := taggedUA(args, dropUA)
	target := ua != ""
	if !target {
		ua = taggedUA(args, callUA)
	}
	if ua != "" {
		d.mu.Lock()
		d.tries[ua]++
		n := d.tries[ua]
		if n > 1 {
			d.lastAt[ua] = time.Since(d.base).Nanoseconds()
		}
		d.mu.Unlock()
		if d.drop && target && n == 1 {
			return redistest.DropReply
		}
	}
	if d.drop {
		return redistest.Pass
	}
	return d.other(args)
}

// retried reports whether the call sent with user agent ua was attempted
// more than once, when its last attempt reached the proxy, and what its
// earlier attempts are to the model.
func (d *dropper) retried(ua string) (int64, attempt, bool) {
	if d == nil || ua == "" {
		return 0, whole, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tries[ua] < 2 {
		return 0, whole, false
	}
	earlier := maybe
	if d.sure && d.tries[ua] == 2 && strings.HasPrefix(ua, dropUA) {
		earlier = first
	}
	return d.lastAt[ua], earlier, true
}

// runFamily drives one family from workers goroutines, each making ops
// calls, and returns it with its history. With a dropper, every rotation
// carries a user agent that names its call, and one in four (with drop)
// loses the reply of its first attempt; a rotation attempted more than once
// is recorded as two operations: its earlier attempts and the last one.
func runFamily(st store, user string, workers, ops int, base time.Time, d *dropper) (*family, error) {
	ctx := context.Background()
	g, err := st.Issue(ctx, user, redisstore.Client{})
	if err != nil {
		return nil, err
	}
	f := &family{tokens: map[int]string{0: g.Token}}
	var calls atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < ops; i++ {
				f.mu.Lock()
				latest := f.latest()
				pickTok := func(gen int) (int, string) { return gen, f.tokens[gen] }
				var in linIn
				var tok string
				// In per mille: a theft or a logout ends the family, so they
				// are rare enough that most families live through most of
				// their calls.
				switch r := rand.IntN(1000); {
				case r < 350:
					in.op = opRotate
					in.gen, tok = pickTok(latest)
				case r < 450 && latest > 0:
					in.op = opRotate
					in.gen, tok = pickTok(latest - 1)
				case r < 453 && latest > 1:
					in.op = opRotate
					in.gen, tok = pickTok(rand.IntN(latest - 1))
				case r < 997:
					in.op = opValidate
					in.gen, tok = pickTok(rand.IntN(latest + 1))
				default:
					in.op = opRevoke
					in.gen, tok = pickTok(rand.IntN(latest + 1))
				}
				f.mu.Unlock()
				var client redisstore.Client
				if in.op == opRotate && d != nil {
					in.call = int(calls.Add(1))
					tag := callUA
					if d.drop && rand.IntN(4) == 0 {
						tag = dropUA
					}
					client.UserAgent = fmt.Sprintf("%s%s/%d;", tag, user, in.call)
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				call := time.Since(base).Nanoseconds()
				out := linOut{}
				switch in.op {
				case opRotate:
					var revokedErr *redisstore.RevokedError
					g, err := st.Rotate(cctx, tok, client)
					switch {
					case err == nil && g.Replayed:
						out.kind = "replayed"
					case err == nil:
						out.kind = "new"
					case errors.Is(err, redisstore.ErrReused): // before ErrRevoked, which it matches too
						out.kind = "reused"
					case errors.As(err, &revokedErr) && revokedErr.Reason == redisstore.ReasonRotated:
						// Only Validate reports a rotated token.
						out.kind = "rotated"
					case errors.Is(err, redisstore.ErrRevoked):
						out.kind = "revoked"
					case errors.Is(err, redisstore.ErrUnknown):
						out.kind = "unknown"
					default:
						out.kind = "error"
					}
					if err == nil {
						if genOf(g.Token) != in.gen+1 {
							f.mu.Lock()
							f.bad = append(f.bad, fmt.Sprintf("rotate(g%d) returned generation %d", in.gen, genOf(g.Token)))
							f.mu.Unlock()
						}
						f.learn(g.Token)
					}
				case opValidate:
					_, err := st.Validate(cctx, tok)
					switch {
					case err == nil:
						out.kind = "active"
					case errors.Is(err, redisstore.ErrRevoked):
						out.kind = "inactive"
					case errors.Is(err, redisstore.ErrUnknown), errors.Is(err, redisstore.ErrExpired):
						out.kind = "unknown"
					default:
						out.kind = "error"
					}
				case opRevoke:
					n, err := st.RevokeToken(cctx, tok)
					out = linOut{kind: "revoke", n: n}
					if err != nil {
						out = linOut{kind: "error"}
					}
				}
				cancel()
				ret := time.Since(base).Nanoseconds()
				if out.kind == "error" {
					ret = 1 << 62 // may take effect at any time after the call
				}
				recorded := []porcupine.Operation{{ClientId: w, Input: in, Call: call, Output: out, Return: ret}}
				if at, earlier, ok := d.retried(client.UserAgent); ok {
					firstIn, retryIn := in, in
					firstIn.attempt, retryIn.attempt = earlier, retry
					recorded = []porcupine.Operation{
						{ClientId: w, Input: firstIn, Call: call, Output: linOut{kind: "lost"}, Return: at},
						{ClientId: w, Input: retryIn, Call: at + 1, Output: out, Return: ret},
					}
				}
				f.mu.Lock()
				f.history = append(f.history, recorded...)
				f.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return f, nil
}

// TestLinearizable records concurrent histories of rotations, replays,
// validations and revocations of single families against real Redis, and
// checks each with porcupine against the sequential model (linModel):
// once directly; once through the fault proxy with a delay on every packet
// and one command in ten cut half way (the connection reset: Redis never
// ran it; go-redis retries on a new connection); once with lost replies:
// one rotation in four loses the reply of its first attempt after Redis ran
// it, and one other command in ten (validations, revocations) too. Each
// successor must also be the same token whoever receives it. Every case
// runs with batching (MaxInFlight 1: any two concurrent calls share a
// request) and without: with batching, a fault on one command of a pipeline
// hurts the commands behind it too, so the test cannot tell whether an
// attempt before a retry ran, and the model lets it have run or not.
func TestLinearizable(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	type lcase struct {
		name     string
		fault    redistest.Fault
		inflight int
	}
	var cases []lcase
	for _, m := range []struct {
		name     string
		inflight int
	}{{"batched", 1}, {"unbatched", redisstore.NoBatching}} {
		for _, f := range []struct {
			name  string
			fault redistest.Fault
		}{{"direct", redistest.Pass}, {"latency+resets", redistest.ResetRequest}, {"latency+lost-replies", redistest.DropReply}} {
			cases = append(cases, lcase{m.name + "/" + f.name, f.fault, m.inflight})
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := srv.Addr
			base := time.Now()
			var p *redistest.Proxy
			var d *dropper
			if tc.fault != redistest.Pass {
				p = redistest.StartProxy(t, srv.Addr, redistest.ProxyConfig{Delay: time.Millisecond})
				rule := func(args []string) redistest.Fault {
					switch strings.ToLower(args[0]) {
					case "evalsha", "eval", "hget":
						if !isIssue(args) && rand.IntN(10) == 0 {
							return tc.fault
						}
					}
					return redistest.Pass
				}
				d = &dropper{base: base, drop: tc.fault == redistest.DropReply, other: rule, sure: tc.inflight < 0,
					tries: map[string]int{}, lastAt: map[string]int64{}}
				p.SetRule(d.rule)
				addr = p.Addr
			}
			c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
			t.Cleanup(func() { c.Close() })
			st := wrap(t, c, redisstore.Options{KeyPrefix: redistest.NewPrefix(), Grace: redisstore.MaxGrace, IdleTTL: 2 * time.Hour, MaxInFlight: tc.inflight})
			// Load the scripts: a first attempt answered NOSCRIPT would not
			// have run.
			if err := st.Ping(bg(t)); err != nil {
				t.Fatal(err)
			}
			families, workers, ops := pick(16, 400), 4, pick(25, 50)
			fams := make([]*family, families)
			errs := make([]error, families)
			var wg sync.WaitGroup
			for i := range fams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					fams[i], errs[i] = runFamily(st, fmt.Sprintf("lin-%d", i), workers, ops, base, d)
				}()
			}
			wg.Wait()
			recorded := time.Since(base)
			var n counter
			var illegal []string
			checkStart := time.Now()
			for i, f := range fams {
				if errs[i] != nil {
					t.Fatalf("family %d: %v", i, errs[i])
				}
				for _, b := range f.bad {
					t.Errorf("family %d: %s", i, b)
				}
				for _, op := range f.history {
					kind := op.Output.(linOut).kind
					n.add(kind, 1)
					if op.Input.(linIn).attempt == retry {
						n.add("retried", 1)
						n.add("retried_"+kind, 1)
					}
				}
				res, info := porcupine.CheckOperationsVerbose(linModel.ToModel(), f.history, 10*time.Second)
				n.add("check_"+string(res), 1)
				if res != porcupine.Ok {
					path := fmt.Sprintf("%s/family-%d.html", t.TempDir(), i)
					porcupine.VisualizePath(linModel.ToModel(), info, path)
					illegal = append(illegal, fmt.Sprintf("family %d: %s (visualisation: %s)", i, res, path))
					t.Logf("family %d, history by call time:\n%s\nlongest linearizable prefix:\n%s", i, describeHistory(f.history), longestPrefix(info))
				}
			}
			kv := []any{"families", families, "calls", families * workers * ops, "new", n.get("new"), "replayed", n.get("replayed"),
				"reused", n.get("reused"), "refused_revoked", n.get("revoked"), "revoke_calls", n.get("revoke"), "validations", n.get("active") + n.get("inactive"),
				"errors", n.get("error"), "linearizable", n.get("check_Ok"), "recorded_in", ms(recorded), "checked_in", ms(time.Since(checkStart))}
			if p != nil {
				kv = append(kv, "commands_cut", p.Stats().ResetRequest, "replies_dropped", p.Stats().Dropped,
					"retried_rotations", n.get("retried"), "retried_new", n.get("retried_new"), "retried_replayed", n.get("retried_replayed"),
					"retried_reused", n.get("retried_reused"), "retried_revoked", n.get("retried_revoked"))
				if p.Stats().ResetRequest+p.Stats().Dropped == 0 {
					t.Error("the proxy hurt no command")
				}
			}
			figure(t, "linearizability/"+tc.name, kv...)
			if len(illegal) > 0 {
				t.Errorf("%d of %d histories are not linearizable:\n%s", len(illegal), families, strings.Join(illegal, "\n"))
			}
		})
	}
}

// describeHistory lists a history by call time, one call a line, in
// microseconds since the start of the recording.
func describeHistory(h []porcupine.Operation) string {
	h = slices.Clone(h)
	slices.SortFunc(h, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	var b strings.Builder
	for _, op := range h {
		ret := "never"
		if op.Return < 1<<62 {
			ret = fmt.Sprint(op.Return / 1000)
		}
		fmt.Fprintf(&b, "  client %d [%d, %s] %s\n", op.ClientId, op.Call/1000, ret, linModel.DescribeOperation(op.Input, op.Output))
	}
	return b.String()
}

// longestPrefix describes the longest sequence of operations that the
// model accepts (where the checker got stuck), with the state after each.
func longestPrefix(info porcupine.LinearizationInfo) string {
	var longest []porcupine.Operation
	for _, part := range info.PartialLinearizationsOperations() {
		for _, l := range part {
			if len(l) > len(longest) {
				longest = l
			}
		}
	}
	var b strings.Builder
	s := famState{}
	for _, op := range longest {
		s, _ = step(s, op.Input.(linIn))
		fmt.Fprintf(&b, "  client %d %s => %s\n", op.ClientId, linModel.DescribeOperation(op.Input, op.Output), linModel.DescribeState(s))
	}
	return b.String()
}

// TestModelRejects proves the checker can fail: histories that break the
// model are refused, and histories the contract allows are accepted.
func TestModelRejects(t *testing.T) {
	m := linModel.ToModel()
	op := func(c int, in linIn, out linOut, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret}
	}
	rot := func(gen int) linIn { return linIn{op: opRotate, gen: gen} }
	validate := func(gen int) linIn { return linIn{op: opValidate, gen: gen} }
	revoke := func(gen int) linIn { return linIn{op: opRevoke, gen: gen} }
	// Call 1 presents g0; its first reply is lost (0-50), its retry runs
	// at 51-100.
	firstOf := func(gen int) linIn { return linIn{op: opRotate, gen: gen, call: 1, attempt: first} }
	retryOf := func(gen int) linIn { return linIn{op: opRotate, gen: gen, call: 1, attempt: retry} }
	// The same, when the test cannot tell whether the first attempt ran.
	maybeOf := func(gen int) linIn { return linIn{op: opRotate, gen: gen, call: 1, attempt: maybe} }
	lost := linOut{kind: "lost"}
	bad := map[string][]porcupine.Operation{
		"two new successors of one token": {
			op(0, rot(0), linOut{kind: "new"}, 0, 10),
			op(1, rot(0), linOut{kind: "new"}, 1, 11),
		},
		"revoked family validates": {
			op(0, revoke(0), linOut{kind: "revoke", n: 1}, 0, 10),
			op(1, validate(0), linOut{kind: "active"}, 20, 30),
		},
		"grandparent in grace": {
			op(0, rot(0), linOut{kind: "new"}, 0, 10),
			op(0, rot(1), linOut{kind: "new"}, 20, 30),
			op(1, rot(0), linOut{kind: "replayed"}, 40, 50),
		},
		"replay reported as reuse": {
			op(0, rot(0), linOut{kind: "new"}, 0, 10),
			op(1, rot(0), linOut{kind: "reused"}, 20, 30),
		},
		"Rotate reports a rotated token (the old superseded outcome)": {
			op(0, rot(0), linOut{kind: "new"}, 0, 10),
			op(0, rot(1), linOut{kind: "new"}, 20, 30),
			op(1, rot(0), linOut{kind: "rotated"}, 40, 50),
		},
		"a first attempt that took no effect": {
			op(0, firstOf(0), lost, 0, 50),
			op(1, validate(0), linOut{kind: "active"}, 60, 70),
			op(0, retryOf(0), linOut{kind: "new"}, 51, 100),
		},
		"retry that rotates again": {
			op(0, firstOf(0), lost, 0, 50),
			op(0, retryOf(0), linOut{kind: "new"}, 51, 100),
			op(1, validate(1), linOut{kind: "inactive"}, 110, 120),
		},
		"late retry seen as reuse (bug 2)": {
			op(0, firstOf(0), lost, 0, 50),
			op(1, rot(0), linOut{kind: "replayed"}, 10, 20),
			op(1, rot(1), linOut{kind: "new"}, 30, 40),
			op(0, retryOf(0), linOut{kind: "reused"}, 51, 100),
		},
		"late retry answered from the grace window": {
			op(0, firstOf(0), lost, 0, 50),
			op(1, rot(0), linOut{kind: "replayed"}, 10, 20),
			op(0, retryOf(0), linOut{kind: "replayed"}, 51, 100),
		},
		"retry answered revoked, session never revoked": {
			op(0, firstOf(0), lost, 0, 50),
			op(0, retryOf(0), linOut{kind: "revoked"}, 51, 100),
		},
		"retry of a reuse detection answered revoked": {
			op(1, rot(0), linOut{kind: "new"}, 0, 10),
			op(1, rot(1), linOut{kind: "new"}, 20, 30),
			op(0, firstOf(0), lost, 40, 50),
			op(0, retryOf(0), linOut{kind: "revoked"}, 51, 100),
		},
		// Whether or not an earlier attempt ran, what others saw can pin
		// it down.
		"late retry seen as reuse, earlier attempt unsure": {
			op(0, maybeOf(0), lost, 0, 50),
			op(1, rot(0), linOut{kind: "replayed"}, 10, 20),
			op(1, rot(1), linOut{kind: "new"}, 30, 40),
			op(0, retryOf(0), linOut{kind: "reused"}, 51, 100),
		},
		"late retry answered from the grace window, earlier attempt unsure": {
			op(0, maybeOf(0), lost, 0, 50),
			op(1, rot(0), linOut{kind: "replayed"}, 10, 20),
			op(0, retryOf(0), linOut{kind: "replayed"}, 51, 100),
		},
		"retry that rotates again, earlier attempt unsure": {
			op(0, maybeOf(0), lost, 0, 50),
			op(0, retryOf(0), linOut{kind: "new"}, 51, 100),
			op(1, validate(1), linOut{kind: "inactive"}, 110, 120),
		},
		"retry of a reuse detection answered revoked, earlier attempt unsure": {
			op(1, rot(0), linOut{kind: "new"}, 0, 10),
			op(1, rot(1), linOut{kind: "new"}, 20, 30),
			op(0, maybeOf(0), lost, 40, 50),
			op(0, retryOf(0), linOut{kind: "revoked"}, 51, 100),
		},
	}
	for name, h := range bad {
		if porcupine.CheckOperations(m, h) {
			t.Errorf("%s: accepted", name)
		}
	}
	good := map[string][]porcupine.Operation{
		"grace replay and a failed call": {
			op(0, rot(0), linOut{kind: "new"}, 0, 10),
			op(1, rot(0), linOut{kind: "replayed"}, 1, 11),
			op(2, rot(0), linOut{kind: "error"}, 2, 1<<62),
			op(0, validate(1), linOut{kind: "active"}, 20, 30),
		},
		"late retry gets its first attempt's successor": {
			op(0, firstOf(0), lost, 0, 50),
			op(1, rot(0), linOut{kind: "replayed"}, 10, 20),
			op(1, rot(1), linOut{kind: "new"}, 30, 40),
			op(0, retryOf(0), linOut{kind: "new"}, 51, 100),
			op(1, validate(2), linOut{kind: "active"}, 110, 120),
		},
		"retry of a reuse detection": {
			op(1, rot(0), linOut{kind: "new"}, 0, 10),
			op(1, rot(1), linOut{kind: "new"}, 20, 30),
			op(0, firstOf(0), lost, 40, 50),
			op(0, retryOf(0), linOut{kind: "reused"}, 51, 100),
		},
		// A grace replay writes nothing: its retry is a new presentation.
		"retry of a grace replay after one more rotation": {
			op(1, rot(0), linOut{kind: "new"}, 0, 10),
			op(0, firstOf(0), lost, 20, 50),
			op(1, rot(1), linOut{kind: "new"}, 30, 40),
			op(0, retryOf(0), linOut{kind: "reused"}, 51, 100),
		},
		"retry after a revocation": {
			op(0, firstOf(0), lost, 0, 50),
			op(1, rot(0), linOut{kind: "replayed"}, 10, 20),
			op(1, revoke(1), linOut{kind: "revoke", n: 1}, 30, 40),
			op(0, retryOf(0), linOut{kind: "revoked"}, 51, 100),
		},
		// rotate.lua remembers the calls that created the current token and
		// its predecessor: after two more rotations, call 1's retry is a
		// replay of a grandparent (see TestRetryAfterConcurrentRotation).
		"retry after two more rotations": {
			op(0, firstOf(0), lost, 0, 50),
			op(1, rot(0), linOut{kind: "replayed"}, 10, 20),
			op(1, rot(1), linOut{kind: "new"}, 22, 30),
			op(1, rot(2), linOut{kind: "new"}, 32, 40),
			op(0, retryOf(0), linOut{kind: "reused"}, 51, 100),
		},
		// With batching, a call behind a dropped reply may never have
		// reached Redis: its retry is then its only run.
		"an earlier attempt that took no effect": {
			op(0, maybeOf(0), lost, 0, 50),
			op(1, validate(0), linOut{kind: "active"}, 60, 70),
			op(0, retryOf(0), linOut{kind: "new"}, 51, 100),
		},
		"an earlier attempt that took effect": {
			op(0, maybeOf(0), lost, 0, 50),
			op(1, validate(1), linOut{kind: "active"}, 52, 60),
			op(0, retryOf(0), linOut{kind: "new"}, 51, 100),
		},
	}
	for name, h := range good {
		if !porcupine.CheckOperations(m, h) {
			t.Errorf("%s: refused", name)
		}
	}
}
