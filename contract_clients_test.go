package sessioncache_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// testClientBinding: a session issued to a client is rotated only by that
// client (or by a caller that names none); another client is refused with
// ErrWrongClient and changes nothing, whatever token it presents, current,
// just rotated or older: no rotation, no grace hand-out, no revocation.
func testClientBinding(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	web := redisstore.Client{ClientID: "web-app", IPAddress: "192.0.2.10"}
	other := redisstore.Client{ClientID: "mobile-app"}
	g0, err := f.Store.Issue(ctx, "alice", web)
	if err != nil || g0.ClientID != "web-app" {
		t.Fatalf("Issue: %+v, %v; want client web-app", g0, err)
	}
	g1, err := f.Store.Rotate(ctx, g0.Token, web)
	if err != nil || g1.ClientID != "web-app" || g1.UserID != "alice" {
		t.Fatalf("Rotate by its client: %+v, %v", g1, err)
	}
	before := f.Snapshot(t)
	for name, tok := range map[string]string{"current": g1.Token, "just rotated (in grace)": g0.Token} {
		_, err := f.Store.Rotate(ctx, tok, other)
		wantErr(t, "Rotate of the "+name+" token by another client", err, redisstore.ErrWrongClient)
		if errors.Is(err, redisstore.ErrRevoked) {
			t.Fatalf("another client's refusal matches ErrRevoked: %v", err)
		}
	}
	if d := cmp.Diff(before, f.Snapshot(t)); d != "" {
		t.Fatalf("refusals of another client changed Redis (-before +after):\n%s", d)
	}
	// The client's own rotation goes on, from the token the other client
	// presented: nothing was revoked.
	g2, err := f.Store.Rotate(ctx, g1.Token, web)
	if err != nil {
		t.Fatalf("Rotate by its client after the refusals: %v", err)
	}
	// A grandparent from another client: refused, not a reuse revocation.
	_, err = f.Store.Rotate(ctx, g0.Token, other)
	wantErr(t, "grandparent by another client", err, redisstore.ErrWrongClient)
	// A caller that names no client is trusted: it rotates.
	g3, err := f.Store.Rotate(ctx, g2.Token, redisstore.Client{})
	if err != nil || g3.ClientID != "web-app" {
		t.Fatalf("Rotate naming no client: %+v, %v", g3, err)
	}
	info, err := f.Store.Validate(ctx, g3.Token)
	if err != nil || info.ClientID != "web-app" || info.UserID != "alice" {
		t.Fatalf("Validate: %+v, %v", info, err)
	}
	l := f.list(t, "alice")
	if len(l) != 1 || l[0].ClientID != "web-app" {
		t.Fatalf("ListSessions: %+v", l)
	}
	// The binding lasts: after a grace replay and a reuse, the client is
	// still the session's.
	gr, err := f.Store.Rotate(ctx, g2.Token, web)
	if err != nil || !gr.Replayed || gr.ClientID != "web-app" {
		t.Fatalf("grace replay: %+v, %v", gr, err)
	}
	_, err = f.Store.Rotate(ctx, g1.Token, web)
	wantErr(t, "reuse by the session's own client", err, redisstore.ErrReused)
}

// testClientUnbound: a session issued without a client id is bound to
// none: any client rotates it, and it stays unbound.
func testClientUnbound(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	g := f.issue(t, "bob", laptop)
	for _, c := range []string{"a", "b", ""} {
		next, err := f.Store.Rotate(ctx, g.Token, redisstore.Client{ClientID: c})
		if err != nil || next.ClientID != "" {
			t.Fatalf("Rotate of an unbound session by client %q: %+v, %v", c, next, err)
		}
		g = next
	}
}

// testClientIDs: client ids are opaque text within the input rules; a UUID
// is stored compactly and given back exactly; a bad one is refused and
// writes nothing.
func testClientIDs(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	for _, id := range []string{"0b4c5d6e-7f80-4192-a3b4-c5d6e7f80912", "0B4C5D6E-7F80-4192-A3B4-C5D6E7F80912", "x", strings.Repeat("c", redisstore.MaxClientIDLen), "Zoë's app"} {
		g, err := f.Store.Issue(ctx, "carol", redisstore.Client{ClientID: id})
		if err != nil || g.ClientID != id {
			t.Fatalf("Issue with client %q: %+v, %v", id, g, err)
		}
		next, err := f.Store.Rotate(ctx, g.Token, redisstore.Client{ClientID: id})
		if err != nil || next.ClientID != id {
			t.Fatalf("Rotate with client %q: %+v, %v", id, next, err)
		}
	}
	// A UUID in another case is another client: ids are compared exactly.
	g := f.issue(t, "carol", redisstore.Client{ClientID: "0b4c5d6e-7f80-4192-a3b4-c5d6e7f80912"})
	_, err := f.Store.Rotate(ctx, g.Token, redisstore.Client{ClientID: "0B4C5D6E-7F80-4192-A3B4-C5D6E7F80912"})
	wantErr(t, "Rotate with the upper-case form of the client's UUID", err, redisstore.ErrWrongClient)
	before := f.Snapshot(t)
	for _, id := range []string{strings.Repeat("c", redisstore.MaxClientIDLen+1), "a\x00b", "\xff", "bidi\u202e"} {
		_, err := f.Store.Issue(ctx, "carol", redisstore.Client{ClientID: id})
		var ae *redisstore.ArgumentError
		if !errors.As(err, &ae) || ae.Field != "client id" {
			t.Fatalf("Issue with client %.20q: %v, want an ArgumentError for the client id", id, err)
		}
		_, err = f.Store.Rotate(ctx, g.Token, redisstore.Client{ClientID: id})
		wantErr(t, "Rotate with a bad client id", err, redisstore.ErrInvalidArgument)
	}
	if d := cmp.Diff(before, f.Snapshot(t)); d != "" {
		t.Fatalf("bad client ids changed Redis (-before +after):\n%s", d)
	}
}

// testCheckSession: CheckSession answers from one read whether a session of
// a user lives: nil, the revocation with its reason, or unknown; it writes
// nothing.
func testCheckSession(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	g := f.issue(t, "dave", redisstore.Client{ClientID: "web"})
	other := f.issue(t, "dave", laptop)
	before := f.Snapshot(t)
	if err := f.Store.CheckSession(ctx, "dave", g.SessionID); err != nil {
		t.Fatalf("CheckSession of a live session: %v", err)
	}
	if d := cmp.Diff(before, f.Snapshot(t)); d != "" {
		t.Fatalf("CheckSession wrote (-before +after):\n%s", d)
	}
	wantErr(t, "CheckSession with another user id", f.Store.CheckSession(ctx, "eve", g.SessionID), redisstore.ErrUnknown)
	wantErr(t, "CheckSession of a session that never was", f.Store.CheckSession(ctx, "dave", "6a2f41a3-c54c-4c7e-9f3b-2d2b1d0c6e5a"), redisstore.ErrUnknown)
	for _, sid := range []string{"", "nope", g.SessionID + "0"} {
		wantErr(t, "CheckSession bad id", f.Store.CheckSession(ctx, "dave", sid), redisstore.ErrInvalidArgument)
	}
	wantErr(t, "CheckSession bad user", f.Store.CheckSession(ctx, "", g.SessionID), redisstore.ErrInvalidArgument)
	if _, err := f.Store.RevokeSession(ctx, "dave", g.SessionID); err != nil {
		t.Fatal(err)
	}
	var re *redisstore.RevokedError
	if err := f.Store.CheckSession(ctx, "dave", g.SessionID); !errors.As(err, &re) || re.Reason != redisstore.ReasonLogout {
		t.Fatalf("CheckSession of a revoked session: %v, want a RevokedError (logout)", err)
	}
	if err := f.Store.CheckSession(ctx, "dave", other.SessionID); err != nil {
		t.Fatalf("CheckSession of the other session: %v", err)
	}
	// A rotation does not end the session.
	f.rotate(t, other.Token)
	if err := f.Store.CheckSession(ctx, "dave", other.SessionID); err != nil {
		t.Fatalf("CheckSession after a rotation: %v", err)
	}
}
