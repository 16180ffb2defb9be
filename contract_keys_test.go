package sessioncache_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// jkt is a DPoP key thumbprint (the format of RFC 7638: SHA-256,
// base64url) made from a name.
func jkt(name string) string {
	sum := sha256.Sum256([]byte(name))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// testKeyBinding: a session bound to a DPoP key at login is rotated only
// with that key; a rotation without it (ErrKeyRequired) or with another
// (ErrWrongKey) is refused before any write, whatever token it presents,
// current, just rotated or older: no rotation, no grace hand-out, no reuse
// revocation. The binding lasts through rotations, grace replays and
// retries, and a caller that names no key is not trusted with it.
func testKeyBinding(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	key := jkt("laptop key")
	bound := redisstore.Client{ClientID: "web-app", JKT: key}
	g0, err := f.Store.Issue(ctx, "alice", bound)
	if err != nil || g0.JKT != key {
		t.Fatalf("Issue: %+v, %v; want bound to the key", g0, err)
	}
	g1, err := f.Store.Rotate(ctx, g0.Token, bound)
	if err != nil || g1.JKT != key || g1.ClientID != "web-app" || g1.UserID != "alice" {
		t.Fatalf("Rotate with the key: %+v, %v", g1, err)
	}
	before := f.Snapshot(t)
	for name, tok := range map[string]string{"current": g1.Token, "just rotated (in grace)": g0.Token} {
		for _, c := range []struct {
			what string
			c    redisstore.Client
			want error
		}{
			{"without a key", redisstore.Client{ClientID: "web-app"}, redisstore.ErrKeyRequired},
			{"naming no client and no key", redisstore.Client{}, redisstore.ErrKeyRequired},
			{"with another key", redisstore.Client{ClientID: "web-app", JKT: jkt("thief key")}, redisstore.ErrWrongKey},
			{"with another key, asking to bind it", redisstore.Client{ClientID: "web-app", JKT: jkt("thief key"), BindJKT: true}, redisstore.ErrWrongKey},
			{"with a key that shares the first 15 bytes", redisstore.Client{ClientID: "web-app", JKT: key[:20] + "AAAAAAAAAAAAAAAAAAAAAAA"}, redisstore.ErrWrongKey},
		} {
			_, err := f.Store.Rotate(ctx, tok, c.c)
			wantErr(t, "Rotate of the "+name+" token "+c.what, err, c.want)
			if errors.Is(err, redisstore.ErrRevoked) {
				t.Fatalf("a key refusal matches ErrRevoked: %v", err)
			}
		}
	}
	// A grandparent without the key: refused, not a reuse revocation.
	_, err = f.Store.Rotate(ctx, g0.Token, redisstore.Client{})
	wantErr(t, "a grandparent without the key", err, redisstore.ErrKeyRequired)
	if d := cmp.Diff(before, f.Snapshot(t)); d != "" {
		t.Fatalf("refusals for the key changed Redis (-before +after):\n%s", d)
	}
	// With the key the session goes on; a grace replay keeps the binding,
	// and so does a session that a BindJKT of the same key presents.
	g2, err := f.Store.Rotate(ctx, g1.Token, redisstore.Client{JKT: key, BindJKT: true})
	if err != nil || g2.JKT != key {
		t.Fatalf("Rotate with the key and BindJKT: %+v, %v", g2, err)
	}
	gr, err := f.Store.Rotate(ctx, g1.Token, bound)
	if err != nil || !gr.Replayed || gr.JKT != key || gr.Token != g2.Token {
		t.Fatalf("grace replay with the key: %+v, %v", gr, err)
	}
	info, err := f.Store.Validate(ctx, g2.Token)
	if err != nil || !info.KeyBound || info.ClientID != "web-app" || info.UserID != "alice" {
		t.Fatalf("Validate: %+v, %v; want KeyBound", info, err)
	}
	if err := f.Store.CheckSession(ctx, "alice", g2.SessionID); err != nil {
		t.Fatalf("CheckSession: %v", err)
	}
	l := f.list(t, "alice")
	if len(l) != 1 || !l[0].KeyBound || l[0].ClientID != "web-app" {
		t.Fatalf("ListSessions: %+v", l)
	}
	// Reuse with the key revokes as ever, and the tombstone names the user.
	_, err = f.Store.Rotate(ctx, g0.Token, bound)
	wantErr(t, "reuse with the key", err, redisstore.ErrReused)
	var re *redisstore.RevokedError
	if _, err := f.Store.Rotate(ctx, g2.Token, bound); !errors.As(err, &re) || re.Reason != redisstore.ReasonReuse {
		t.Fatalf("after the reuse: %v, want revoked for reuse", err)
	}
}

// testKeyBindOnRotate: a session bound to no key is bound by a Rotate with
// BindJKT, in the same atomic step, and from then on is like one bound at
// login; a Rotate with a key and without BindJKT leaves it unbound; a
// binding never moves to another key.
func testKeyBindOnRotate(t *testing.T, b *redistest.Backend) {
	f := newFixture(t, b, redisstore.Options{})
	ctx := context.Background()
	key := jkt("phone key")
	for _, client := range []string{"", "public-app", "0b4c5d6e-7f80-4192-a3b4-c5d6e7f80912"} {
		g0 := f.issue(t, "bob", redisstore.Client{ClientID: client})
		if g0.JKT != "" {
			t.Fatalf("Issue without a key: JKT %q", g0.JKT)
		}
		g1, err := f.Store.Rotate(ctx, g0.Token, redisstore.Client{ClientID: client, JKT: key})
		if err != nil || g1.JKT != "" {
			t.Fatalf("Rotate with a key, not binding: %+v, %v; want still unbound", g1, err)
		}
		g2, err := f.Store.Rotate(ctx, g1.Token, redisstore.Client{ClientID: client, JKT: key, BindJKT: true})
		if err != nil || g2.JKT != key || g2.ClientID != client || g2.UserID != "bob" {
			t.Fatalf("Rotate binding the session (client %q): %+v, %v", client, g2, err)
		}
		_, err = f.Store.Rotate(ctx, g2.Token, redisstore.Client{ClientID: client})
		wantErr(t, "Rotate without the key after the binding", err, redisstore.ErrKeyRequired)
		_, err = f.Store.Rotate(ctx, g2.Token, redisstore.Client{ClientID: client, JKT: jkt("other"), BindJKT: true})
		wantErr(t, "Rotate binding another key", err, redisstore.ErrWrongKey)
		// The predecessor in grace, without the key: refused.
		_, err = f.Store.Rotate(ctx, g1.Token, redisstore.Client{ClientID: client})
		wantErr(t, "the bound session's predecessor without the key", err, redisstore.ErrKeyRequired)
		g3, err := f.Store.Rotate(ctx, g2.Token, redisstore.Client{ClientID: client, JKT: key})
		if err != nil || g3.JKT != key {
			t.Fatalf("Rotate with the key after the binding: %+v, %v", g3, err)
		}
		if info, err := f.Store.Validate(ctx, g3.Token); err != nil || !info.KeyBound || info.ClientID != client {
			t.Fatalf("Validate after the binding: %+v, %v", info, err)
		}
	}
	// Bad thumbprints are refused and write nothing.
	g := f.issue(t, "bob", laptop)
	before := f.Snapshot(t)
	for _, bad := range []redisstore.Client{{JKT: "short"}, {JKT: key + "A"}, {JKT: key[:42] + "!"}, {JKT: key[:42] + "B"}, {BindJKT: true}} {
		_, err := f.Store.Rotate(ctx, g.Token, bad)
		wantErr(t, "Rotate with a bad jkt", err, redisstore.ErrInvalidArgument)
		_, err = f.Store.Issue(ctx, "bob", bad)
		var ae *redisstore.ArgumentError
		if !errors.As(err, &ae) || ae.Field != "jkt" {
			t.Fatalf("Issue with %+v: %v, want an ArgumentError for the jkt", bad, err)
		}
	}
	if d := cmp.Diff(before, f.Snapshot(t)); d != "" {
		t.Fatalf("bad thumbprints changed Redis (-before +after):\n%s", d)
	}
}
