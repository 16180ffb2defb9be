package sessioncache_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// sessionKeyOf returns the Redis key of the session sessionID.
func sessionKeyOf(t *testing.T, b *redistest.Backend, sessionID string) string {
	t.Helper()
	keys, err := b.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	suffix := "}:s:" + sessionMember(t, sessionID)
	for _, k := range keys {
		if strings.HasSuffix(k, suffix) {
			return k
		}
	}
	t.Fatalf("no key of session %s in %v", sessionID, keys)
	return ""
}

// testDamagedRecords: a session whose hash was damaged by hand (a field
// deleted, truncated or garbled) is answered with ErrCorrupt and an
// EventCorrupt, never a raw script error, with nothing written; a listing
// skips it and lists the user's other sessions.
func testDamagedRecords(t *testing.T, b *redistest.Backend) {
	type want struct{ rotateCur, rotatePrev, revoke bool } // true: ErrCorrupt
	for _, tc := range []struct {
		name   string
		damage func(h map[string]string) (field string, value *string)
		want   want
	}{
		{"s deleted", func(map[string]string) (string, *string) { return "s", nil }, want{true, true, false}},
		{"s garbage", func(map[string]string) (string, *string) { return "s", ptr("garbage") }, want{true, true, false}},
		{"s without colon", func(h map[string]string) (string, *string) {
			return "s", ptr(h["s"][:13] + "x" + h["s"][14:])
		}, want{true, true, false}},
		{"s last used garbled", func(h map[string]string) (string, *string) {
			// The hot path's shape check does not parse numbers: the current
			// token rotates (and writes a good last used); the slow path and
			// the listing see the damage.
			return "s", ptr(h["s"][:14] + "zzzzzzzzzzzzz" + h["s"][27:])
		}, want{false, true, false}},
		{"h truncated", func(h map[string]string) (string, *string) { return "h", ptr(h["h"][:12]) }, want{true, true, true}},
		{"h client binding overflows", func(h map[string]string) (string, *string) {
			return "h", ptr(h["h"][:16] + "\x02\x40ab")
		}, want{true, true, true}},
		{"h without user id", func(h map[string]string) (string, *string) { return "h", ptr(h["h"][:16]) }, want{true, true, true}},
		{"h deleted", func(map[string]string) (string, *string) { return "h", nil }, want{true, true, true}},
		{"x garbage", func(map[string]string) (string, *string) { return "x", ptr("soon") }, want{false, false, false}},
		{"c deleted", func(map[string]string) (string, *string) { return "c", nil }, want{false, false, false}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			b := b.Isolated(t)
			f := newFixture(t, b, redisstore.Options{Grace: time.Minute})
			ctx := context.Background()
			healthy := f.issue(t, "alice", laptop)
			g0 := f.issue(t, "alice", laptop)
			g1 := f.rotate(t, g0.Token)
			key := sessionKeyOf(t, b, g1.SessionID)
			damageSession(t, b, key, tc.damage)
			f.TakeEvents()
			damaged, err := b.Client.HGetAll(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			unchanged := func(what string) {
				t.Helper()
				now, err := b.Client.HGetAll(ctx, key).Result()
				if err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(damaged, now); d != "" {
					t.Errorf("%s wrote to the damaged session (-before +after):\n%s", what, d)
				}
			}
			corrupt := 0
			check := func(what string, err error, wantCorrupt bool) {
				t.Helper()
				if wantCorrupt {
					if !errors.Is(err, redisstore.ErrCorrupt) {
						t.Errorf("%s: err = %v, want ErrCorrupt", what, err)
					}
					corrupt++
					unchanged(what)
				} else if errors.Is(err, redisstore.ErrCorrupt) {
					t.Errorf("%s: err = %v, want no ErrCorrupt", what, err)
				}
			}

			l := f.list(t, "alice")
			if got := ids(l); !cmp.Equal(got, []string{healthy.SessionID}) {
				t.Errorf("ListSessions = %v, want only the healthy session %s", got, healthy.SessionID)
			}
			corrupt++
			_, err = f.Store.Rotate(ctx, g0.Token, redisstore.Client{}) // slow path: a grace replay
			check("Rotate of the predecessor", err, tc.want.rotatePrev)
			if tc.want.rotateCur {
				_, err = f.Store.Rotate(ctx, g1.Token, redisstore.Client{})
				check("Rotate of the current token", err, true)
			}
			if tc.want.revoke {
				n, err := f.Store.RevokeToken(ctx, g1.Token)
				check("RevokeToken", err, true)
				if n != 0 {
					t.Errorf("RevokeToken of a damaged session revoked %d", n)
				}
			}
			n := 0
			for _, e := range f.TakeEvents() {
				if e.Kind == redisstore.EventCorrupt {
					n++
					if e.SessionID != g1.SessionID {
						t.Errorf("EventCorrupt names session %s, want %s", e.SessionID, g1.SessionID)
					}
				}
			}
			if n != corrupt {
				t.Errorf("%d EventCorrupt, want %d (one per ErrCorrupt and one for the listing)", n, corrupt)
			}
			// The healthy session is untouched.
			f.rotate(t, healthy.Token)
		})
	}
}

// damageSession sets (or, for nil, deletes) the field of the session hash
// key that damage names, given the hash as it is.
func damageSession(t *testing.T, b *redistest.Backend, key string, damage func(h map[string]string) (field string, value *string)) {
	t.Helper()
	ctx := context.Background()
	h, err := b.Client.HGetAll(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	field, value := damage(h)
	if value == nil {
		err = b.Client.HDel(ctx, key, field).Err()
	} else {
		err = b.Client.HSet(ctx, key, field, *value).Err()
	}
	if err != nil {
		t.Fatal(err)
	}
}

func ptr(s string) *string { return &s }

// sessionMember returns a session id as its keys and index write it.
func sessionMember(t *testing.T, sessionID string) string {
	t.Helper()
	id, err := uuid.Parse(sessionID)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(id[:])
}
