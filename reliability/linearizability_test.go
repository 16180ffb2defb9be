package reliability_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// The sequential model of one family (one session): the generation of its
// current token, whether it is revoked, and when the call that made the
// current token started. Every token of the family is named by its
// generation. Grace is longer than any test, so the immediate predecessor is
// always in grace.
type famState struct {
	cur     int
	revoked bool
	lastRot int64 // start of the call that made the current token
}

type linOp int

const (
	opRotate linOp = iota
	opValidate
	opRevoke
)

type linIn struct {
	op    linOp
	gen   int   // of the token presented
	start int64 // when the call started (the store's clock is read right after)
}

// linOut is what the caller saw. kind "error" is an infrastructure error:
// the call may or may not have taken effect.
type linOut struct {
	kind string // rotate: new, replayed, reused, superseded, revoked, unknown; validate: active, inactive; revoke: revoke; any: error
	n    int    // revoke: sessions revoked
}

// step is the model: the next state and the output a call must see.
func step(s famState, in linIn) (famState, linOut) {
	switch in.op {
	case opRotate:
		switch {
		case s.revoked:
			return s, linOut{kind: "revoked"}
		case in.gen == s.cur:
			return famState{cur: s.cur + 1, lastRot: in.start}, linOut{kind: "new"}
		case in.gen == s.cur-1:
			return s, linOut{kind: "replayed"}
		case in.gen < s.cur-1:
			return famState{cur: s.cur, revoked: true, lastRot: s.lastRot}, linOut{kind: "reused"}
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
	return famState{cur: s.cur, revoked: true, lastRot: s.lastRot}, linOut{kind: "revoke", n: 1}
}

// familyModel checks histories in which every call ran at most once in
// Redis.
var familyModel = newFamilyModel(false)

// retryModel checks histories in which a reply may be lost and go-redis
// runs the call again: the caller then sees the second run's answer. A
// rotation that took effect is then answered from the grace window
// ("replayed"), or, if another call rotated again or revoked the session in
// between, refused without harm ("superseded", "revoked"): the caller lost
// its successor, the session did not suffer.
var retryModel = newFamilyModel(true)

func newFamilyModel(retried bool) porcupine.NondeterministicModel {
	return porcupine.NondeterministicModel{
		Init: func() []any { return []any{famState{}} },
		Step: func(state, input, output any) []any {
			s, in, out := state.(famState), input.(linIn), output.(linOut)
			next, want := step(s, in)
			switch {
			case out.kind == "error":
				if next == s {
					return []any{s}
				}
				return []any{s, next}
			case out == want:
				return []any{next}
			case want.kind == "reused" && out.kind == "superseded" && in.start < s.lastRot:
				// An older token in a call that started before the last
				// rotation (a late retry, or a race) is refused without
				// revoking; one that started after it is a replay. The store
				// compares milliseconds, so "reused" stays legal here too.
				return []any{s}
			case retried && want.kind == "new" && (out.kind == "replayed" || out.kind == "superseded" || out.kind == "revoked"):
				return []any{next}
			}
			return nil
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(linIn), output.(linOut)
			return fmt.Sprintf("%s(g%d) -> %s/%d", [...]string{"rotate", "validate", "revoke"}[in.op], in.gen, out.kind, out.n)
		},
		DescribeState: func(state any) string { return fmt.Sprintf("%+v", state.(famState)) },
	}
}

// genOf reads the generation out of a token (bytes 30..34 of its payload).
func genOf(tok string) int {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, redisstore.DefaultTokenPrefix))
	if err != nil || len(raw) < 34 {
		return -1
	}
	return int(binary.BigEndian.Uint32(raw[30:34]))
}

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

// runFamily drives one family from workers goroutines, each making ops
// calls, and returns it with its history.
func runFamily(st store, user string, workers, ops int, base time.Time) (*family, error) {
	ctx := context.Background()
	g, err := st.Issue(ctx, user, redisstore.Client{})
	if err != nil {
		return nil, err
	}
	f := &family{tokens: map[int]string{0: g.Token}}
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
				switch r := rand.IntN(100); {
				case r < 35:
					in.op = opRotate
					in.gen, tok = pickTok(latest)
				case r < 45 && latest > 0:
					in.op = opRotate
					in.gen, tok = pickTok(latest - 1)
				case r < 46 && latest > 1:
					in.op = opRotate
					in.gen, tok = pickTok(rand.IntN(latest - 1))
				case r < 99:
					in.op = opValidate
					in.gen, tok = pickTok(rand.IntN(latest + 1))
				default:
					in.op = opRevoke
					in.gen, tok = pickTok(rand.IntN(latest + 1))
				}
				f.mu.Unlock()
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				call := time.Since(base).Nanoseconds()
				in.start = call
				out := linOut{}
				switch in.op {
				case opRotate:
					var revokedErr *redisstore.RevokedError
					g, err := st.Rotate(cctx, tok, redisstore.Client{})
					switch {
					case err == nil && g.Replayed:
						out.kind = "replayed"
					case err == nil:
						out.kind = "new"
					case errors.Is(err, redisstore.ErrReused):
						out.kind = "reused"
					case errors.As(err, &revokedErr) && revokedErr.Reason == redisstore.ReasonRotated:
						out.kind = "superseded"
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
				f.mu.Lock()
				f.history = append(f.history, porcupine.Operation{ClientId: w, Input: in, Call: call, Output: out, Return: ret})
				f.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return f, nil
}

// TestLinearizable records concurrent histories of rotations, replays,
// validations and revocations of single families against real Redis, and
// checks each with porcupine against the sequential model: once directly,
// once through the fault proxy with a delay on every packet and one command
// in ten cut half way (the connection reset; go-redis retries on a new
// one). Each successor must also be the same token whoever receives it.
func TestLinearizable(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	cases := []struct {
		name  string
		fault redistest.Fault
		model porcupine.NondeterministicModel
	}{
		{"direct", redistest.Pass, familyModel},
		{"latency+resets", redistest.ResetRequest, familyModel},
		{"latency+lost-replies", redistest.DropReply, retryModel},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := srv.Addr
			var p *redistest.Proxy
			if tc.fault != redistest.Pass {
				p = redistest.StartProxy(t, srv.Addr, redistest.ProxyConfig{Delay: time.Millisecond})
				p.SetRule(func(args []string) redistest.Fault {
					switch strings.ToLower(args[0]) {
					case "evalsha", "eval", "hmget":
						if !isIssue(args) && rand.IntN(10) == 0 {
							return tc.fault
						}
					}
					return redistest.Pass
				})
				addr = p.Addr
			}
			c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
			t.Cleanup(func() { c.Close() })
			st := wrap(t, c, redisstore.Options{KeyPrefix: redistest.NewPrefix(), Grace: time.Hour, IdleTTL: 2 * time.Hour})
			families, workers, ops := pick(16, 400), 4, pick(25, 50)
			base := time.Now()
			fams := make([]*family, families)
			errs := make([]error, families)
			var wg sync.WaitGroup
			for i := range fams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					fams[i], errs[i] = runFamily(st, fmt.Sprintf("lin-%d", i), workers, ops, base)
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
					n.add(op.Output.(linOut).kind, 1)
				}
				res, info := porcupine.CheckOperationsVerbose(tc.model.ToModel(), f.history, 10*time.Second)
				n.add("check_"+string(res), 1)
				if res != porcupine.Ok {
					path := fmt.Sprintf("%s/family-%d.html", t.TempDir(), i)
					porcupine.VisualizePath(tc.model.ToModel(), info, path)
					illegal = append(illegal, fmt.Sprintf("family %d: %s (visualisation: %s)", i, res, path))
				}
			}
			kv := []any{"families", families, "ops", families * workers * ops, "new", n.get("new"), "replayed", n.get("replayed"),
				"reused", n.get("reused"), "refused_revoked", n.get("revoked"), "revoke_calls", n.get("revoke"), "validations", n.get("active") + n.get("inactive"),
				"errors", n.get("error"), "linearizable", n.get("check_Ok"), "recorded_in", ms(recorded), "checked_in", ms(time.Since(checkStart))}
			if p != nil {
				kv = append(kv, "commands_cut", p.Stats().ResetRequest, "replies_dropped", p.Stats().Dropped)
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

// TestModelRejects proves the checker can fail: histories that break the
// model are refused.
func TestModelRejects(t *testing.T) {
	m := familyModel.ToModel()
	op := func(c int, in linIn, out linOut, call, ret int64) porcupine.Operation {
		in.start = call
		return porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret}
	}
	bad := map[string][]porcupine.Operation{
		"two new successors of one token": {
			op(0, linIn{op: opRotate, gen: 0}, linOut{kind: "new"}, 0, 10),
			op(1, linIn{op: opRotate, gen: 0}, linOut{kind: "new"}, 1, 11),
		},
		"revoked family validates": {
			op(0, linIn{op: opRevoke, gen: 0}, linOut{kind: "revoke", n: 1}, 0, 10),
			op(1, linIn{op: opValidate, gen: 0}, linOut{kind: "active"}, 20, 30),
		},
		"replay after the last rotation answered as a late retry": {
			op(0, linIn{op: opRotate, gen: 0}, linOut{kind: "new"}, 0, 10),
			op(0, linIn{op: opRotate, gen: 1}, linOut{kind: "new"}, 20, 30),
			op(1, linIn{op: opRotate, gen: 0}, linOut{kind: "superseded"}, 40, 50),
		},
		"grandparent in grace": {
			op(0, linIn{op: opRotate, gen: 0}, linOut{kind: "new"}, 0, 10),
			op(0, linIn{op: opRotate, gen: 1}, linOut{kind: "new"}, 20, 30),
			op(1, linIn{op: opRotate, gen: 0}, linOut{kind: "replayed"}, 40, 50),
		},
		"replay reported as reuse": {
			op(0, linIn{op: opRotate, gen: 0}, linOut{kind: "new"}, 0, 10),
			op(1, linIn{op: opRotate, gen: 0}, linOut{kind: "reused"}, 20, 30),
		},
	}
	for name, h := range bad {
		if porcupine.CheckOperations(m, h) {
			t.Errorf("%s: accepted", name)
		}
	}
	good := []porcupine.Operation{
		op(0, linIn{op: opRotate, gen: 0}, linOut{kind: "new"}, 0, 10),
		op(1, linIn{op: opRotate, gen: 0}, linOut{kind: "replayed"}, 1, 11),
		op(2, linIn{op: opRotate, gen: 0}, linOut{kind: "error"}, 2, 1<<62),
		op(0, linIn{op: opValidate, gen: 1}, linOut{kind: "active"}, 20, 30),
	}
	if !porcupine.CheckOperations(m, good) {
		t.Error("a valid history was refused")
	}
}
