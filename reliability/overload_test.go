package reliability_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// TestOutOfMemory fills a Redis with maxmemory 4mb and noeviction with
// unrelated keys until it refuses writes. Then logins and rotations must
// fail with Redis's OOM error and leave the store's keyspace exactly as it
// was; reads still answer; revocations (logout, log out everywhere, and
// the revocation that a replayed token triggers) must still succeed, since
// they are what an operator needs during an incident.
func TestOutOfMemory(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
	c := srv.Client(t)
	b := &redistest.Backend{Kind: redistest.Real, Client: c, Prefix: redistest.NewPrefix()}
	st := wrap(t, c, redisstore.Options{KeyPrefix: b.Prefix})
	ctx := bg(t)
	if err := st.CheckEvictionPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	const users, sessions = 10, 60
	grants := make([]redisstore.Grant, sessions)
	first := make([]string, sessions) // each session's first token, rotated since
	for i := range grants {
		g, err := st.Issue(ctx, fmt.Sprintf("user-%d", i%users), redisstore.Client{DeviceID: "d"})
		if err != nil {
			t.Fatal(err)
		}
		first[i] = g.Token
		for r := 0; r < 2; r++ {
			if g, err = st.Rotate(ctx, g.Token, redisstore.Client{}); err != nil {
				t.Fatal(err)
			}
		}
		grants[i] = g
	}
	filled := 0
	value := strings.Repeat("x", 4096)
	for ; ; filled++ {
		err := c.Set(ctx, fmt.Sprintf("%s%d", fillerPrefix, filled), value, 0).Err()
		if err == nil {
			continue
		}
		if !strings.HasPrefix(err.Error(), "OOM") {
			t.Fatalf("fill: %v", err)
		}
		break
	}
	before := b.Snapshot(t)

	var n counter
	var oomMsg string
	refused := func(op string, err error) {
		var re redis.Error
		switch {
		case err == nil:
			n.add(op+"_succeeded", 1)
		case errors.As(err, &re) && strings.HasPrefix(re.Error(), "OOM"):
			n.add(op+"_oom", 1)
			oomMsg = err.Error()
		default:
			n.add(op+"_"+errClass(err), 1)
		}
	}
	for i := 0; i < 50; i++ {
		_, err := st.Issue(ctx, fmt.Sprintf("user-%d", i%users), redisstore.Client{})
		refused("issue", err)
	}
	for _, g := range grants {
		_, err := st.Rotate(ctx, g.Token, redisstore.Client{})
		refused("rotate", err)
	}
	for _, g := range grants {
		if _, err := st.Validate(ctx, g.Token); err != nil {
			n.add("validate_failed", 1)
		}
	}
	if l, err := listAll(ctx, st, "user-0", 4); err != nil || len(l) != sessions/users {
		t.Errorf("ListSessions at maxmemory: %d sessions, %v", len(l), err)
	}
	after := b.Snapshot(t)
	changed := cmp.Diff(before, after) != ""
	if d := cmp.Diff(before, after); d != "" {
		t.Errorf("refused calls changed the keyspace (-before +after):\n%s", d)
	}

	// Revocations at maxmemory.
	revoked := 0
	for i := 0; i < sessions/2; i++ {
		k, err := st.RevokeToken(ctx, grants[i].Token)
		if err != nil || k != 1 {
			t.Errorf("RevokeToken at maxmemory: %d, %v", k, err)
			continue
		}
		revoked++
	}
	all, err := st.RevokeAll(ctx, fmt.Sprintf("user-%d", users-1), "")
	if err != nil {
		t.Errorf("RevokeAll at maxmemory: %v", err)
	}
	// A replayed token: the reuse path must still revoke the session.
	last := sessions - 2
	if _, err := st.Rotate(ctx, first[last], redisstore.Client{}); !errors.Is(err, redisstore.ErrReused) {
		t.Errorf("replay at maxmemory: %v, want ErrReused", err)
	}
	stillValid := 0
	for i, g := range grants {
		_, err := st.Validate(ctx, g.Token)
		wantRevoked := i < sessions/2 || i%users == users-1 || i == last
		if wantRevoked && err == nil {
			stillValid++
		}
	}
	figure(t, "out_of_memory", "filler_keys", filled, "issue_refused", n.get("issue_oom"), "issue_succeeded", n.get("issue_succeeded"),
		"rotate_refused", n.get("rotate_oom"), "rotate_succeeded", n.get("rotate_succeeded"), "keyspace_changed", changed,
		"revoke_token_ok", revoked, "revoke_all_ok", all, "revoked_but_valid", stillValid)
	t.Logf("outcomes %v; error seen by the caller: %q", &n, oomMsg)
	if n.get("issue_oom") != 50 || n.get("rotate_oom") != sessions {
		t.Errorf("at maxmemory: %v; want every login and rotation refused with OOM", &n)
	}
	if n.get("validate_failed") != 0 {
		t.Errorf("%d validations failed at maxmemory", n.get("validate_failed"))
	}
	if stillValid != 0 {
		t.Errorf("%d revoked sessions still validate", stillValid)
	}
	if all == 0 {
		t.Error("RevokeAll at maxmemory revoked nothing")
	}
}
