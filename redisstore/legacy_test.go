package redisstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

func sha(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

// TestLegacyNewerRowConverts: the import writes a newer row's lookup key
// before it moves the session to that row; a presentation in between
// converts the newer row, and the row before it is then a replay.
func TestLegacyNewerRowConverts(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	s, err := New(rdb, Options{Secret: []byte("a test secret of at least 32 bytes, yes"), LegacyHash: sha})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	mr.SetTime(now)
	f := LegacyFamily{SessionID: uuid.NewString(), UserID: "alice", CreatedAt: now.Add(-time.Hour),
		Rows: []LegacyRow{{Digest: sha("old"), CreatedAt: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour)}}}
	if r, err := s.ImportLegacy(ctx, f); err != nil || r.Outcome != ImportCreated {
		t.Fatalf("ImportLegacy = %v, %v", r, err)
	}
	// The first half of an advance: the newer row's lookup entry only.
	newer := LegacyRow{Digest: sha("new"), CreatedAt: now.Add(-time.Minute), ExpiresAt: now.Add(2 * time.Hour)}
	var uh [userHashLen]byte
	s.kr.userHash(uh[:], "alice")
	sid := uuid.MustParse(f.SessionID)
	var entry [2]string
	entry[0], entry[1] = s.legacy.lookupAt(s.opt.KeyPrefix, newer.Digest)
	x := now.Add(24 * time.Hour).UnixMilli()
	if err := s.writeLookups(ctx, []LegacyRow{newer}, [][2]string{entry}, []bool{false}, uh, sid, reply{arr: []any{x}}); err != nil {
		t.Fatal(err)
	}
	g, err := s.Rotate(ctx, "new", Client{})
	if err != nil || g.SessionID != f.SessionID {
		t.Fatalf("Rotate(the newer row) = %v, %v; want a conversion", g, err)
	}
	if _, err := s.Rotate(ctx, "old", Client{}); !errors.Is(err, ErrReused) {
		t.Fatalf("Rotate(the row before it) = %v, want ErrReused", err)
	}
}

// TestLookupValue: a lookup value round-trips, and anything else is
// refused as corrupt.
func TestLookupValue(t *testing.T) {
	lk := lookup{order: 1733000000123456}
	copy(lk.userHash[:], "0123456789ab")
	copy(lk.sessionID[:], "0123456789abcdef")
	v := lk.encode()
	if len(v) > 64 {
		t.Errorf("a lookup value is %d bytes: more than 64 turns its bucket from a listpack into a hashtable", len(v))
	}
	got, err := decodeLookup(v)
	if err != nil || got != lk {
		t.Fatalf("decodeLookup(encode) = %+v, %v", got, err)
	}
	for _, bad := range []string{"", v[1:], "\x02" + v[1:], v + "x"} {
		if _, err := decodeLookup(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decodeLookup(%q) = %v, want ErrCorrupt", bad, err)
		}
	}
	if got := orderText(lk.order); got != "1733000000123456" || orderText(-5) != strings.Repeat("0", 16) {
		t.Errorf("orderText = %q", got)
	}
}
