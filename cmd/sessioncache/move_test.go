package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// TestMoveCommand: "sessioncache move" moves the sessions of a single Redis
// (live, rotated and revoked ones) onto a cluster, with the service's
// settings, and a second run finds nothing to move. On the cluster alone
// every current token then rotates, and the revoked session stays revoked.
// Meanwhile an instance still configured for the old Redis (a rolling
// update of the configuration) answers a call on a user already moved with
// 503, reason moved, and Retry-After, never invalid_grant; the old Redis
// ends with one moved marker per user (with a TTL) and nothing else.
func TestMoveCommand(t *testing.T) {
	b := redistest.For(t, redistest.Cluster)
	old := redistest.StartServer(t)
	env := map[string]string{
		envRedisURL: "redis://" + os.Getenv(redistest.EnvClusterAddrs), envRedisMode: modeCluster,
		envMoveFrom: "redis://" + old.Addr, envKeyPrefix: b.Prefix, envSecret: randomHex(32), envAPIKey: randomHex(16),
	}
	c, err := loadConfig(nil, envOf(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	oldSt, err := redisstore.New(old.Client(t), c.storeOptions(c.Secret))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const users, perUser = 100, 3
	var current []string
	for u := range users {
		for range perUser {
			g, err := oldSt.Issue(ctx, fmt.Sprintf("user-%d", u), redisstore.Client{})
			if err != nil {
				t.Fatal(err)
			}
			if u%2 == 0 {
				if g, err = oldSt.Rotate(ctx, g.Token, redisstore.Client{}); err != nil {
					t.Fatal(err)
				}
			}
			current = append(current, g.Token)
		}
	}
	revoked := current[len(current)-1]
	current = current[:len(current)-1]
	if n, err := oldSt.RevokeToken(ctx, revoked); n != 1 || err != nil {
		t.Fatalf("RevokeToken: %d, %v", n, err)
	}

	// The service, configured to move, moves the users it touches: the
	// first user's index and sessions.
	p := startService(t, env)
	api := newAPIClient(t, "http://"+p.addr, env[envAPIKey])
	if current[0] = api.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(current[0])).str("refresh_token"); current[0] == "" {
		t.Fatal("no refresh token from the service")
	}
	// An instance still on the old Redis: the first user's other session
	// has moved; a retry at the instance on the cluster rotates it.
	oldEnv := map[string]string{}
	for k, v := range env {
		oldEnv[k] = v
	}
	delete(oldEnv, envMoveFrom)
	oldEnv[envRedisURL], oldEnv[envRedisMode] = "redis://"+old.Addr, ""
	oldAPI := newAPIClient(t, "http://"+startService(t, oldEnv).addr, env[envAPIKey])
	for _, path := range []string{"/v1/tokens/rotate", "/v1/tokens/introspect"} {
		r := oldAPI.do("POST", path, refreshBody(current[1]))
		if r.status != http.StatusServiceUnavailable || r.str("reason") != "moved" || r.header.Get("Retry-After") == "" {
			t.Fatalf("old-config %s of a moved user: %d %s (Retry-After %q), want 503 reason moved with Retry-After", path, r.status, r.raw, r.header.Get("Retry-After"))
		}
	}
	if r := oldAPI.do("POST", "/v1/tokens/rotate", refreshBody(current[3])); r.status != http.StatusOK {
		t.Fatalf("old-config rotation of a user not moved yet: %d %s, want 200", r.status, r.raw)
	} else {
		current[3] = r.str("refresh_token")
	}
	if current[1] = api.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(current[1])).str("refresh_token"); current[1] == "" {
		t.Fatal("no refresh token from the service on the cluster")
	}

	move := func() map[string]any {
		t.Helper()
		var out strings.Builder
		if code := run([]string{"move", "-rate", "0"}, envOf(env), &out, nil); code != exitOK {
			t.Fatalf("sessioncache move: exit %d\n%s", code, out.String())
		}
		for _, l := range logLines(out.String()) {
			if strings.HasPrefix(fmt.Sprint(l["msg"]), "move done") {
				return l
			}
		}
		t.Fatalf("no final count in the log:\n%s", out.String())
		return nil
	}
	done := move()
	// Each user: an index and 3 session hashes (one a tombstone); the
	// service moved the first user's.
	if want := (users - 1) * (perUser + 1); done["moved"] != float64(want) || done["left"] != 0.0 || done["markers"] != float64(users) {
		t.Fatalf("first move: %v, want %d keys moved, 0 left, %d markers", done, want, users)
	}
	if done = move(); done["moved"] != 0.0 || done["seen"] != 0.0 || done["left"] != 0.0 || done["markers"] != float64(users) {
		t.Fatalf("second move: %v, want nothing seen or moved, %d markers", done, users)
	}
	keys, err := old.Client(t).Keys(ctx, "*").Result()
	if err != nil || len(keys) != users {
		t.Fatalf("the old Redis holds %d keys after the move (%v), want %d moved markers", len(keys), err, users)
	}
	for _, k := range keys {
		if ttl, err := old.Client(t).PTTL(ctx, k).Result(); !strings.HasSuffix(k, "}:g") || err != nil || ttl <= 0 {
			t.Fatalf("the old Redis holds %s (TTL %v, %v) after the move, want only moved markers with a TTL", k, ttl, err)
		}
	}

	newSt, err := redisstore.New(b.Client, c.storeOptions(c.Secret))
	if err != nil {
		t.Fatal(err)
	}
	for i, tok := range current {
		if _, err := newSt.Rotate(ctx, tok, redisstore.Client{}); err != nil {
			t.Fatalf("session %d after the move: %v", i, err)
		}
	}
	if _, err := newSt.Rotate(ctx, revoked, redisstore.Client{}); !errors.Is(err, redisstore.ErrRevoked) {
		t.Fatalf("the revoked session after the move: %v, want ErrRevoked", err)
	}
}

// The move refuses a configuration it cannot work with, naming what is
// missing, before it touches either Redis; a sentinel master name makes
// the old Redis a Sentinel group.
func TestMoveRefused(t *testing.T) {
	base := map[string]string{envRedisURL: "redis://127.0.0.1:1", envMoveFrom: "redis://127.0.0.1:2", envSecret: randomHex(32)}
	for _, tc := range []struct {
		name  string
		unset string
		set   map[string]string
		want  string
	}{
		{"no old Redis", envMoveFrom, nil, envMoveFrom + " is required"},
		{"no new Redis", envRedisURL, nil, "needs " + envRedisURL},
		{"no secret", envSecret, nil, envSecret},
		{"master without URL", envMoveFrom, map[string]string{envMoveFromMaster: "m"}, "needs " + envMoveFrom},
		{"bad URL", "", map[string]string{envMoveFrom: "http://a:1"}, "want a redis://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			delete(env, tc.unset)
			for k, v := range tc.set {
				env[k] = v
			}
			var out strings.Builder
			code := run([]string{"move"}, func(k string) string { return env[k] }, &out, nil)
			if code != exitConfig || !strings.Contains(out.String(), tc.want) {
				t.Errorf("exit %d, log %s; want %d and %q", code, out.String(), exitConfig, tc.want)
			}
		})
	}
	c, err := loadConfig(nil, envOf(map[string]string{envRedisURL: "redis://a:1", envMoveFrom: "redis://s1:26379,s2:26379", envMoveFromMaster: "m"}), io.Discard)
	if err != nil || c.MoveFrom.sentinel == nil || c.MoveFrom.sentinel.MasterName != "m" || len(c.MoveFrom.sentinel.SentinelAddrs) != 2 {
		t.Fatalf("a Sentinel group to move from: %+v, %v", c.MoveFrom, err)
	}
}
