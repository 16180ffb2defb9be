package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// invFamily is one family under the invariant run.
type invFamily struct {
	mu         sync.Mutex
	tokens     map[int]string
	successors map[int]int // generation -> rotations that created it (not replays)
	revokedAt  time.Time   // when a call that revoked it returned
}

// TestInvariants runs many goroutines over many families for a while, on
// every backend, mixing rotations of the current token, grace replays of
// its predecessor, replays of older tokens (theft), validations and
// logouts, and checks as it goes and at the end:
//   - at most one token of a family is active, and no generation gets two
//     successors;
//   - a successor is the same token whoever receives it;
//   - once a call that revoked a family has returned, no later call
//     validates or rotates any of its tokens.
func TestInvariants(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		dur := pick(1500*time.Millisecond, time.Minute)
		families, workers := pick(200, 5000), pick(32, 64)
		if b.Kind == redistest.Mini {
			dur, families = pick(500*time.Millisecond, 10*time.Second), 50 // miniredis runs Lua at about 3k calls/s
		}
		st := wrap(t, b.Client, redisstore.Options{KeyPrefix: b.Prefix, Grace: redisstore.MaxGrace, IdleTTL: 2 * time.Hour})
		ctx := context.Background()
		var mu sync.Mutex
		live := make([]*invFamily, families)
		var all []*invFamily
		var n counter
		var violations []string
		violate := func(format string, args ...any) {
			mu.Lock()
			if len(violations) < 20 {
				violations = append(violations, fmt.Sprintf(format, args...))
			}
			mu.Unlock()
		}
		newFamily := func(i int) *invFamily {
			g, err := st.Issue(ctx, fmt.Sprintf("inv-%d", i), redisstore.Client{})
			if err != nil {
				t.Errorf("Issue: %v", err)
				return nil
			}
			f := &invFamily{tokens: map[int]string{0: g.Token}, successors: map[int]int{}}
			mu.Lock()
			all = append(all, f)
			mu.Unlock()
			return f
		}
		for i := range live {
			live[i] = newFamily(i)
		}
		var ops atomic.Int64
		stop := time.Now().Add(dur)
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					i := rand.IntN(families)
					mu.Lock()
					f := live[i]
					mu.Unlock()
					if f == nil {
						return
					}
					f.mu.Lock()
					latest := -1
					for g := range f.tokens {
						latest = max(latest, g)
					}
					gen, kind := latest, "rotate"
					switch r := rand.IntN(100); {
					case r < 15 && latest > 0:
						gen = latest - 1
					case r < 16 && latest > 1:
						gen = rand.IntN(latest - 1)
					case r < 56:
						kind, gen = "validate", rand.IntN(latest+1)
					case r < 57:
						kind, gen = "revoke", rand.IntN(latest+1)
					}
					tok := f.tokens[gen]
					f.mu.Unlock()
					callStart := time.Now()
					ops.Add(1)
					switch kind {
					case "rotate":
						g, err := st.Rotate(ctx, tok, redisstore.Client{})
						n.add("rotate_"+errClass(err), 1)
						f.mu.Lock()
						revoked := !f.revokedAt.IsZero() && callStart.After(f.revokedAt)
						switch {
						case err == nil && revoked:
							violate("a revoked family rotated generation %d", gen)
						case err == nil:
							if g.Replayed {
								n.add("replayed", 1)
							} else {
								f.successors[gen+1]++
								if f.successors[gen+1] > 1 {
									violate("generation %d got %d successors", gen, f.successors[gen+1])
								}
							}
							if old, ok := f.tokens[gen+1]; ok && old != g.Token {
								violate("two different successors of generation %d", gen)
							}
							f.tokens[gen+1] = g.Token
						case errors.Is(err, redisstore.ErrReused) && f.revokedAt.IsZero():
							f.revokedAt = time.Now()
						}
						f.mu.Unlock()
					case "validate":
						_, err := st.Validate(ctx, tok)
						n.add("validate_"+errClass(err), 1)
						f.mu.Lock()
						if err == nil && !f.revokedAt.IsZero() && callStart.After(f.revokedAt) {
							violate("a revoked family validated generation %d", gen)
						}
						f.mu.Unlock()
					case "revoke":
						k, err := st.RevokeToken(ctx, tok)
						n.add("revoke_"+errClass(err), 1)
						f.mu.Lock()
						if err == nil && k == 1 && f.revokedAt.IsZero() {
							f.revokedAt = time.Now()
						}
						f.mu.Unlock()
					}
					// A revoked family is retired and replaced by a new login.
					f.mu.Lock()
					retired := !f.revokedAt.IsZero()
					f.mu.Unlock()
					if retired {
						mu.Lock()
						replace := live[i] == f
						if replace {
							live[i] = nil
						}
						mu.Unlock()
						if replace {
							nf := newFamily(i)
							mu.Lock()
							live[i] = nf
							mu.Unlock()
						}
					}
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		// At the end: at most one active token per family; none in a
		// revoked one.
		for _, f := range all {
			active := 0
			for _, tok := range f.tokens {
				if _, err := st.Validate(ctx, tok); err == nil {
					active++
				}
			}
			if active > 1 || active > 0 && !f.revokedAt.IsZero() {
				violate("a family (revoked: %v) has %d active tokens", !f.revokedAt.IsZero(), active)
			}
		}
		figure(t, "invariants/"+string(b.Kind), "duration", ms(elapsed), "workers", workers, "families", len(all),
			"calls", ops.Load(), "calls_per_s", int(float64(ops.Load())/elapsed.Seconds()),
			"rotated", n.get("rotate_ok")-n.get("replayed"), "replayed", n.get("replayed"), "reuse", n.get("rotate_reused"),
			"logouts", n.get("revoke_ok"), "violations", len(violations))
		t.Logf("outcomes: %v", &n)
		for _, v := range violations {
			t.Error(v)
		}
	})
}
