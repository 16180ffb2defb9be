package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// EnvReshardFull runs TestReshardUnderLoad at the size RELIABILITY.md
// quotes, instead of CI's.
const EnvReshardFull = "SESSIONCACHE_TEST_RESHARD_FULL"

// reshardSize is what one run of TestReshardUnderLoad puts through the
// cluster.
type reshardSize struct {
	callers    int           // goroutines running the mix
	usersEach  int           // users each caller logs in and out
	filler     int           // extra keys in the slot of each user, so that a slot takes longer to move
	pipeline   int           // keys per MIGRATE (redis-cli --cluster-pipeline)
	settle     int           // successful calls before the first step and between steps
	think      time.Duration // a caller pauses up to this long between calls
	opTimeout  time.Duration
	maxPerUser int // live sessions a caller keeps per user
	// reshard is how many slots the first step moves; newWeight the 4th
	// master's rebalance weight against 1 for the others ("": 1);
	// removeNew removes the 4th master again rather than one of the first.
	reshard   int
	newWeight string
	removeNew bool
}

// reshardSizeFor returns CI's size, or under EnvReshardFull the full run:
// 25% of the slots, an even rebalance over 4 masters, one of the first 3
// masters emptied and removed. In CI the same steps move about 2,400
// slots in all instead of about 12,300: 1,024 (6%), about 700 to a 4th
// master of weight 0.13, and those back when it leaves; moving a slot
// costs redis-cli several commands and each node an fsync of nodes.conf.
func reshardSizeFor() reshardSize {
	if os.Getenv(EnvReshardFull) == "1" {
		return reshardSize{callers: 64, usersEach: 16, filler: 400, pipeline: 2, settle: 20000, think: 2 * time.Millisecond,
			opTimeout: 5 * time.Second, maxPerUser: 4, reshard: 16384 / 4}
	}
	return reshardSize{callers: 64, usersEach: 4, filler: 40, pipeline: 2, settle: 2000, think: 2 * time.Millisecond,
		opTimeout: 5 * time.Second, maxPerUser: 4, reshard: 1024, newWeight: "0.13", removeNew: true}
}

// The steps of TestReshardUnderLoad, in order; the load runs through all.
var reshardSteps = []string{"before", "reshard_25%", "add_rebalance", "remove_master", "after"}

// TestReshardUnderLoad reshapes a live cluster of 3 masters the way an
// operator grows and shrinks one, while 64 callers run a realistic mix:
// logins, rotations with grace replays, validations, replays of old tokens,
// logouts, log-out-everywhere and listings. In sequence: redis-cli
// --cluster reshard moves 25% of the slots from one master to another; a
// 4th master joins (add-node) and rebalance gives it its share; rebalance
// empties one of the first masters and del-node removes it (4 -> 3). MIGRATE
// moves 2 keys at a time, and every user's slot holds extra keys, so that
// each of these slots takes a while to move and scripts meet ASK and
// TRYAGAIN.
//
// Each caller owns its users, so it knows what every call must answer (the
// model): an honest rotation succeeds, a grace replay returns the same
// successor, a grandparent replay is detected, a validation of a current
// token succeeds, a listing shows exactly the live sessions,
// log-out-everywhere revokes exactly them. At the end every session is
// checked again: every acknowledged write survived. No call may fail: the
// store sends again what Redis refused because a slot was moving.
func TestReshardUnderLoad(t *testing.T) {
	t.Parallel()
	size := reshardSizeFor()
	tc := redistest.StartCluster(t, 3, 0, 5*time.Second)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: tc.Addrs(), ClusterStateReloadInterval: time.Second})
	t.Cleanup(func() { c.Close() })
	prefix := redistest.NewPrefix()
	st := wrap(t, c, redisstore.Options{KeyPrefix: prefix})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	r := &reshardRun{st: st, size: size, stats: make([]stepStats, len(reshardSteps)), stop: make(chan struct{})}
	callers := make([]*reshardCaller, size.callers)
	for i := range callers {
		callers[i] = newReshardCaller(r, i, fmt.Sprintf("reshard-%d", i))
	}
	// Every user logs in once, then the slots of the users get their
	// extra keys.
	for _, cl := range callers {
		for u := range cl.users {
			cl.login(u)
		}
	}
	fillSlots(ctx, t, tc, prefix, size.filler)
	var wg sync.WaitGroup
	for _, cl := range callers {
		wg.Add(1)
		go func() { defer wg.Done(); cl.run() }()
	}
	stopped := false
	stopLoad := func() {
		if !stopped {
			stopped = true
			close(r.stop)
			wg.Wait()
		}
	}
	t.Cleanup(stopLoad)

	settle := func() {
		t.Helper()
		target := r.ok.Load() + int64(size.settle)
		waitFor(t, fmt.Sprintf("%d successful calls", size.settle), 5*time.Minute, func() bool { return r.ok.Load() >= target })
	}
	durations := make([]time.Duration, len(reshardSteps))
	step := func(i int, do func() error) {
		t.Helper()
		r.step.Store(int32(i))
		start := time.Now()
		if err := do(); err != nil {
			t.Fatalf("%s: %v", reshardSteps[i], err)
		}
		durations[i] = time.Since(start)
		ms, err := tc.Masters(ctx)
		var shares []string
		for _, m := range ms {
			shares = append(shares, fmt.Sprintf("%s:%d", m.Addr, m.SlotCount()))
		}
		t.Logf("%s took %v; masters and their slots: %v %v", reshardSteps[i], durations[i].Round(time.Millisecond), shares, err)
	}
	settle()
	masters, err := tc.Masters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(masters) != 3 {
		t.Fatalf("%d masters", len(masters))
	}
	step(1, func() error { return tc.Reshard(ctx, masters[0].Addr, masters[1].Addr, size.reshard, size.pipeline) })
	r.step.Store(4)
	settle()
	var added *redistest.Server
	step(2, func() error {
		var err error
		if added, err = tc.AddMaster(ctx, t); err != nil {
			return err
		}
		var weights []string
		if size.newWeight != "" {
			weights = append(weights, added.Addr+"="+size.newWeight)
		}
		return tc.Rebalance(ctx, size.pipeline, true, weights...)
	})
	r.step.Store(4)
	settle()
	leaving := masters[2].Addr
	if size.removeNew {
		leaving = added.Addr
	}
	step(3, func() error { return tc.RemoveMaster(ctx, leaving, size.pipeline) })
	r.step.Store(4)
	settle()
	stopLoad()
	if ms, err := tc.Masters(ctx); err != nil || len(ms) != 3 {
		t.Fatalf("after removing one of 4 masters: %d masters, %v", len(ms), err)
	}

	// Every session as the model has it.
	for _, cl := range callers {
		cl.finalCheck(ctx)
	}

	t.Logf("%-14s %8s %8s %7s %9s %9s %6s %9s %9s %8s %9s %9s", "step", "took", "calls", "errors", "err_rate", "p99", "max", "acked", "lost", "honest", "replays", "missed")
	var total stepStats
	for i, name := range reshardSteps {
		s := &r.stats[i]
		s.mu.Lock()
		p99, worst := percentile(s.lat, 0.99), percentile(s.lat, 1)
		took := "-"
		if durations[i] > 0 {
			took = ms(durations[i])
		}
		t.Logf("%-14s %8s %8d %7d %8.4f%% %9s %6s %9d %9d %8d %9d %9d", name, took, s.calls, s.errors,
			100*float64(s.errors)/float64(max(1, s.calls)), ms(p99), ms(worst), s.acked, s.lost, s.honestRefused, s.replays, s.replaysMissed)
		figure(t, "reshard_under_load/"+name, "took", took, "calls", s.calls, "errors", s.errors, "p99", ms(p99), "max", ms(worst),
			"acked_writes", s.acked, "lost", s.lost, "honest_refused", s.honestRefused, "replays", s.replays, "replays_missed", s.replaysMissed)
		if s.errors > 0 {
			t.Errorf("%s: %d calls failed: %v", name, s.errors, &s.classes)
		}
		total.calls += s.calls
		total.acked += s.acked
		total.lost += s.lost
		total.honestRefused += s.honestRefused
		total.replays += s.replays
		total.replaysMissed += s.replaysMissed
		s.mu.Unlock()
	}
	bs := st.BatchStats()
	figure(t, "reshard_under_load", "mode", map[bool]string{true: "full", false: "ci"}[os.Getenv(EnvReshardFull) == "1"],
		"slots_resharded", size.reshard, "callers", size.callers, "users", size.callers*size.usersEach, "filler_keys_per_user_slot", size.filler,
		"migrate_pipeline", size.pipeline, "calls", total.calls, "acked_writes", total.acked, "lost", total.lost,
		"honest_refused", total.honestRefused, "replays", total.replays, "replays_missed", total.replaysMissed,
		"final_checks", r.finalChecks.Load(), "moving_retries", bs.Moving, "tainted_users", r.tainted.Load())
	if total.lost != 0 || total.honestRefused != 0 || total.replaysMissed != 0 {
		t.Errorf("lost %d acknowledged writes, refused %d honest calls, missed %d of %d replays", total.lost, total.honestRefused, total.replaysMissed, total.replays)
	}
	if total.replays == 0 || total.acked == 0 {
		t.Errorf("the mix made %d replays and %d acknowledged writes", total.replays, total.acked)
	}
	for _, f := range r.failures() {
		t.Error(f)
	}
}

// reshardRun is the state all callers share.
type reshardRun struct {
	st          store
	size        reshardSize
	step        atomic.Int32 // index in reshardSteps of the step running now
	stats       []stepStats
	ok          atomic.Int64
	finalChecks atomic.Int64
	tainted     atomic.Int64
	stop        chan struct{}
	mu          sync.Mutex
	fails       []string
}

func (r *reshardRun) fail(format string, args ...any) {
	r.mu.Lock()
	if len(r.fails) < 20 {
		r.fails = append(r.fails, fmt.Sprintf(format, args...))
	}
	r.mu.Unlock()
}

func (r *reshardRun) failures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.fails)
}

// stepStats are the figures of one step.
type stepStats struct {
	mu            sync.Mutex
	calls, errors int
	lat           []time.Duration
	classes       counter
	acked         int // writes acknowledged: logins, rotations, revocations
	lost          int // acknowledged writes found missing later
	honestRefused int // honest calls answered as reused, revoked or unknown
	replays       int
	replaysMissed int
}

// reshardSession is one session as its caller's model has it.
type reshardSession struct {
	id      string
	tokens  []string // every token, by generation
	pending bool     // the last rotation failed: Redis may or may not have run it
	revoked bool
	ackStep int // step of the last acknowledged write
}

func (s *reshardSession) current() string { return s.tokens[len(s.tokens)-1] }

type reshardUser struct {
	name     string
	live     []*reshardSession
	revoked  []*reshardSession
	tainted  bool // a write failed: what Redis holds is not known exactly
	lastStep int
}

type reshardCaller struct {
	r     *reshardRun
	rnd   *rand.Rand
	users []*reshardUser
}

func newReshardCaller(r *reshardRun, id int, name string) *reshardCaller {
	cl := &reshardCaller{r: r, rnd: rand.New(rand.NewPCG(uint64(id), 20))}
	for u := 0; u < r.size.usersEach; u++ {
		cl.users = append(cl.users, &reshardUser{name: fmt.Sprintf("%s-%d", name, u)})
	}
	return cl
}

var reshardDevice = redisstore.Client{DeviceID: "d", UserAgent: "reshard"}

// call runs one call with the run's deadline and records it in the step
// it started in; it returns that step and the error.
func (cl *reshardCaller) call(f func(ctx context.Context) error) (int, error) {
	step := int(cl.r.step.Load())
	ctx, cancel := context.WithTimeout(context.Background(), cl.r.size.opTimeout)
	start := time.Now()
	err := f(ctx)
	d := time.Since(start)
	cancel()
	infra := err != nil && !outcome(err)
	s := &cl.r.stats[step]
	s.mu.Lock()
	s.calls++
	s.lat = append(s.lat, d)
	if infra {
		s.errors++
		s.classes.add(errClass(err), 1)
	}
	s.mu.Unlock()
	if infra {
		cl.r.fail("step %s: a call failed after %v: %v", reshardSteps[step], d.Round(time.Millisecond), err)
	} else {
		cl.r.ok.Add(1)
	}
	return step, err
}

// outcome reports whether err is an answer of the store rather than a
// failure to reach Redis.
func outcome(err error) bool {
	for _, e := range []error{redisstore.ErrRevoked, redisstore.ErrUnknown, redisstore.ErrExpired, redisstore.ErrMalformed} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (cl *reshardCaller) count(step int, f func(s *stepStats)) {
	s := &cl.r.stats[step]
	s.mu.Lock()
	f(s)
	s.mu.Unlock()
}

func (cl *reshardCaller) login(u int) {
	user := cl.users[u]
	var g redisstore.Grant
	step, err := cl.call(func(ctx context.Context) (err error) {
		g, err = cl.r.st.Issue(ctx, user.name, reshardDevice)
		return err
	})
	if err != nil {
		// A login that failed may have made a session nobody knows.
		cl.taint(user)
		return
	}
	user.live = append(user.live, &reshardSession{id: g.SessionID, tokens: []string{g.Token}, ackStep: step})
	user.lastStep = step
	cl.count(step, func(s *stepStats) { s.acked++ })
}

func (cl *reshardCaller) taint(u *reshardUser) {
	if !u.tainted {
		u.tainted = true
		cl.r.tainted.Add(1)
	}
}

func (cl *reshardCaller) run() {
	for {
		select {
		case <-cl.r.stop:
			return
		default:
		}
		if d := cl.r.size.think; d > 0 {
			select {
			case <-cl.r.stop:
				return
			case <-time.After(rand.N(d)):
			}
		}
		u := cl.users[cl.rnd.IntN(len(cl.users))]
		if len(u.live) == 0 {
			cl.login(slices.Index(cl.users, u))
			continue
		}
		s := u.live[cl.rnd.IntN(len(u.live))]
		switch p := cl.rnd.IntN(100); {
		case p < 45 || s.pending:
			cl.rotate(u, s, p < 15)
		case p < 65:
			cl.validate(s)
		case p < 70:
			cl.replay(u, s)
		case p < 80:
			if len(u.live) < cl.r.size.maxPerUser {
				cl.login(slices.Index(cl.users, u))
			}
		case p < 88:
			cl.logout(u, s)
		case p < 91:
			cl.logoutAll(u)
		default:
			cl.list(u)
		}
	}
}

// rotate rotates s's current token; with grace, it presents the same token
// again at once, which must give the same successor.
func (cl *reshardCaller) rotate(u *reshardUser, s *reshardSession, grace bool) {
	// After a failed rotation this presents the same token again: within
	// grace, the successor if Redis had run it.
	tok := s.current()
	var g redisstore.Grant
	step, err := cl.call(func(ctx context.Context) (err error) {
		g, err = cl.r.st.Rotate(ctx, tok, reshardDevice)
		return err
	})
	switch {
	case err == nil:
		s.tokens = append(s.tokens, g.Token)
		s.pending, s.ackStep = false, step
		cl.count(step, func(st *stepStats) { st.acked++ })
	case outcome(err):
		cl.refused(u, s, step, "rotate", err)
		return
	default:
		s.pending = true
		return
	}
	if !grace {
		return
	}
	var again redisstore.Grant
	step, err = cl.call(func(ctx context.Context) (err error) {
		again, err = cl.r.st.Rotate(ctx, tok, reshardDevice)
		return err
	})
	switch {
	case err == nil && again.Token != g.Token:
		cl.r.fail("grace replay of session %s gave another successor", s.id)
		cl.count(step, func(st *stepStats) { st.honestRefused++ })
	case err != nil && outcome(err):
		cl.refused(u, s, step, "grace replay", err)
	}
}

// refused counts an honest call the store refused, and drops the session.
func (cl *reshardCaller) refused(u *reshardUser, s *reshardSession, step int, what string, err error) {
	cl.r.fail("%s of live session %s of %s (step %s): %v", what, s.id, u.name, reshardSteps[step], err)
	cl.count(step, func(st *stepStats) { st.honestRefused++ })
	cl.drop(u, s)
}

func (cl *reshardCaller) drop(u *reshardUser, s *reshardSession) {
	u.live = slices.DeleteFunc(u.live, func(x *reshardSession) bool { return x == s })
}

func (cl *reshardCaller) validate(s *reshardSession) {
	var info redisstore.TokenInfo
	step, err := cl.call(func(ctx context.Context) (err error) {
		info, err = cl.r.st.Validate(ctx, s.current())
		return err
	})
	if (err == nil && info.SessionID != s.id) || (err != nil && outcome(err)) {
		cl.r.fail("validate of live session %s (step %s): %v", s.id, reshardSteps[step], err)
		cl.count(s.ackStep, func(st *stepStats) { st.lost++ })
		cl.count(step, func(st *stepStats) { st.honestRefused++ })
		for _, u := range cl.users {
			cl.drop(u, s)
		}
	}
}

// replay presents a token two or more generations old: the session must
// be revoked for reuse.
func (cl *reshardCaller) replay(u *reshardUser, s *reshardSession) {
	if len(s.tokens) < 3 {
		cl.rotate(u, s, false)
		return
	}
	old := s.tokens[cl.rnd.IntN(len(s.tokens)-2)]
	step, err := cl.call(func(ctx context.Context) (err error) {
		_, err = cl.r.st.Rotate(ctx, old, reshardDevice)
		return err
	})
	if err != nil && !outcome(err) {
		// Whether Redis revoked the session is unknown: replay again.
		step, err = cl.call(func(ctx context.Context) (err error) {
			_, err = cl.r.st.Rotate(ctx, old, reshardDevice)
			return err
		})
	}
	cl.count(step, func(st *stepStats) {
		st.replays++
		if errors.Is(err, redisstore.ErrRevoked) {
			st.acked++
		} else {
			st.replaysMissed++
		}
	})
	if !errors.Is(err, redisstore.ErrRevoked) {
		cl.r.fail("replay of session %s (step %s): %v, want ErrReused", s.id, reshardSteps[step], err)
	}
	s.revoked, s.ackStep, u.lastStep = true, step, step
	cl.drop(u, s)
	u.revoked = append(u.revoked, s)
}

func (cl *reshardCaller) logout(u *reshardUser, s *reshardSession) {
	var n int
	var err error
	var step int
	for range 3 {
		if step, err = cl.call(func(ctx context.Context) (err error) {
			n, err = cl.r.st.RevokeSession(ctx, u.name, s.id)
			return err
		}); err == nil {
			break
		}
	}
	if err != nil {
		cl.taint(u)
		return
	}
	if n != 1 && !s.pending {
		cl.r.fail("logout of live session %s (step %s): revoked %d", s.id, reshardSteps[step], n)
		cl.count(s.ackStep, func(st *stepStats) { st.lost++ })
	}
	cl.count(step, func(st *stepStats) { st.acked++ })
	s.revoked, s.ackStep, u.lastStep = true, step, step
	cl.drop(u, s)
	u.revoked = append(u.revoked, s)
}

func (cl *reshardCaller) logoutAll(u *reshardUser) {
	var n int
	var err error
	var step int
	for range 3 {
		if step, err = cl.call(func(ctx context.Context) (err error) {
			n, err = cl.r.st.RevokeAll(ctx, u.name, "")
			return err
		}); err == nil {
			break
		}
	}
	if err != nil {
		cl.taint(u)
		return
	}
	if !u.tainted && n != len(u.live) {
		cl.r.fail("log-out-everywhere of %s (step %s): revoked %d, the model has %d live", u.name, reshardSteps[step], n, len(u.live))
		cl.count(step, func(st *stepStats) { st.lost++ })
	}
	cl.count(step, func(st *stepStats) { st.acked++ })
	for _, s := range u.live {
		s.revoked, s.ackStep = true, step
	}
	u.revoked = append(u.revoked, u.live...)
	u.live, u.lastStep = nil, step
}

func (cl *reshardCaller) list(u *reshardUser) {
	var page redisstore.SessionPage
	step, err := cl.call(func(ctx context.Context) (err error) {
		page, err = cl.r.st.ListSessions(ctx, u.name, redisstore.ListOptions{Limit: 100})
		return err
	})
	if err != nil || u.tainted {
		return
	}
	if got, want := sessionIDs(page.Sessions), liveIDs(u); !mapsEqual(got, want) {
		cl.r.fail("listing of %s (step %s): %v, the model has %v", u.name, reshardSteps[step], got, want)
		cl.count(step, func(st *stepStats) { st.lost++ })
	}
}

func liveIDs(u *reshardUser) map[string]bool {
	out := make(map[string]bool, len(u.live))
	for _, s := range u.live {
		out[s.id] = true
	}
	return out
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// finalCheck checks every session of the caller's users once the load has
// stopped: live ones validate with their last token (a pending rotation is
// presented again first), revoked ones are refused, listings match.
func (cl *reshardCaller) finalCheck(ctx context.Context) {
	st := cl.r.st
	for _, u := range cl.users {
		for _, s := range u.live {
			cl.r.finalChecks.Add(1)
			tok := s.current()
			if s.pending {
				g, err := st.Rotate(ctx, tok, reshardDevice)
				if err != nil {
					cl.r.fail("final: pending rotation of %s: %v", s.id, err)
					cl.count(s.ackStep, func(st *stepStats) { st.lost++ })
					continue
				}
				tok = g.Token
			}
			if info, err := st.Validate(ctx, tok); err != nil || info.SessionID != s.id {
				cl.r.fail("final: live session %s of %s: %v", s.id, u.name, err)
				cl.count(s.ackStep, func(st *stepStats) { st.lost++ })
			}
		}
		for _, s := range u.revoked {
			cl.r.finalChecks.Add(1)
			if _, err := st.Validate(ctx, s.current()); !errors.Is(err, redisstore.ErrRevoked) {
				cl.r.fail("final: revoked session %s of %s: %v, want ErrRevoked", s.id, u.name, err)
				cl.count(s.ackStep, func(st *stepStats) { st.lost++ })
			}
		}
		if u.tainted {
			continue
		}
		cl.r.finalChecks.Add(1)
		got, err := listAll(ctx, st, u.name, 0)
		if err != nil || !mapsEqual(sessionIDs(got), liveIDs(u)) {
			cl.r.fail("final: listing of %s: %v, %v; the model has %v", u.name, sessionIDs(got), err, liveIDs(u))
			cl.count(u.lastStep, func(st *stepStats) { st.lost++ })
		}
	}
}

// fillSlots writes n extra keys into the slot of every user of prefix, so
// that moving such a slot takes n/pipeline MIGRATE round trips.
func fillSlots(ctx context.Context, t *testing.T, tc *redistest.TestCluster, prefix string, n int) {
	t.Helper()
	tags := make(map[string]bool)
	for _, k := range userKeys(ctx, t, tc, prefix) {
		if i := strings.IndexByte(k, '}'); i > 0 {
			tags[k[:i+1]] = true
		}
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: tc.Addrs()})
	defer c.Close()
	for tag := range tags {
		pipe := c.Pipeline()
		for i := 0; i < n; i++ {
			pipe.Set(ctx, fmt.Sprintf("%s:filler:%d", tag, i), "x", time.Hour)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// percentile returns the q-quantile of ds (sorted in place).
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}
