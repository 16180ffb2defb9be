package bench

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/redisstore"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5000 * time.Microsecond}, {0.99, 9900 * time.Microsecond}, {0.999, 9990 * time.Microsecond}, {1, 10000 * time.Microsecond}} {
		got := h.Quantile(tc.q)
		if rel := math.Abs(float64(got-tc.want)) / float64(tc.want); rel > 0.016 {
			t.Errorf("Quantile(%v) = %v, want %v within 1.6%%", tc.q, got, tc.want)
		}
	}
	var o Histogram
	o.Record(time.Hour)
	h.Merge(&o)
	if h.Count() != 10001 || h.Max() != time.Hour {
		t.Errorf("after Merge: count %d, max %v; want 10001, 1h", h.Count(), h.Max())
	}
}

// checkBaseline runs the life of a session through a baseline: the
// baselines must be correct for the comparison to mean anything.
func checkBaseline(t *testing.T, st Store) {
	ctx := context.Background()
	tok, err := st.Issue(ctx, "alice", Login)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if _, err := st.Issue(ctx, "alice", Login); err != nil {
		t.Fatalf("Issue: %v", err)
	}
	next, _, err := st.Rotate(ctx, tok, Refresh)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if err := st.Validate(ctx, next); err != nil {
		t.Errorf("Validate(successor): %v", err)
	}
	if err := st.Validate(ctx, tok); err == nil {
		t.Errorf("Validate(rotated token) succeeded")
	}
	if n, err := st.ListSessions(ctx, "alice"); err != nil || n != 2 {
		t.Errorf("ListSessions = %d, %v; want 2 sessions", n, err)
	}
	if _, _, err := st.Rotate(ctx, tok, Refresh); !errors.Is(err, redisstore.ErrReused) {
		t.Errorf("Rotate(rotated token) = %v, want ErrReused", err)
	}
	if _, _, err := st.Rotate(ctx, next, Refresh); err == nil {
		t.Errorf("Rotate(successor of a reused token) succeeded")
	}
	if n, err := st.RevokeAll(ctx, "alice"); err != nil || n < 1 {
		t.Errorf("RevokeAll = %d, %v; want at least 1", n, err)
	}
	if n, err := st.ListSessions(ctx, "alice"); err != nil || n != 0 {
		t.Errorf("ListSessions after RevokeAll = %d, %v; want 0", n, err)
	}
}

func TestNaive(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	checkBaseline(t, NewNaive(rdb, "naive:", time.Hour))
}

func TestPostgres(t *testing.T) {
	pg, err := NewPostgres(context.Background(), postgresPool(t, 4, true), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Drop(context.Background())
	checkBaseline(t, pg)
}
