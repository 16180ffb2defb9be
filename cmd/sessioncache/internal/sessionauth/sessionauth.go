// Package sessionauth answers, per request and from memory, whether the
// session behind an access token still lives, so that a logout, a log out
// everywhere, a reuse revocation or an eviction at the session cap takes
// effect at once on every service instance rather than when the token
// expires.
//
// Each instance remembers the sessions it has seen live, and forgets them
// when the store's revocation feed (redisstore.Store.WatchRevocations)
// reports them revoked: every script that revokes a session publishes it in
// the same atomic step. Memory is trusted only while the feed is whole:
//
//   - Each subscription (re)confirmed starts a new epoch; a session is
//     answered from memory only if Redis said it lived during the current
//     epoch, so nothing learnt before a gap in the feed survives it.
//   - The feed proves, with heartbeats, up to which moment it has delivered
//     every revocation (a synced notice). Memory is trusted for Lease after
//     that moment; past it (the feed is slow or silent), and whenever the
//     feed is lost, every answer comes from Redis
//     (redisstore.Store.CheckSession) until the feed is whole and synced
//     again.
//   - A revocation that arrives while Redis is being asked wins: the answer
//     is not remembered as live.
package sessionauth

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessioncache/sessioncache/redisstore"
)

// Source says where an answer came from.
type Source int

const (
	Memory Source = iota // no Redis command
	Redis                // CheckSession
)

// ErrEnded is returned, wrapped with the reason, for a session that ended:
// revoked, or unknown to Redis (expired or lost).
var ErrEnded = errors.New("sessionauth: the session has ended")

// EndedError is a session that ended, with the reason the store gave
// (a redisstore.Reason, or "unknown").
type EndedError struct{ Reason string }

func (e *EndedError) Error() string        { return ErrEnded.Error() + " (" + e.Reason + ")" }
func (e *EndedError) Is(target error) bool { return target == ErrEnded }

// Config configures a Gate.
type Config struct {
	// Check asks Redis whether a session lives (redisstore.Store.CheckSession).
	Check func(ctx context.Context, userID, sessionID string) error
	// Lease is how long after a synced notice memory is trusted.
	// Default: 4 × redisstore.DefaultHeartbeat.
	Lease time.Duration
	// MaxSessions bounds the sessions remembered (about 110 bytes each,
	// BenchmarkMemoryPerSession); past it, new sessions are answered from
	// Redis until sweeps make room. Default: 100,000.
	MaxSessions int
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// Timeout bounds a Check that asks Redis; 0: the caller's context
	// alone.
	Timeout time.Duration
}

// Gate remembers the sessions seen live. It is safe for concurrent use.
type Gate struct {
	check   func(ctx context.Context, userID, sessionID string) error
	timeout time.Duration
	lease   int64 // ns
	max     int64
	now     func() time.Time

	// epoch counts the feed's changes: odd while subscribed, even while
	// lost (0: never subscribed yet).
	epoch atomic.Uint64
	// trusted is the unix time (ns) until which memory is trusted: the last
	// synced moment plus the lease; 0 while the feed is not whole.
	trusted atomic.Int64
	count   atomic.Int64
	// revocations counts the revocation notices, for Saw.
	revocations atomic.Uint64

	seed   maphash.Seed
	shards [64]shard

	memory, redis, refusedFromMemory atomic.Uint64
}

type shard struct {
	mu sync.RWMutex
	m  map[string]*session
}

// session is what an instance remembers of one session.
type session struct {
	// live is the epoch in which Redis last said the session lived; 0:
	// never.
	live atomic.Uint64
	// ended holds the reason once the session is known to have ended.
	ended atomic.Pointer[string]
	// until is the latest expiry of a token seen for it (unix ns), under
	// the shard's lock: past it, the session is forgotten.
	until int64
}

// New returns a Gate. Until its feed is subscribed and synced (Notice),
// every answer comes from Redis.
func New(c Config) *Gate {
	g := &Gate{check: c.Check, timeout: c.Timeout, lease: int64(c.Lease), max: int64(c.MaxSessions), now: c.Now, seed: maphash.MakeSeed()}
	if g.lease <= 0 {
		g.lease = int64(4 * redisstore.DefaultHeartbeat)
	}
	if g.max <= 0 {
		g.max = 100_000
	}
	if g.now == nil {
		g.now = time.Now
	}
	for i := range g.shards {
		g.shards[i].m = map[string]*session{}
	}
	return g
}

func (g *Gate) shard(sid string) *shard {
	return &g.shards[maphash.String(g.seed, sid)%uint64(len(g.shards))]
}

// Notice applies what the revocation feed reports.
func (g *Gate) Notice(n redisstore.Notice) {
	switch n.Kind {
	case redisstore.NoticeSubscribed:
		g.trusted.Store(0)
		if g.epoch.Load()%2 == 0 {
			g.epoch.Add(1)
		}
	case redisstore.NoticeLost:
		g.trusted.Store(0)
		if g.epoch.Load()%2 == 1 {
			g.epoch.Add(1)
		}
	case redisstore.NoticeSynced:
		if g.epoch.Load()%2 == 1 {
			g.trusted.Store(n.Time.UnixNano() + g.lease)
		}
	case redisstore.NoticeRevoked:
		// Counted before the sessions are marked: see Saw.
		g.revocations.Add(1)
		reason := string(n.Reason)
		for _, sid := range n.SessionIDs {
			sh := g.shard(sid)
			sh.mu.RLock()
			s := sh.m[sid]
			sh.mu.RUnlock()
			if s != nil {
				s.ended.Store(&reason)
			}
		}
	}
}

// Mark is the state of the feed when a call that shows a session live
// (a login, a rotation) began: see Begin and Saw.
type Mark struct{ epoch, revocations uint64 }

// Begin marks the start of a call to Redis whose success shows a session
// live.
func (g *Gate) Begin() Mark { return Mark{g.epoch.Load(), g.revocations.Load()} }

// Saw remembers as live a session that a call begun at m has just shown
// live (its login or a rotation succeeded), until expires, so that forward
// auth of its first access token needs no Redis command. It does so only if
// the feed was whole throughout and reported no revocation at all since m
// (the call's session id was not known at m, so any revocation might have
// been its).
func (g *Gate) Saw(sessionID string, expires time.Time, m Mark) {
	if m.epoch%2 == 0 || g.epoch.Load() != m.epoch || g.revocations.Load() != m.revocations {
		return
	}
	s := g.session(sessionID, expires.UnixNano())
	// A notice counts itself before it marks its sessions: if none was
	// counted by now, any that comes later finds s and marks it ended,
	// which wins over live.
	if g.revocations.Load() == m.revocations && g.epoch.Load() == m.epoch {
		s.live.Store(m.epoch)
	}
}

// Trusted reports whether memory may answer now: the feed is whole and
// synced within the lease.
func (g *Gate) Trusted() bool {
	return g.epoch.Load()%2 == 1 && g.now().UnixNano() < g.trusted.Load()
}

// Check reports whether sessionID, of userID, lives: from memory when the
// feed vouches for it, otherwise by asking Redis. expires is when the
// credential presented expires: the session is remembered until then. An
// ended session is an *EndedError; a failure of Redis is returned as is.
func (g *Gate) Check(ctx context.Context, userID, sessionID string, expires time.Time) (Source, error) {
	s := g.session(sessionID, expires.UnixNano())
	if r := s.ended.Load(); r != nil {
		g.refusedFromMemory.Add(1)
		return Memory, &EndedError{Reason: *r}
	}
	ep := g.epoch.Load()
	if ep%2 == 1 && s.live.Load() == ep && g.now().UnixNano() < g.trusted.Load() {
		g.memory.Add(1)
		return Memory, nil
	}
	g.redis.Add(1)
	if g.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	err := g.check(ctx, userID, sessionID)
	var re *redisstore.RevokedError
	switch {
	case err == nil:
		// Remembered only if the feed was whole for the whole read: a
		// revocation after the read start arrives as a notice (and marks
		// ended, which wins over live).
		if ep%2 == 1 && g.epoch.Load() == ep {
			s.live.Store(ep)
		}
		return Redis, nil
	case errors.As(err, &re):
		s.ended.Store(ptr(string(re.Reason)))
		return Redis, &EndedError{Reason: string(re.Reason)}
	case errors.Is(err, redisstore.ErrUnknown):
		s.ended.Store(ptr("unknown"))
		return Redis, &EndedError{Reason: "unknown"}
	}
	return Redis, err
}

func ptr(s string) *string { return &s }

// session returns the remembered session, adding it (until expires) if
// there is room.
func (g *Gate) session(sid string, expires int64) *session {
	sh := g.shard(sid)
	sh.mu.RLock()
	s := sh.m[sid]
	fresh := s != nil && s.until >= expires
	sh.mu.RUnlock()
	if fresh {
		return s
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s = sh.m[sid]
	switch {
	case s != nil:
		s.until = max(s.until, expires)
	case g.count.Load() >= g.max:
		// Not remembered: answered from Redis.
		return &session{}
	default:
		s = &session{until: expires}
		sh.m[sid] = s
		g.count.Add(1)
	}
	return s
}

// Sweep forgets the sessions whose credentials have all expired. Run it
// periodically.
func (g *Gate) Sweep() {
	now := g.now().UnixNano()
	for i := range g.shards {
		sh := &g.shards[i]
		sh.mu.Lock()
		for sid, s := range sh.m {
			if s.until < now {
				delete(sh.m, sid)
				g.count.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
}

// Stats are counters for metrics.
type Stats struct {
	Sessions          int64  // remembered now
	Memory            uint64 // answers from memory
	Redis             uint64 // answers from Redis
	RefusedFromMemory uint64 // ended sessions refused from memory
	Trusted           bool   // memory may answer now
}

// Stats returns the counters.
func (g *Gate) Stats() Stats {
	return Stats{Sessions: g.count.Load(), Memory: g.memory.Load(), Redis: g.redis.Load(), RefusedFromMemory: g.refusedFromMemory.Load(), Trusted: g.Trusted()}
}
