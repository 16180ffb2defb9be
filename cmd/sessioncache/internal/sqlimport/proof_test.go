package sqlimport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// EnvProofFamilies sets how many families TestProof generates: the issue's
// 100,000 for the full run (README, "Migrating from a SQL table"); CI runs
// the default.
const EnvProofFamilies = "SESSIONCACHE_TEST_LEGACY_FAMILIES"

const defaultProofFamilies = 1000

// TestProof is issue 21's proof: on the machine's PostgreSQL, families of 1
// to 5 rows (one in ten revoked, one in ten expired) are imported; then 64
// clients present their legacy tokens and go on rotating. Expected: 0
// honest clients logged out; every replay (an older row before the
// conversion, the legacy token after it, a converted token after its
// rotation) detected; every revoked or expired family refused; the
// imported count equal to the live families, and 0 new on a second run.
// On miniredis, a real Redis and a real 3-master cluster.
func TestProof(t *testing.T) {
	n := defaultProofFamilies
	if v := os.Getenv(EnvProofFamilies); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 20 {
			t.Fatalf("%s=%q: want a number of families, at least 20", EnvProofFamilies, v)
		}
	}
	pool := pgPool(t)
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		ctx := context.Background()
		o := newOldSystem(t, pool)
		fams, err := o.generate(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		const grace = 500 * time.Millisecond
		st := legacyStore(t, b, redisstore.Options{Grace: grace})
		cfg := o.config()
		cfg.Batch, cfg.Workers = 500, 16
		start := time.Now()
		stats, err := newImporter(t, o, st, b, cfg).Run(ctx)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("import: %v", err)
		}
		live, revoked, expired := count(fams, famLive), count(fams, famRevoked), count(fams, famExpired)
		if stats.Created != live || stats.SkippedRevoked != revoked || stats.SkippedExpired != expired || stats.Invalid != 0 {
			t.Fatalf("import: %+v; want %d created, %d revoked and %d expired skipped", stats, live, revoked, expired)
		}
		again, err := newImporter(t, o, st, b, cfg).Run(ctx)
		if err != nil || again.New() != 0 {
			t.Fatalf("second run: %+v, %v; want 0 new", again, err)
		}
		mem := memoryPerFamily(t, b)

		// The clients. Family i (live) is one of: 1 in 20 (with 2 rows or
		// more) replays an older row before presenting its current one; 1
		// in 20 presents its current token from two tabs at once; the rest
		// present it once. Then each rotates 1 to 3 times.
		var honestOut, replays, detected, refused, tabs atomic.Int64
		type client struct {
			first, last string // the converted token, the newest one
			gone        bool   // revoked by its own replay
		}
		clients := make([]client, len(fams))
		run64(len(fams), func(i int) {
			f := fams[i]
			if f.kind != famLive {
				for _, tok := range f.tokens {
					if _, err := st.Rotate(ctx, tok, redisstore.Client{}); errors.Is(err, redisstore.ErrUnknown) {
						refused.Add(1)
					} else {
						t.Errorf("family %d (kind %d): %v, want refused", i, f.kind, err)
					}
				}
				return
			}
			c := &clients[i]
			switch {
			case i%20 == 1 && len(f.tokens) > 1:
				replays.Add(1)
				if _, err := st.Rotate(ctx, f.tokens[0], redisstore.Client{}); errors.Is(err, redisstore.ErrReused) {
					detected.Add(1)
				} else {
					t.Errorf("family %d: an older row: %v, want ErrReused", i, err)
				}
				if _, err := st.Rotate(ctx, f.current(), redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) {
					t.Errorf("family %d: the current row after the replay: %v, want revoked", i, err)
				}
				c.gone = true
				return
			case i%20 == 2:
				var g [2]redisstore.Grant
				var e [2]error
				var wg sync.WaitGroup
				for k := range 2 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						g[k], e[k] = st.Rotate(ctx, f.current(), redisstore.Client{})
					}()
				}
				wg.Wait()
				if e[0] != nil || e[1] != nil || g[0].Token != g[1].Token {
					t.Errorf("family %d: two tabs: %v, %v; want one successor", i, e[0], e[1])
					honestOut.Add(1)
					return
				}
				tabs.Add(1)
				c.first = g[0].Token
			default:
				g, err := st.Rotate(ctx, f.current(), redisstore.Client{})
				if err != nil {
					t.Errorf("family %d: its legacy token: %v", i, err)
					honestOut.Add(1)
					return
				}
				c.first = g.Token
			}
			c.last = c.first
			for r := 0; r < 1+i%3; r++ {
				g, err := st.Rotate(ctx, c.last, redisstore.Client{})
				if err != nil {
					t.Errorf("family %d: rotation %d: %v", i, r, err)
					honestOut.Add(1)
					return
				}
				c.last = g.Token
			}
		})

		// Past grace, 1 in 20 replays its legacy token, 1 in 20 its first
		// converted token; every other client rotates on.
		b.Clock.Advance(grace + 100*time.Millisecond)
		var goingOn atomic.Int64
		run64(len(fams), func(i int) {
			c := &clients[i]
			if fams[i].kind != famLive || c.gone || c.last == "" {
				return
			}
			var replay string
			switch i % 20 {
			case 5:
				replay = fams[i].current()
			case 6:
				replay = c.first
			}
			if replay != "" {
				replays.Add(1)
				if _, err := st.Rotate(ctx, replay, redisstore.Client{}); errors.Is(err, redisstore.ErrReused) {
					detected.Add(1)
				} else {
					t.Errorf("family %d: a replay after grace: %v, want ErrReused", i, err)
				}
				return
			}
			if _, err := st.Rotate(ctx, c.last, redisstore.Client{}); err != nil {
				t.Errorf("family %d: rotating on: %v", i, err)
				honestOut.Add(1)
				return
			}
			goingOn.Add(1)
		})
		if honestOut.Load() != 0 || detected.Load() != replays.Load() || refused.Load() == 0 {
			t.Fatalf("%d honest clients logged out, %d of %d replays detected, %d tokens of revoked or expired families refused",
				honestOut.Load(), detected.Load(), replays.Load(), refused.Load())
		}
		t.Logf("%s: %d families (%d live, %d revoked, %d expired): imported %d in %.1fs (%.0f families/s), second run 0 new; "+
			"64 clients: 0 logged out, %d rotating on, %d two-tab conversions; %d of %d replays detected; %d tokens of revoked or expired families refused%s",
			b.Kind, len(fams), live, revoked, expired, stats.Created, took.Seconds(), float64(len(fams))/took.Seconds(),
			goingOn.Load(), tabs.Load(), detected.Load(), replays.Load(), refused.Load(), mem)
	})
}

// run64 calls f(0) to f(n-1) from 64 goroutines.
func run64(n int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// memoryPerFamily reports the Redis memory of imported families (MEMORY
// USAGE, on real servers): the session hash, its share of the user's
// index, and its share of the lookup hashes (one entry per row).
func memoryPerFamily(t *testing.T, b *redistest.Backend) string {
	if b.Kind == redistest.Mini {
		return ""
	}
	ctx := context.Background()
	keys, err := b.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	usage, entries := make([]*redis.IntCmd, len(keys)), make([]*redis.IntCmd, len(keys))
	for from := 0; from < len(keys); from += 1000 {
		_, err := b.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := from; i < min(from+1000, len(keys)); i++ {
				usage[i] = p.MemoryUsage(ctx, keys[i])
				if strings.HasSuffix(keys[i], "}:l") {
					entries[i] = p.HLen(ctx, keys[i])
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("MEMORY USAGE: %v", err)
		}
	}
	var session, index, lookup, sessions, buckets, lookups int64
	for i, k := range keys {
		switch n := usage[i].Val(); {
		case strings.Contains(k, "}:s:"):
			session += n
			sessions++
		case strings.Contains(k, "}:u:"):
			index += n
		case entries[i] != nil:
			lookup += n
			buckets++
			lookups += entries[i].Val()
		}
	}
	if sessions == 0 || lookups == 0 {
		t.Fatalf("no sessions or lookup entries under %s", b.Prefix)
	}
	return fmt.Sprintf("; Redis memory (MEMORY USAGE) per imported family: %d B: session %d B, user index %d B, lookup entries %d B "+
		"(%.2f rows a family, %d in %d buckets: %d B an entry)", (session+index+lookup)/sessions, session/sessions, index/sessions,
		lookup/sessions, float64(lookups)/float64(sessions), lookups, buckets, lookup/lookups)
}
