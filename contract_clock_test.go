package sessioncache_test

import (
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// One clock for every service instance: every decision that compares two
// moments (grace, expiry, a late retry against a replay) is taken inside
// a script with Redis's TIME, or needs no clock (call ids). The store has no
// clock of its own, so instances whose clocks disagree cannot disagree on
// an outcome. TestLibraryReadsNoClock keeps it that way; testSkewedInstances
// runs the cases that broke with per-instance clocks through two instances
// (two stores, two connection pools) on the same Redis or cluster.

// TestLibraryReadsNoClock fails if the library reads the local clock. Two
// files may: watch.go times the heartbeats of the revocation feed and says
// when it sent one (NoticeSynced), a measure of its own connection that no
// outcome of a token or a session depends on, and that its listener
// compares only with its own clock; moving.go pauses before sending again a
// call that Redis Cluster refused unrun while its slot moved, which decides
// only when the call goes out again, never what it answers.
func TestLibraryReadsNoClock(t *testing.T) {
	files, err := filepath.Glob("redisstore/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no library sources: %v", err)
	}
	clockFuncs := map[string]bool{"Now": true, "Since": true, "Until": true, "After": true, "Tick": true, "NewTimer": true, "NewTicker": true, "AfterFunc": true}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || filepath.Base(name) == "watch.go" || filepath.Base(name) == "moving.go" {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == "time" && clockFuncs[sel.Sel.Name] {
				t.Errorf("%s: the library reads the local clock (time.%s): decisions must use Redis's clock", fset.Position(sel.Pos()), sel.Sel.Name)
			}
			return true
		})
	}
}

// instance is a second service instance on the same backend: its own
// connection pool and store, the same options.
func instance(t *testing.T, b *redistest.Backend, opt redisstore.Options) *redisstore.Store {
	t.Helper()
	var c redis.UniversalClient
	switch cl := b.Client.(type) {
	case *redis.Client:
		c = redis.NewClient(cl.Options())
	case *redis.ClusterClient:
		c = redis.NewClusterClient(cl.Options())
	default:
		t.Fatalf("unexpected client %T", b.Client)
	}
	t.Cleanup(func() { c.Close() })
	opt.KeyPrefix = b.Prefix
	return redistest.NewStore(t, c, opt).Store
}

// testSkewedInstances: two service instances (two stores, two connection
// pools) on one backend agree on every grace, reuse and expiry decision,
// since Redis takes each of them.
func testSkewedInstances(t *testing.T, b *redistest.Backend) {
	ctx := context.Background()
	t.Run("GrandparentThroughOtherInstance", func(t *testing.T) {
		b := b.Isolated(t)
		f := newFixture(t, b, redisstore.Options{Grace: time.Minute})
		other := instance(t, b, f.Options)
		g0 := f.issue(t, "alice", laptop)
		g1 := f.rotate(t, g0.Token)
		g2 := f.rotate(t, g1.Token)
		_, err := other.Rotate(ctx, g0.Token, redisstore.Client{})
		wantErr(t, "grandparent through the other instance", err, redisstore.ErrReused)
		_, err = f.Store.Validate(ctx, g2.Token)
		wantErr(t, "the session after the grandparent replay", err, redisstore.ErrRevoked)
	})
	t.Run("GraceOffThroughOtherInstance", func(t *testing.T) {
		b := b.Isolated(t)
		f := newFixture(t, b, redisstore.Options{Grace: redisstore.NoGrace})
		other := instance(t, b, f.Options)
		g0 := f.issue(t, "alice", laptop)
		f.rotate(t, g0.Token)
		g, err := other.Rotate(ctx, g0.Token, redisstore.Client{})
		if !errors.Is(err, redisstore.ErrReused) {
			t.Fatalf("predecessor through the other instance, grace off: %v (replayed %v), want ErrReused", err, g.Replayed)
		}
	})
	t.Run("RaceAcrossInstancesGraceOff", func(t *testing.T) {
		b := b.Isolated(t)
		// 64 concurrent rotations of one token, half through each instance,
		// 40 times: never a grace replay, always 1 winner and 1 reuse.
		f := newFixture(t, b, redisstore.Options{Grace: redisstore.NoGrace})
		other := instance(t, b, f.Options)
		stores := []*redisstore.Store{f.Store.Store, other}
		for run := 0; run < 40; run++ {
			g := f.issue(t, "alice", laptop)
			grants, errs := raceRotateOn(stores, g.Token, 64)
			wins, reused, revoked := 0, 0, 0
			for i, err := range errs {
				switch {
				case err == nil && grants[i].Replayed:
					t.Fatalf("run %d: a grace replay with grace off", run)
				case err == nil:
					wins++
				case errors.Is(err, redisstore.ErrReused):
					reused++
				case errors.Is(err, redisstore.ErrRevoked):
					revoked++
				default:
					t.Fatalf("run %d: %v", run, err)
				}
			}
			if wins != 1 || reused != 1 || revoked != 62 {
				t.Fatalf("run %d: %d won, %d reuse, %d revoked; want 1, 1, 62", run, wins, reused, revoked)
			}
		}
	})
	t.Run("PredecessorAfterGraceThroughOtherInstance", func(t *testing.T) {
		b := b.Isolated(t)
		f := newFixture(t, b, redisstore.Options{Grace: 150 * time.Millisecond})
		other := instance(t, b, f.Options)
		g0 := f.issue(t, "alice", laptop)
		f.rotate(t, g0.Token)
		b.Clock.Advance(200 * time.Millisecond)
		g, err := other.Rotate(ctx, g0.Token, redisstore.Client{})
		if !errors.Is(err, redisstore.ErrReused) {
			t.Fatalf("predecessor after grace through the other instance: %v (got a token: %v), want ErrReused", err, g.Token != "")
		}
	})
	t.Run("TwoTabsOnTwoInstances", func(t *testing.T) {
		b := b.Isolated(t)
		f := newFixture(t, b, redisstore.Options{Grace: 2 * time.Second})
		other := instance(t, b, f.Options)
		g0 := f.issue(t, "alice", laptop)
		g1 := f.rotate(t, g0.Token)
		g, err := other.Rotate(ctx, g0.Token, redisstore.Client{})
		if err != nil || !g.Replayed || g.Token != g1.Token {
			t.Fatalf("second tab through the other instance: %v (replayed %v), want the same successor", err, g.Replayed)
		}
		if _, err := f.Store.Validate(ctx, g1.Token); err != nil {
			t.Fatalf("the session after two tabs: %v", err)
		}
	})
	t.Run("ExpiryAgreed", func(t *testing.T) {
		b := b.Isolated(t)
		f := newFixture(t, b, redisstore.Options{IdleTTL: 300 * time.Millisecond, AbsoluteTTL: time.Minute})
		other := instance(t, b, f.Options)
		g := f.issue(t, "alice", laptop)
		b.Clock.Advance(350 * time.Millisecond)
		for i, s := range []*redisstore.Store{f.Store.Store, other} {
			_, err := s.Validate(ctx, g.Token)
			wantErr(t, "Validate after the idle deadline, instance "+string(rune('A'+i)), err, redisstore.ErrExpired)
		}
	})
}

// raceRotateOn rotates tok n times at once, spread over stores.
func raceRotateOn(stores []*redisstore.Store, tok string, n int) ([]redisstore.Grant, []error) {
	grants, errs := make([]redisstore.Grant, n), make([]error, n)
	start := make(chan struct{})
	done := make(chan struct{})
	for i := 0; i < n; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			<-start
			grants[i], errs[i] = stores[i%len(stores)].Rotate(context.Background(), tok, redisstore.Client{})
		}()
	}
	close(start)
	for i := 0; i < n; i++ {
		<-done
	}
	return grants, errs
}
