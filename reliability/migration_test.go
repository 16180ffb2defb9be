package reliability_test

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// TestSlotMigration holds one user's slot half moved between two masters
// of a real cluster (CLUSTER SETSLOT IMPORTING/MIGRATING, then MIGRATE of
// some of the user's keys only), as redis-cli --cluster reshard leaves it
// between two MIGRATE batches, and makes the calls a client makes then. A
// script whose keys are split between the nodes, or that creates a key, is
// refused with TRYAGAIN until the slot has moved: the store sends it again
// within its deadline. A script whose keys have all moved follows ASK. No
// call may fail that the end of the move lets through, no honest session
// may be revoked, lost or answered as reused, and every replay is
// detected. A second move, the other way, holds a log-out-everywhere.
func TestSlotMigration(t *testing.T) {
	t.Parallel()
	tc := redistest.StartCluster(t, 3, 0, time.Second)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: tc.Addrs(), ClusterStateReloadInterval: time.Second})
	t.Cleanup(func() { c.Close() })
	prefix := redistest.NewPrefix()
	rs := redistest.NewStore(t, c, redisstore.Options{KeyPrefix: prefix})
	st := store{rs.Store}
	ctx := bg(t)
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	const user = "migrating-user"
	dev := redisstore.Client{DeviceID: "d"}
	issue := func() redisstore.Grant {
		t.Helper()
		g, err := st.Issue(ctx, user, dev)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	rotate := func(tok string) redisstore.Grant {
		t.Helper()
		g, err := st.Rotate(ctx, tok, dev)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	// A rotates while its hash and the index sit on different nodes; B and
	// C are replayed (a grandparent) with B's keys all moved, C's split; D's
	// predecessor comes back within grace, split.
	a0 := issue()
	b0 := issue()
	b2 := rotate(rotate(b0.Token).Token)
	c0 := issue()
	rotate(rotate(c0.Token).Token)
	d0 := issue()
	d1 := rotate(d0.Token)
	// E is logged out and F replayed before any key has moved, on the node
	// the slot leaves: their scripts run there and turn a live session into
	// a tombstone.
	e0 := issue()
	f0 := issue()
	f2 := rotate(rotate(f0.Token).Token)

	keys := userKeys(ctx, t, tc, prefix)
	index := ""
	for _, k := range keys {
		if strings.Contains(k, "}:u:") {
			index = k
		}
	}
	sessionKey := func(id string) string {
		for _, k := range keys {
			if strings.HasSuffix(k, sessionMember(t, id)) {
				return k
			}
		}
		t.Fatalf("no key for session %s among %q", id, keys)
		return ""
	}
	if index == "" || len(keys) != 7 {
		t.Fatalf("want the index and 6 sessions, got %q", keys)
	}
	entry := tc.Nodes[0].Client(t)
	slot, err := redistest.KeySlot(ctx, entry, index)
	if err != nil {
		t.Fatal(err)
	}
	src, dst, others := slotOwner(ctx, t, tc, slot)

	// First move. While no key has moved yet, Redis runs scripts on the
	// source, but refuses any command of a script on a key the source
	// lacks: a tombstone must never be written by deleting the session
	// first.
	m, err := redistest.BeginSlotMove(ctx, t, slot, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 2*time.Second) }
	sctx, cancel := short()
	if n, err := st.RevokeSession(sctx, user, e0.SessionID); n != 1 || err != nil {
		t.Errorf("RevokeSession(E) on the slot's source mid-move: %d, %v; want 1", n, err)
	}
	cancel()
	sctx, cancel = short()
	if _, err := st.Rotate(sctx, f0.Token, dev); !errors.Is(err, redisstore.ErrReused) {
		t.Errorf("replay of F on the slot's source mid-move: %v, want ErrReused", err)
	}
	cancel()
	for name, tok := range map[string]string{"E": e0.Token, "F": f2.Token} {
		var re *redisstore.RevokedError
		if _, err := st.Validate(ctx, tok); !errors.As(err, &re) {
			t.Errorf("%s after its revocation mid-move: %v, want a *RevokedError (its tombstone)", name, err)
		}
	}
	// Then the index and B's session go ahead; A, C and D stay.
	if err := m.Keys(ctx, index, sessionKey(b0.SessionID)); err != nil {
		t.Fatal(err)
	}
	before := st.BatchStats().Moving
	type result struct {
		g   redisstore.Grant
		err error
	}
	var wg sync.WaitGroup
	var returned atomic.Int32
	var rotA, replayC, graceD, login result
	call := func(r *result, f func(ctx context.Context) (redisstore.Grant, error)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer returned.Add(1)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r.g, r.err = f(ctx)
		}()
	}
	call(&rotA, func(ctx context.Context) (redisstore.Grant, error) { return st.Rotate(ctx, a0.Token, dev) })
	call(&replayC, func(ctx context.Context) (redisstore.Grant, error) { return st.Rotate(ctx, c0.Token, dev) })
	call(&graceD, func(ctx context.Context) (redisstore.Grant, error) { return st.Rotate(ctx, d0.Token, dev) })
	call(&login, func(ctx context.Context) (redisstore.Grant, error) { return st.Issue(ctx, user, dev) })

	// Calls whose keys are all on one side run at once.
	sctx, cancel = short()
	if _, err := st.Rotate(sctx, b0.Token, dev); !errors.Is(err, redisstore.ErrReused) {
		t.Errorf("replay of B (all keys moved) mid-move: %v, want ErrReused", err)
	}
	cancel()
	sctx, cancel = short()
	if _, err := st.Validate(sctx, a0.Token); err != nil {
		t.Errorf("Validate(A) mid-move: %v", err)
	}
	cancel()
	sctx, cancel = short()
	listed, err := listAll(sctx, st, user, 2)
	cancel()
	if err != nil {
		t.Errorf("ListSessions mid-move: %v", err)
	}
	if ids := sessionIDs(listed); !ids[a0.SessionID] || !ids[d0.SessionID] {
		t.Errorf("ListSessions mid-move lists %v, want A %s and D %s among them", ids, a0.SessionID, d0.SessionID)
	}
	// The others are refused until the slot has moved: wait until each was
	// sent again at least once (or they all returned), then finish the
	// move.
	waitFor(t, "the split calls refused and sent again", 10*time.Second, func() bool {
		return st.BatchStats().Moving-before >= 4 || returned.Load() == 4
	})
	if err := m.Finish(ctx, others...); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	t.Logf("calls sent again while the slot moved: %d", st.BatchStats().Moving-before)
	if rotA.err != nil {
		t.Errorf("Rotate(A) across the move: %v", rotA.err)
	} else if _, err := st.Validate(ctx, rotA.g.Token); err != nil {
		t.Errorf("A's successor: %v", err)
	}
	if !errors.Is(replayC.err, redisstore.ErrReused) {
		t.Errorf("replay of C (keys split): %v, want ErrReused", replayC.err)
	}
	if graceD.err != nil || graceD.g.Token != d1.Token {
		t.Errorf("grace replay of D across the move: %v, same successor %v", graceD.err, graceD.g.Token == d1.Token)
	}
	if login.err != nil {
		t.Errorf("Issue across the move: %v", login.err)
	}
	for name, tok := range map[string]string{"B": b2.Token} {
		if _, err := st.Validate(ctx, tok); !errors.Is(err, redisstore.ErrRevoked) {
			t.Errorf("%s after its replay: %v, want ErrRevoked", name, err)
		}
	}
	if _, err := st.Validate(ctx, d1.Token); err != nil {
		t.Errorf("D after its grace replay: %v", err)
	}
	var reused []string
	for _, e := range rs.TakeEvents() {
		if e.Kind == redisstore.EventReuseDetected {
			reused = append(reused, e.SessionID)
		}
	}
	slices.Sort(reused)
	want := []string{b0.SessionID, c0.SessionID, f0.SessionID}
	slices.Sort(want)
	if !slices.Equal(reused, want) {
		t.Errorf("reuse detected for %v, want B, C and F: %v", reused, want)
	}

	// Second move, back: the index and A go first; log out everywhere
	// meanwhile.
	keys = userKeys(ctx, t, tc, prefix)
	m, err = redistest.BeginSlotMove(ctx, t, slot, dst, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Keys(ctx, index, sessionKey(a0.SessionID)); err != nil {
		t.Fatal(err)
	}
	before = st.BatchStats().Moving
	var all result
	var n int
	returned.Store(0)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer returned.Add(1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n, all.err = st.RevokeAll(ctx, user, "")
	}()
	waitFor(t, "the log-out-everywhere refused and sent again", 10*time.Second, func() bool {
		return st.BatchStats().Moving > before || returned.Load() == 1
	})
	if err := m.Finish(ctx, others...); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if all.err != nil || n != 3 {
		t.Errorf("RevokeAll across the move: %d, %v; want the 3 live sessions (A, D, the new one)", n, all.err)
	}
	for name, tok := range map[string]string{"A": rotA.g.Token, "D": d1.Token, "new": login.g.Token} {
		if _, err := st.Validate(ctx, tok); !errors.Is(err, redisstore.ErrRevoked) {
			t.Errorf("%s after RevokeAll: %v, want ErrRevoked", name, err)
		}
	}
	if left, err := listAll(ctx, st, user, 0); err != nil || len(left) != 0 {
		t.Errorf("ListSessions after RevokeAll: %d sessions, %v", len(left), err)
	}
	figure(t, "slot_migration", "moving_retries", st.BatchStats().Moving)
}

// userKeys returns every key under prefix, from every master.
func userKeys(ctx context.Context, t *testing.T, tc *redistest.TestCluster, prefix string) []string {
	t.Helper()
	masters, err := tc.Masters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range masters {
		c := redis.NewClient(&redis.Options{Addr: m.Addr})
		ks, err := c.Keys(ctx, prefix+"*").Result()
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ks...)
	}
	return out
}

// slotOwner returns the master that serves slot, another master to move it
// to, and the masters left.
func slotOwner(ctx context.Context, t *testing.T, tc *redistest.TestCluster, slot int) (owner, to string, rest []string) {
	t.Helper()
	masters, err := tc.Masters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range masters {
		for _, r := range m.Slots {
			if r[0] <= slot && slot <= r[1] {
				owner = m.Addr
			}
		}
	}
	for _, m := range masters {
		switch {
		case m.Addr == owner:
		case to == "":
			to = m.Addr
		default:
			rest = append(rest, m.Addr)
		}
	}
	if owner == "" || to == "" {
		t.Fatalf("slot %d: owner %q, target %q", slot, owner, to)
	}
	return owner, to, rest
}

// sessionMember returns the end of a session's key: its id in base64url.
func sessionMember(t *testing.T, id string) string {
	t.Helper()
	u, err := uuid.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(u[:])
}

func sessionIDs(ss []redisstore.Session) map[string]bool {
	out := make(map[string]bool, len(ss))
	for _, s := range ss {
		out[s.ID] = true
	}
	return out
}
