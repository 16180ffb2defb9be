package redisstore

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"
)

// MoveKey refuses, before any Redis call, a key that is not one of the
// store's, and any key when the store has no Options.MoveFrom.
func TestMoveKeyRefusesBadKeys(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer rdb.Close()
	secret := []byte("move-test-secret-move-test-secret-move")
	st, err := New(rdb, Options{Secret: secret, MoveFrom: rdb})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, key := range []string{
		"", "sc:", "other:{AAAAAAAA}:s:AAAAAAAAAAAAAAAAAAAAAA", "sc:dpop:clock", "sc:{AAAAAAAA}", "sc:{AAAAAAAA}:x:1",
		"sc:{AAAAAAAA}:s:short", "sc:{AAAAAAAA}:u:", "sc:{AAAAAAAA}:m:extra", "sc:{AAAA}:s:AAAAAAAAAAAAAAAAAAAAAA",
		"sc:{AAA}:l:more", "sc:{AAAAAAAA}s:AAAAAAAAAAAAAAAAAAAAAA",
	} {
		if n, err := st.MoveKey(ctx, key); n != 0 || !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("MoveKey(%q): %d, %v; want 0, ErrInvalidArgument", key, n, err)
		}
	}
	plain, err := New(rdb, Options{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.MoveKey(ctx, "sc:{AAAAAAAA}:s:AAAAAAAAAAAAAAAAAAAAAA"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("MoveKey without MoveFrom: %v, want ErrInvalidArgument", err)
	}
}
