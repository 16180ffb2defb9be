package dpop

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

// On every backend: a jti is accepted once; the same jti of another key is
// another proof; the keys hold neither the proof's jti nor its jkt, expire
// by themselves (a proof is remembered for one to two windows), and of any
// number of concurrent checks of one proof exactly one passes.
func TestReplays(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		ctx := context.Background()
		const ttl = 300 * time.Millisecond
		r := NewReplays(b.Client, b.Prefix, ttl, b.Clock.Now)
		p := Proof{JKT: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I", JTI: "-BwC3ESc6acc2lTc"}
		if err := r.Check(ctx, p); err != nil {
			t.Fatalf("first use: %v", err)
		}
		if err := r.Check(ctx, p); !errors.Is(err, ErrInvalid) || Reason(err) != ReasonReplayed {
			t.Fatalf("a replay: %v, want ErrInvalid, replayed", err)
		}
		if err := r.Check(ctx, Proof{JKT: "another-key", JTI: p.JTI}); err != nil {
			t.Errorf("the same jti of another key: %v", err)
		}
		keys, err := b.Keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 2 {
			t.Fatalf("keys %q, want 2", keys)
		}
		for _, k := range keys {
			if !strings.HasPrefix(k, b.Prefix+"dpop:{") || strings.Contains(k, p.JTI) || strings.Contains(k, p.JKT) {
				t.Errorf("key %q: want %sdpop:{<bucket>}:<window>, holding neither jti nor jkt", k, b.Prefix)
			}
			pttl, err := b.Client.PTTL(ctx, k).Result()
			if err != nil || pttl <= 0 || pttl > 2*ttl {
				t.Errorf("key %q has TTL %v (%v), want at most two windows, %v", k, pttl, err, 2*ttl)
			}
			fields, err := b.Client.HGetAll(ctx, k).Result()
			for f := range fields {
				if err != nil || len(f) != 8 || strings.Contains(p.JTI, f) {
					t.Errorf("field %q of %q (%v): want 8 bytes of a hash", f, k, err)
				}
			}
		}
		// Within the window: still refused.
		b.Clock.Advance(ttl / 2)
		if err := r.Check(ctx, p); Reason(err) != ReasonReplayed {
			t.Fatalf("a replay half a window later: %v, want refused", err)
		}
		b.Clock.Advance(2*ttl + 10*time.Millisecond)
		if b.Kind != redistest.Mini {
			// A real server expires keys by its own clock: poll.
			deadline := time.Now().Add(5 * time.Second)
			for n, _ := b.Keys(ctx); len(n) > 0 && time.Now().Before(deadline); n, _ = b.Keys(ctx) {
				time.Sleep(5 * time.Millisecond)
			}
		}
		if err := r.Check(ctx, p); err != nil {
			t.Errorf("after the window: %v, want accepted (the cache forgot it)", err)
		}

		race := Proof{JKT: p.JKT, JTI: "raced"}
		var ok atomic.Int32
		var wg sync.WaitGroup
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r.Check(ctx, race) == nil {
					ok.Add(1)
				}
			}()
		}
		wg.Wait()
		if ok.Load() != 1 {
			t.Errorf("%d of 32 concurrent uses of one proof passed, want 1", ok.Load())
		}
	})
}
