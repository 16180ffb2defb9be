package reliability_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// TestMoveRollingUpdate: during a rolling update of the configuration,
// instances still on the old Redis (no MoveFrom) run beside instances on
// the cluster (with MoveFrom). Once a user's keys are moved, an old-config
// instance answers ErrMoved (retry), not ErrUnknown (logged out), at
// Rotate, Validate, RevokeToken, RevokeSession, CheckSession, RevokeAll and
// ListSessions, and writes nothing; a token of a user never moved whose session is gone, and a
// token never issued, still get ErrUnknown. A user who logs in again on an
// old-config instance after the move gets a working session there; the
// next call on the cluster moves it too, merged with the sessions moved
// before (the marker left by the first move does not stop it), and the
// old Redis then holds only markers, each with a TTL.
func TestMoveRollingUpdate(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	oldClient := startServer(t).Client(t)
	prefix := redistest.NewPrefix()
	opt := redisstore.Options{KeyPrefix: prefix, Grace: redisstore.NoGrace, IdleTTL: time.Hour, AbsoluteTTL: 2 * time.Hour}
	oldSt := wrap(t, oldClient, opt)

	cc, newSt := startMoveTarget(t, oldClient, opt)

	const user, other = "rolling-user", "rolling-other"
	a1, err := oldSt.Issue(ctx, user, redisstore.Client{})
	if err != nil {
		t.Fatal(err)
	}
	a2, err := oldSt.Issue(ctx, user, redisstore.Client{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := oldSt.Issue(ctx, other, redisstore.Client{})
	if err != nil {
		t.Fatal(err)
	}

	// The cluster moves the user's keys at its first call for the user.
	g1, err := newSt.Rotate(ctx, a1.Token, redisstore.Client{})
	if err != nil {
		t.Fatal(err)
	}
	oldKeys := func() (left, markers int) { return leftOnOld(t, ctx, oldClient, prefix) }
	if left, markers := oldKeys(); left != 2 || markers != 1 {
		t.Fatalf("after the user's move the old Redis holds %d keys (want 2: the other user's) and %d markers (want 1)", left, markers)
	}

	// An old-config instance: ErrMoved for every call on the moved user.
	for name, call := range map[string]func() error{
		"Rotate(current)": func() error { _, err := oldSt.Rotate(ctx, g1.Token, redisstore.Client{}); return err },
		"Rotate(moved)":   func() error { _, err := oldSt.Rotate(ctx, a2.Token, redisstore.Client{}); return err },
		"Validate":        func() error { _, err := oldSt.Validate(ctx, a2.Token); return err },
		"RevokeToken":     func() error { _, err := oldSt.RevokeToken(ctx, a2.Token); return err },
		"RevokeSession":   func() error { _, err := oldSt.RevokeSession(ctx, user, a2.SessionID); return err },
		"CheckSession":    func() error { return oldSt.CheckSession(ctx, user, a2.SessionID) },
		"RevokeAll":       func() error { _, err := oldSt.RevokeAll(ctx, user, ""); return err },
		"RevokeAll(keep)": func() error { _, err := oldSt.RevokeAll(ctx, user, a2.SessionID); return err },
		"ListSessions":    func() error { _, err := oldSt.ListSessions(ctx, user, redisstore.ListOptions{}); return err },
	} {
		if err := call(); !errors.Is(err, redisstore.ErrMoved) {
			t.Errorf("old-config %s of a moved user: %v, want ErrMoved", name, err)
		}
	}
	if left, markers := oldKeys(); left != 2 || markers != 1 {
		t.Errorf("the old-config calls wrote on the old Redis: %d keys, %d markers; want 2, 1", left, markers)
	}
	// The moved sessions are intact on the cluster: nothing was revoked.
	plain := wrap(t, cc, opt)
	if _, err := plain.Rotate(ctx, a2.Token, redisstore.Client{}); err != nil {
		t.Errorf("the moved session after the old-config calls: %v, want it to rotate", err)
	}

	// Not moved: a user whose session is gone, a token never issued.
	if err := oldClient.Del(ctx, sessionKeyOf(t, ctx, oldClient, prefix)).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := oldSt.Rotate(ctx, b.Token, redisstore.Client{}); !errors.Is(err, redisstore.ErrUnknown) {
		t.Errorf("old-config Rotate of a lost session never moved: %v, want ErrUnknown", err)
	}
	if _, err := oldSt.Validate(ctx, b.Token); !errors.Is(err, redisstore.ErrUnknown) {
		t.Errorf("old-config Validate of a lost session never moved: %v, want ErrUnknown", err)
	}
	otherOpt := opt
	otherOpt.KeyPrefix = redistest.NewPrefix()
	otherOpt.Secret = []byte("another-secret-another-secret-another-secret")
	forged, err := wrap(t, oldClient, otherOpt).Issue(ctx, user, redisstore.Client{}) // of the moved user, under another secret
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oldSt.Rotate(ctx, forged.Token, redisstore.Client{}); !errors.Is(err, redisstore.ErrUnknown) {
		t.Errorf("old-config Rotate of a token this store never issued: %v, want ErrUnknown", err)
	}

	// The user logs in again on an old-config instance: it works there.
	a3, err := oldSt.Issue(ctx, user, redisstore.Client{})
	if err != nil {
		t.Fatal(err)
	}
	a3r, err := oldSt.Rotate(ctx, a3.Token, redisstore.Client{})
	if err != nil {
		t.Fatalf("a session issued on the old Redis after the user's move does not rotate there: %v", err)
	}
	// The cluster moves it too (the stale marker does not stop it) and
	// merges it with the sessions moved before.
	if _, err := newSt.Rotate(ctx, a3r.Token, redisstore.Client{}); err != nil {
		t.Fatalf("the cluster rotating a session issued on the old Redis after the move: %v", err)
	}
	page, err := plain.ListSessions(ctx, user, redisstore.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Sessions) != 3 {
		t.Errorf("the user has %d sessions on the cluster after the second move, want 3", len(page.Sessions))
	}
	if _, err := oldSt.Validate(ctx, a3.Token); !errors.Is(err, redisstore.ErrMoved) {
		t.Errorf("old-config Validate after the second move: %v, want ErrMoved", err)
	}
	if left, markers := oldKeys(); left != 1 || markers != 1 {
		t.Errorf("after the second move the old Redis holds %d keys (want 1: the other user's index) and %d markers (want 1)", left, markers)
	}
}

// sessionKeyOf returns the one session key under prefix on c.
func sessionKeyOf(t *testing.T, ctx context.Context, c redis.UniversalClient, prefix string) string {
	t.Helper()
	keys, err := c.Keys(ctx, prefix+"*:s:*").Result()
	if err != nil || len(keys) != 1 || !strings.HasPrefix(keys[0], prefix) {
		t.Fatalf("session keys under the prefix: %v, %v; want one", keys, err)
	}
	return keys[0]
}
