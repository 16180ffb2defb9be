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
// another proof; the key holds neither the proof's jti nor its jkt, expires
// by itself, and of any number of concurrent checks of one proof exactly
// one passes.
func TestReplays(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		ctx := context.Background()
		const ttl = 300 * time.Millisecond
		r := NewReplays(b.Client, b.Prefix, ttl)
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
			if !strings.HasPrefix(k, b.Prefix+"dpop:") || strings.Contains(k, p.JTI) || strings.Contains(k, p.JKT) {
				t.Errorf("key %q: want %sdpop:<hash>, holding neither jti nor jkt", k, b.Prefix)
			}
			pttl, err := b.Client.PTTL(ctx, k).Result()
			if err != nil || pttl <= 0 || pttl > ttl {
				t.Errorf("key %q has TTL %v (%v), want at most %v", k, pttl, err, ttl)
			}
		}
		b.Clock.Advance(ttl + 10*time.Millisecond)
		if b.Kind != redistest.Mini {
			// A real server expires keys by its own clock: poll.
			deadline := time.Now().Add(5 * time.Second)
			for b.Client.Exists(ctx, r.Key(p)).Val() == 1 && time.Now().Before(deadline) {
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
