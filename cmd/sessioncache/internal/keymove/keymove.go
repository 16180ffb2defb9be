// Package keymove moves a store's data from the Redis it moves from onto
// the Redis it runs on (redisstore.Options.MoveFrom): it walks the old
// keyspace with SCAN and moves every key of the store with
// redisstore.Store.MoveKey, as the store's own calls do for the users they
// touch. A walk is idempotent and resumes by itself: a moved key is gone
// from the old Redis, so a second walk finds only what is left.
package keymove

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/redisstore"
)

// Config configures a walk. The zero value of every field but Prefix
// means its default.
type Config struct {
	// Prefix is the store's key prefix. Every key of the store starts with
	// Prefix and '{'; the walk skips the rest (the service's DPoP replay
	// caches, an import's checkpoint).
	Prefix string
	// Rate bounds the keys moved per second, to spare both Redises; 0: no
	// bound.
	Rate float64
	// Workers is how many keys are moved at once. Default: 8.
	Workers int
	// ScanCount is SCAN's COUNT. Default: 500.
	ScanCount int64
	// Progress is how often the walk logs its progress. Default: 10s.
	Progress time.Duration
	// Log receives the progress lines. Default: discarded.
	Log *slog.Logger
}

// Mover moves one key: *redisstore.Store, made with Options.MoveFrom.
type Mover interface {
	MoveKey(ctx context.Context, key string) (int, error)
}

// Stats counts a walk.
type Stats struct {
	Seen    int64 // keys of the store SCAN returned
	Moved   int64 // keys written on the new Redis
	Skipped int64 // keys under the prefix that are not the store's
	Left    int64 // keys of the store on the old Redis after the walk
	Markers int64 // moved markers on the old Redis after the walk (not moved; they expire)
}

// Attrs returns the counts as log attributes.
func (s Stats) Attrs() []any {
	return []any{"seen", s.Seen, "moved", s.Moved, "skipped", s.Skipped, "left", s.Left, "markers", s.Markers}
}

// Run walks the old Redis once and moves every key of the store it finds,
// then counts the keys of the store left there (written meanwhile by a
// service instance still on the old Redis: run it again). It stops at the
// first error, or when ctx ends; whatever it moved stays moved.
func Run(ctx context.Context, m Mover, old redis.UniversalClient, cfg Config) (Stats, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.ScanCount <= 0 {
		cfg.ScanCount = 500
	}
	if cfg.Progress <= 0 {
		cfg.Progress = 10 * time.Second
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var seen, moved, skipped atomic.Int64
	keys := make(chan string, cfg.Workers)
	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				n, err := m.MoveKey(ctx, k)
				switch {
				case errors.Is(err, redisstore.ErrInvalidArgument):
					skipped.Add(1)
				case err != nil:
					cancel(fmt.Errorf("moving %s: %w", k, err))
				default:
					seen.Add(1)
					moved.Add(int64(n))
				}
			}
		}()
	}
	start := time.Now()
	lastLog := start
	sent := 0
	match := escapeGlob(cfg.Prefix) + "{*"
	var cursor uint64
	var err error
walk:
	for {
		var batch []string
		batch, cursor, err = old.Scan(ctx, cursor, match, cfg.ScanCount).Result()
		if err != nil {
			break
		}
		for _, k := range batch {
			if isMarker(k) {
				continue
			}
			if cfg.Rate > 0 {
				due := start.Add(time.Duration(float64(sent) / cfg.Rate * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					select {
					case <-time.After(d):
					case <-ctx.Done():
						break walk
					}
				}
			}
			select {
			case keys <- k:
				sent++
			case <-ctx.Done():
				break walk
			}
		}
		if now := time.Now(); now.Sub(lastLog) >= cfg.Progress {
			lastLog = now
			log.Info("moving", "seen", seen.Load(), "moved", moved.Load(), "keys_per_second", int(float64(seen.Load())/now.Sub(start).Seconds()))
		}
		if cursor == 0 {
			break
		}
	}
	close(keys)
	wg.Wait()
	st := Stats{Seen: seen.Load(), Moved: moved.Load(), Skipped: skipped.Load()}
	if cause := context.Cause(ctx); cause != nil {
		return st, cause
	}
	if err != nil {
		return st, fmt.Errorf("SCAN: %w", err)
	}
	st.Left, st.Markers, err = count(ctx, old, match, cfg.ScanCount)
	st.Left -= st.Skipped
	return st, err
}

// isMarker reports whether k is a moved marker (<prefix>{T}:g), which a
// move leaves on the old Redis so that an instance still configured for it
// answers "moved, retry" for the tag's users until the marker expires:
// nothing to move.
func isMarker(k string) bool {
	return strings.HasSuffix(k, "}:g")
}

// count counts the keys matching match, apart from moved markers, and the
// markers.
func count(ctx context.Context, c redis.UniversalClient, match string, scanCount int64) (n, markers int64, err error) {
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, match, scanCount).Result()
		if err != nil {
			return n, markers, fmt.Errorf("SCAN: %w", err)
		}
		for _, k := range keys {
			if isMarker(k) {
				markers++
			} else {
				n++
			}
		}
		if cursor = next; cursor == 0 {
			return n, markers, nil
		}
	}
}

// escapeGlob escapes the characters SCAN's MATCH gives a meaning.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
