package sqlimport

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sessioncache/sessioncache/redisstore"
)

// follow keeps the table and Redis in step while both systems run:
//
//   - Redis to the table: it listens to the revocation feed before its
//     first pass, and revokes in the table the family of every session
//     revoked in Redis (logout, log out everywhere, a reuse detected, an
//     eviction at the cap). Whatever the feed may have missed (before it
//     was confirmed, or while it was lost) a full pass finds: a session
//     ended in Redis whose family is live in the table is revoked there.
//   - The table to Redis: every Follow it passes again the families with a
//     row created or revoked since its previous look (less Overlap), by the
//     database's clock: a rotation in the old system moves the session to
//     the newer row, a revocation revokes the session.
//
// Every "caught up" line it logs names the moment (the database's time)
// up to which everything the table held has reached Redis.
func (im *Importer) follow(ctx context.Context) (Stats, error) {
	fb := &feed{signal: make(chan struct{}, 1), subscribed: make(chan struct{})}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		im.store.WatchRevocations(wctx, 0, fb.notice)
	}()
	defer func() { stop(); <-watched }()
	select {
	case <-fb.subscribed:
	case <-ctx.Done():
		return Stats{}, ctx.Err()
	}

	var total Stats
	full, due, since := true, true, time.Time{}
	tick := time.NewTicker(im.cfg.Follow)
	defer tick.Stop()
	for {
		if due {
			due = false
			start, err := im.dbNow(ctx)
			var st Stats
			if err == nil {
				if full {
					fb.startFull()
					st, err = im.fullPass(ctx)
				} else {
					st, err = im.pass(ctx, "", since.Add(-im.cfg.Overlap))
				}
			}
			total.add(st)
			switch {
			case ctx.Err() != nil:
				return total, ctx.Err()
			case err != nil:
				im.log.Warn("import pass failed; trying again", "error", err.Error())
			default:
				if full {
					im.log.Info("full pass done", st.Attrs()...)
				}
				full, since = false, start
				im.log.Info("caught up", "as_of", start.UTC().Format(time.RFC3339Nano), "new", st.Created, "advanced", st.Advanced,
					"revoked_in_redis", st.Revoked, "revoked_in_table", st.Mirrored)
			}
		}
		select {
		case <-ctx.Done():
			return total, ctx.Err()
		case <-fb.signal:
		case <-tick.C:
			due = true
			full = full || fb.needsFull()
		}
		if ids := fb.take(); len(ids) > 0 {
			n, err := im.mirror(ctx, ids)
			total.Mirrored += n
			if err != nil {
				fb.putBack(ids)
				im.log.Warn("revoking in the table failed; trying again", "error", err.Error())
			}
		}
	}
}

func (im *Importer) dbNow(ctx context.Context) (time.Time, error) {
	var now time.Time
	if err := im.pool.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		return now, fmt.Errorf("read the database's time: %w", err)
	}
	return now, nil
}

// feed collects what the revocation feed reports, for follow's loop.
type feed struct {
	mu         sync.Mutex
	pending    []string // sessions revoked in Redis, not yet in the table
	lost       bool     // the feed broke since the last full pass began
	down       bool     // the feed is broken now
	signal     chan struct{}
	subscribed chan struct{} // closed at the first NoticeSubscribed
	once       sync.Once
}

func (f *feed) notice(n redisstore.Notice) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch n.Kind {
	case redisstore.NoticeSubscribed:
		f.down = false
		f.once.Do(func() { close(f.subscribed) })
	case redisstore.NoticeLost:
		f.lost, f.down = true, true
	case redisstore.NoticeRevoked:
		f.pending = append(f.pending, n.SessionIDs...)
		select {
		case f.signal <- struct{}{}:
		default:
		}
	}
}

func (f *feed) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := f.pending
	f.pending = nil
	return ids
}

func (f *feed) putBack(ids []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = append(ids, f.pending...)
}

// needsFull reports whether the feed broke since the last full pass and
// is whole again: a full pass now finds what it missed.
func (f *feed) needsFull() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lost && !f.down
}

// startFull records that a full pass begins.
func (f *feed) startFull() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lost = false
}
