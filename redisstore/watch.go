package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The revocation feed. Every script that revokes sessions (RevokeSession,
// RevokeToken, RevokeAll, a reuse detected by Rotate, an eviction at the
// session cap) publishes the sessions it revokes on the store's revocation
// channel in the same atomic step, so that services which answer from
// memory whether a session lives can forget it at once. Pub/sub delivers
// only to those who listen, so a listener must know when it may have missed
// something: WatchRevocations says when the feed is complete (Subscribed),
// up to which moment (Synced), and when it broke (Lost).

// NoticeKind names what a Notice reports.
type NoticeKind int

const (
	// NoticeSubscribed: the feed is complete from now on: every revocation
	// applied from now is reported, until a NoticeLost. Revocations applied
	// before it may have been missed.
	NoticeSubscribed NoticeKind = iota + 1
	// NoticeRevoked: sessions were revoked (Notice.SessionIDs, Reason).
	NoticeRevoked
	// NoticeSynced: every revocation that completed before Notice.Time (the
	// watcher's clock) has been reported. On a cluster, the watcher listens
	// on every master, and Time is the earliest of theirs.
	NoticeSynced
	// NoticeLost: the feed broke (Notice.Err); revocations may be missed
	// until the next NoticeSubscribed.
	NoticeLost
)

func (k NoticeKind) String() string {
	switch k {
	case NoticeSubscribed:
		return "subscribed"
	case NoticeRevoked:
		return "revoked"
	case NoticeSynced:
		return "synced"
	case NoticeLost:
		return "lost"
	}
	return "unknown"
}

// Notice is what WatchRevocations reports. It never holds a token.
type Notice struct {
	Kind       NoticeKind
	SessionIDs []string  // NoticeRevoked: the sessions revoked (UUIDs)
	Reason     Reason    // NoticeRevoked
	Time       time.Time // NoticeSynced
	Err        error     // NoticeLost
}

// DefaultHeartbeat is WatchRevocations' heartbeat when none is given.
const DefaultHeartbeat = 250 * time.Millisecond

// WatchRevocations listens on the store's revocation channel and reports to
// fn, on one goroutine, in order, until ctx ends; it then returns ctx's
// error. It listens on the master of a single Redis or Sentinel group, and
// on every master of a cluster (a revocation script runs on the master of
// its user's slot), and follows masters that change.
//
// Every heartbeat (DefaultHeartbeat if 0) it sends a PING on each
// subscription; Redis answers it after every message queued before it, so
// a PONG proves that every revocation completed before the PING was sent
// has been delivered: fn then gets a NoticeSynced with that time. A
// subscription that fails, or whose PONG is more than 16 heartbeats late, is
// reported NoticeLost, closed and opened again, and NoticeSubscribed follows
// once every master's subscription is confirmed. A listener that keeps
// anything in memory forgets it, or stops trusting it, at NoticeLost, and
// trusts it only as far as the last NoticeSynced.
func (s *Store) WatchRevocations(ctx context.Context, heartbeat time.Duration, fn func(Notice)) error {
	if heartbeat <= 0 {
		heartbeat = DefaultHeartbeat
	}
	w := &watcher{store: s, heartbeat: heartbeat, fn: fn}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return w.cluster(ctx, cc)
	}
	return w.run(ctx, []redis.UniversalClient{s.rdb}, nil)
}

type watcher struct {
	store     *Store
	heartbeat time.Duration
	fn        func(Notice)
}

// nodeEvent is what one subscription reports to the watcher's loop.
type nodeEvent struct {
	node   int
	notice Notice
}

// cluster watches every master of cc, and starts again when the set of
// masters changes.
func (w *watcher) cluster(ctx context.Context, cc *redis.ClusterClient) error {
	recheck := max(16*w.heartbeat, 2*time.Second)
	for ctx.Err() == nil {
		masters, addrs, err := clusterMasters(ctx, cc)
		if err != nil {
			w.fn(Notice{Kind: NoticeLost, Err: fmt.Errorf("redisstore: cluster masters: %w", err)})
			sleep(ctx, w.heartbeat)
			continue
		}
		changed := func(ctx context.Context) bool {
			_, now, err := clusterMasters(ctx, cc)
			return err == nil && !slices.Equal(now, addrs)
		}
		if err := w.run(ctx, masters, &masterCheck{every: recheck, changed: changed}); ctx.Err() == nil {
			w.fn(Notice{Kind: NoticeLost, Err: err})
		}
	}
	return ctx.Err()
}

// masterCheck tells run when the masters it listens to are no longer the
// cluster's.
type masterCheck struct {
	every   time.Duration
	changed func(context.Context) bool
}

var errMastersChanged = errors.New("redisstore: the cluster's masters changed")

func clusterMasters(ctx context.Context, cc *redis.ClusterClient) ([]redis.UniversalClient, []string, error) {
	var mu sync.Mutex
	var clients []redis.UniversalClient
	var addrs []string
	err := cc.ForEachMaster(ctx, func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		clients = append(clients, c)
		addrs = append(addrs, c.Options().Addr)
		mu.Unlock()
		return nil
	})
	slices.Sort(addrs)
	return clients, addrs, err
}

// run listens on nodes until ctx ends or check finds other masters, and
// merges what they report: the feed is complete while every node is
// subscribed, and synced up to the earliest of their synced times. A
// cluster delivers every message on every node: each is reported once.
func (w *watcher) run(ctx context.Context, nodes []redis.UniversalClient, check *masterCheck) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	events := make(chan nodeEvent, 64)
	for i, c := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.listen(ctx, c, func(n Notice) {
				select {
				case events <- nodeEvent{node: i, notice: n}:
				case <-ctx.Done():
				}
			})
		}()
	}
	subscribed := make([]bool, len(nodes))
	synced := make([]time.Time, len(nodes))
	complete := false
	var last time.Time
	seen := recent{at: map[string]time.Time{}}
	var tick <-chan time.Time
	if check != nil {
		t := time.NewTicker(check.every)
		defer t.Stop()
		tick = t.C
	}
	for {
		var e nodeEvent
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
			if check.changed(ctx) {
				return errMastersChanged
			}
			continue
		case e = <-events:
		}
		switch e.notice.Kind {
		case NoticeRevoked:
			if len(nodes) == 1 || seen.first(string(e.notice.Reason)+":"+strings.Join(e.notice.SessionIDs, ""), time.Now()) {
				w.fn(e.notice)
			}
		case NoticeSubscribed:
			subscribed[e.node], synced[e.node] = true, time.Time{}
			if !complete && !slices.Contains(subscribed, false) {
				complete, last = true, time.Time{}
				w.fn(e.notice)
			}
		case NoticeSynced:
			if !subscribed[e.node] {
				continue
			}
			synced[e.node] = e.notice.Time
			if !complete {
				continue
			}
			earliest := slices.MinFunc(synced, time.Time.Compare)
			if earliest.After(last) {
				last = earliest
				w.fn(Notice{Kind: NoticeSynced, Time: earliest})
			}
		case NoticeLost:
			subscribed[e.node] = false
			if complete {
				complete = false
				w.fn(e.notice)
			}
		}
	}
}

// recent remembers the messages of the last minute, to report a message
// that arrives on several nodes once. A session is revoked once, so a
// message never legitimately repeats.
type recent struct {
	at    map[string]time.Time
	clean time.Time
}

// first reports whether payload was not seen in the last minute, and
// remembers it.
func (r *recent) first(payload string, now time.Time) bool {
	if now.Sub(r.clean) > time.Minute {
		for p, t := range r.at {
			if now.Sub(t) > time.Minute {
				delete(r.at, p)
			}
		}
		r.clean = now
	}
	if _, ok := r.at[payload]; ok {
		return false
	}
	r.at[payload] = now
	return true
}

// listen keeps a subscription open on one node, opening it again after a
// failure, and reports what it hears to the watcher's loop.
func (w *watcher) listen(ctx context.Context, c redis.UniversalClient, send func(Notice)) {
	for ctx.Err() == nil {
		err := w.subscribe(ctx, c, send)
		if ctx.Err() != nil {
			return
		}
		send(Notice{Kind: NoticeLost, Err: err})
		sleep(ctx, w.heartbeat)
	}
}

// subscribe runs one subscription until it fails or ctx ends.
func (w *watcher) subscribe(ctx context.Context, c redis.UniversalClient, send func(Notice)) error {
	ps := c.Subscribe(ctx)
	defer ps.Close()
	if err := ps.Subscribe(ctx, w.store.channel); err != nil {
		return fmt.Errorf("redisstore: subscribe: %w", err)
	}
	var (
		seq       uint64
		pingSent  time.Time // zero: no PING outstanding
		nextPing  time.Time
		confirmed bool
	)
	late := 16 * w.heartbeat
	start := time.Now()
	for ctx.Err() == nil {
		now := time.Now()
		if confirmed && pingSent.IsZero() && !now.Before(nextPing) {
			seq++
			if err := ps.Ping(ctx, strconv.FormatUint(seq, 10)); err != nil {
				return fmt.Errorf("redisstore: heartbeat: %w", err)
			}
			pingSent, nextPing = now, now.Add(w.heartbeat)
		}
		wait := w.heartbeat
		if !pingSent.IsZero() {
			if now.Sub(pingSent) > late {
				return fmt.Errorf("redisstore: no answer to a heartbeat in %v", late)
			}
		} else if confirmed {
			wait = max(nextPing.Sub(now), time.Millisecond)
		}
		msg, err := ps.ReceiveTimeout(ctx, wait)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if !confirmed && time.Since(start) > late {
					return fmt.Errorf("redisstore: subscription not confirmed in %v", late)
				}
				continue
			}
			return fmt.Errorf("redisstore: receive: %w", err)
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == w.store.channel && !confirmed {
				confirmed, nextPing = true, time.Now()
				send(Notice{Kind: NoticeSubscribed})
			}
		case *redis.Pong:
			if !pingSent.IsZero() && m.Payload == strconv.FormatUint(seq, 10) {
				send(Notice{Kind: NoticeSynced, Time: pingSent})
				pingSent = time.Time{}
			}
		case *redis.Message:
			if n, ok := parseRevocation(m.Payload); ok {
				send(n)
			}
		}
	}
	return ctx.Err()
}

// parseRevocation reads a message of the revocation channel: the reason,
// ':' and the session ids, 22 base64url bytes each.
func parseRevocation(payload string) (Notice, bool) {
	reason, ids, ok := strings.Cut(payload, ":")
	if !ok || len(ids) == 0 || len(ids)%22 != 0 {
		return Notice{}, false
	}
	n := Notice{Kind: NoticeRevoked, Reason: Reason(reason), SessionIDs: make([]string, 0, len(ids)/22)}
	for i := 0; i < len(ids); i += 22 {
		n.SessionIDs = append(n.SessionIDs, sessionIDString(ids[i:i+22]))
	}
	return n, true
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
