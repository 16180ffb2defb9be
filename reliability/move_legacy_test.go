package reliability_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// TestMoveLegacySessions moves sessions imported from a SQL table
// (ImportLegacy), with their lookup buckets, from a single Redis onto a
// cluster: a family's current legacy token converts on the cluster, before
// and after the walk; an older row presented there is a replay that revokes
// the session; each bucket keeps its deadline on the cluster (it never
// exists there without a TTL); a second walk moves nothing and the old
// Redis keeps none of the store's keys.
func TestMoveLegacySessions(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	old := startServer(t).Client(t)
	prefix := redistest.NewPrefix()
	digest := func(tok string) []byte { h := sha256.Sum256([]byte(tok)); return h[:] }
	opt := redisstore.Options{KeyPrefix: prefix, Grace: redisstore.NoGrace, LegacyHash: digest}
	oldSt := wrap(t, old, opt)

	const families, rows = 40, 3
	tokens := make([][]string, families)
	now := time.Now()
	for i := range tokens {
		f := redisstore.LegacyFamily{SessionID: uuid.NewString(), UserID: "user-" + uuid.NewString()[:8], CreatedAt: now.Add(-time.Hour)}
		for j := 0; j < rows; j++ {
			var b [32]byte
			rand.Read(b[:])
			tok := "pgt_" + base64.RawURLEncoding.EncodeToString(b[:])
			tokens[i] = append(tokens[i], tok)
			created := now.Add(-time.Duration(rows-j) * time.Minute)
			f.Rows = append(f.Rows, redisstore.LegacyRow{Digest: digest(tok), CreatedAt: created, ExpiresAt: created.Add(24 * time.Hour)})
		}
		if r, err := oldSt.ImportLegacy(ctx, f); err != nil || r.Outcome != redisstore.ImportCreated {
			t.Fatalf("ImportLegacy = %v, %v", r.Outcome, err)
		}
	}
	buckets := map[string]int64{}
	var cursor uint64
	for {
		keys, next, err := old.Scan(ctx, cursor, prefix+"{*}:l", 1000).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if buckets[k], err = old.Do(ctx, "pexpiretime", k).Int64(); err != nil || buckets[k] <= 0 {
				t.Fatalf("bucket %s: PEXPIRETIME %d, %v", k, buckets[k], err)
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	if len(buckets) == 0 {
		t.Fatal("the import wrote no lookup bucket")
	}

	tc := redistest.StartCluster(t, 3, 0, time.Second)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: tc.Addrs()})
	t.Cleanup(func() { cc.Close() })
	moving := opt
	moving.MoveFrom = old
	newSt := wrap(t, cc, moving)

	// The first quarter converts on the cluster before the walk (the
	// bucket is still on the old Redis), the second quarter has an older
	// row replayed there first.
	convert := func(i int) {
		t.Helper()
		g, err := newSt.Rotate(ctx, tokens[i][rows-1], redisstore.Client{})
		if err != nil {
			t.Fatalf("family %d: its current legacy token: %v", i, err)
		}
		if _, err := newSt.Rotate(ctx, g.Token, redisstore.Client{}); err != nil {
			t.Fatalf("family %d: its converted token: %v", i, err)
		}
	}
	replay := func(i int) {
		t.Helper()
		if _, err := newSt.Rotate(ctx, tokens[i][0], redisstore.Client{}); !errors.Is(err, redisstore.ErrReused) {
			t.Fatalf("family %d: a rotated row: %v, want ErrReused", i, err)
		}
		if _, err := newSt.Rotate(ctx, tokens[i][rows-1], redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) {
			t.Fatalf("family %d: the current row after a replay: %v, want ErrRevoked", i, err)
		}
	}
	for i := 0; i < families/4; i++ {
		convert(i)
	}
	for i := families / 4; i < families/2; i++ {
		replay(i)
	}
	walkMove(t, ctx, newSt, old, prefix)
	for k, want := range buckets {
		got, err := cc.Do(ctx, "pexpiretime", k).Int64()
		if err != nil {
			t.Fatal(err)
		}
		if got < want {
			t.Errorf("bucket %s expires at %d on the cluster, %d on the old Redis", k, got, want)
		}
	}
	for i := families / 2; i < 3*families/4; i++ {
		convert(i)
	}
	for i := 3 * families / 4; i < families; i++ {
		replay(i)
	}
	if n := walkMove(t, ctx, newSt, old, prefix); n != 0 {
		t.Errorf("a second walk wrote %d keys, want 0", n)
	}
	if n, _ := leftOnOld(t, ctx, old, prefix); n != 0 {
		t.Errorf("the old Redis keeps %d keys of the store", n)
	}
}
