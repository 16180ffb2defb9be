package main

// Writes on a Redis that may evict keys: refused with 503 until its
// maxmemory-policy is noeviction again. These tests need what miniredis
// lacks (INFO, CONFIG SET).

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

// write is one call that writes to Redis.
type write struct{ method, path, ctype, body string }

// writes are the calls that create or extend sessions: refused on an
// evicting Redis.
func writes(user, tok string) []write {
	return []write{
		{"POST", "/v1/sessions", "application/json", `{"client_id":"test-app","user_id":"` + user + `"}`},
		{"POST", "/v1/tokens/rotate", "application/json", refreshBody(tok)},
	}
}

func (e *testEnv) sendWrite(w write) response {
	e.t.Helper()
	h := http.Header{}
	if w.ctype != "" {
		h.Set("Content-Type", w.ctype)
	}
	return e.send(w.method, w.path, w.body, h)
}

// waitPolicy polls until the service knows the policy to be state.
func waitPolicy(t *testing.T, e *testEnv, state int32) {
	t.Helper()
	poll(t, 10*time.Second, "the service to learn the eviction policy", func() bool { return e.srv.policy.state.Load() == state })
}

// While Redis may evict keys, logins and rotations are refused and nothing
// is written; reads go on, and so do revocations (a revocation only ever
// ends a session: refusing it mid-incident would keep a stolen session
// alive). Once the policy is noeviction again, the periodic check lets
// writes resume.
func TestWritesRefusedOnEvictingRedis(t *testing.T) {
	_, _, rdb := privateRedis(t, "--maxmemory", "64mb")
	b := &redistest.Backend{Kind: redistest.Real, Client: rdb, Prefix: redistest.NewPrefix()}
	e := newTestEnvOn(t, b, withEvictionCheck())
	ctx, stop := context.WithCancel(context.Background())
	var watching sync.WaitGroup
	watching.Add(1)
	go func() {
		defer watching.Done()
		e.srv.watch(ctx, 5*time.Millisecond)
	}()
	t.Cleanup(func() {
		stop()
		watching.Wait()
	})
	const user = "auth0|507f1f77bcf86cd799439011"
	g := e.login(user, "laptop")
	tok, session := g.str("refresh_token"), g.str("session_id")
	other := e.login(user, "phone")

	if err := rdb.ConfigSet(context.Background(), "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	waitPolicy(t, e, policyEvicting)
	before := e.b.Snapshot(t)
	for _, w := range writes(user, tok) {
		r := e.sendWrite(w)
		want := map[string]any{"error": "temporarily_unavailable", "reason": "evicting_policy", "error_description": r.body["error_description"]}
		if d := cmp.Diff(want, r.body); r.status != http.StatusServiceUnavailable || d != "" || r.str("error_description") == "" || r.header.Get("Retry-After") != "10" {
			t.Errorf("%s %s on allkeys-lru: %d %s (Retry-After %q), want 503 temporarily_unavailable evicting_policy, Retry-After 10",
				w.method, w.path, r.status, r.raw, r.header.Get("Retry-After"))
		}
	}
	// A write is refused before its body is read: even a bad one gets 503.
	if r := e.do("POST", "/v1/sessions", `{}`); r.status != http.StatusServiceUnavailable {
		t.Errorf("an empty login on allkeys-lru: %d %s, want 503", r.status, r.raw)
	}
	// Reads change nothing and go on.
	if r := e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(tok)); r.body["active"] != true || r.str("sub") != user {
		t.Errorf("introspect on allkeys-lru: %s, want active", r.raw)
	}
	if r := e.must(http.StatusOK, "GET", "/v1/users/"+url.PathEscape(user)+"/sessions", ""); !strings.Contains(r.raw, session) {
		t.Errorf("list on allkeys-lru: %s, want the session", r.raw)
	}
	if r := e.do("GET", "/readyz", ""); r.status != http.StatusServiceUnavailable || r.str("reason") != "unsafe_eviction_policy" {
		t.Errorf("/readyz on allkeys-lru: %d %s", r.status, r.raw)
	}
	if d := cmp.Diff(before, e.b.Snapshot(t)); d != "" {
		t.Errorf("refused writes changed Redis (-before +after):\n%s", d)
	}
	m := e.scrape()
	for _, op := range []string{"issue", "rotate"} {
		if !strings.Contains(m, `sessioncache_requests_total{operation="`+op+`",outcome="evicting_policy"}`) {
			t.Errorf("/metrics does not count the refused %s", op)
		}
	}
	if logs := e.logs.String(); strings.Count(logs, "refusing writes") != 1 || !strings.Contains(logs, envAllowEvicting) {
		t.Errorf("the log should say once that writes are refused, and how to override:\n%s", logs)
	}

	// Revocations go on.
	if r := e.sendWrite(write{"POST", "/v1/tokens/revoke", "application/x-www-form-urlencoded", "token=" + url.QueryEscape(other.str("refresh_token"))}); r.status != http.StatusOK || r.body["revoked"] != float64(1) {
		t.Errorf("revocation on allkeys-lru: %d %s, want 200 revoked 1", r.status, r.raw)
	}

	if err := rdb.ConfigSet(context.Background(), "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	waitPolicy(t, e, policySafe)
	next := e.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(tok))
	if next.str("session_id") != session {
		t.Errorf("rotation after the fix: %s", next.raw)
	}
	e.login(user, "phone")
	e.must(http.StatusOK, "DELETE", "/v1/users/"+url.PathEscape(user)+"/sessions", "")
	if !strings.Contains(e.logs.String(), "writes resume") {
		t.Errorf("the log does not say that writes resumed")
	}
}

// The documents give the check interval the service uses.
func TestEvictionCheckIntervalDocumented(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	secs := int(evictionCheckInterval.Seconds())
	for name, doc := range map[string]string{"openapi.yaml": string(openAPIDoc), "README.md": string(readme)} {
		if want := fmt.Sprintf("every %d seconds", secs); !strings.Contains(strings.Join(strings.Fields(doc), " "), want) {
			t.Errorf("%s does not say %q", name, want)
		}
	}
	if !strings.Contains(string(readme), fmt.Sprintf("`Retry-After: %d`", secs)) {
		t.Errorf("README.md does not give the Retry-After of a refused write")
	}
}

// The policy is checked before the first write: a service started on an
// evicting Redis never writes, even before any readiness probe or periodic
// check, and concurrent first writes share one check.
func TestFirstWriteChecksThePolicy(t *testing.T) {
	_, _, rdb := privateRedis(t, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
	b := &redistest.Backend{Kind: redistest.Real, Client: rdb, Prefix: redistest.NewPrefix()}
	e := newTestEnvOn(t, b, withEvictionCheck())
	var wg sync.WaitGroup
	statuses := make([]int, 20)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = e.do("POST", "/v1/sessions", `{"client_id":"test-app","user_id":"user@example.com"}`).status
		}()
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusServiceUnavailable {
			t.Errorf("login %d on allkeys-lru: %d, want 503", i, s)
		}
	}
	if keys, err := b.Keys(context.Background()); err != nil || len(keys) != 0 {
		t.Errorf("keys written on allkeys-lru: %q %v", keys, err)
	}
	if calls := infoCalls(t, rdb); calls != 1 {
		t.Errorf("INFO was called %d times for %d concurrent first writes, want 1", calls, len(statuses))
	}
	// SESSIONCACHE_ALLOW_EVICTING_POLICY=true: no check, writes go on.
	allowed := newTestEnvOn(t, b)
	allowed.login("user@example.com", "laptop")
}

// A write that cannot learn the policy (here: miniredis has no INFO memory)
// is refused as if Redis were unavailable: the service never writes without
// knowing.
func TestWriteWithoutKnownPolicyIsRefused(t *testing.T) {
	e := newTestEnv(t, withEvictionCheck())
	r := e.do("POST", "/v1/sessions", `{"client_id":"test-app","user_id":"12345"}`)
	if r.status != http.StatusServiceUnavailable || r.str("error") != "unavailable" || r.header.Get("Retry-After") == "" {
		t.Errorf("login with the policy unknown: %d %s, want 503 unavailable with Retry-After", r.status, r.raw)
	}
	if keys, err := e.b.Keys(context.Background()); err != nil || len(keys) != 0 {
		t.Errorf("keys written with the policy unknown: %q %v", keys, err)
	}
	e.must(http.StatusOK, "GET", "/v1/users/12345/sessions", "")
}

// infoCalls returns how many INFO commands the server has run.
func infoCalls(t *testing.T, rdb redis.UniversalClient) int {
	t.Helper()
	stats, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(stats, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_info:calls="); ok {
			n := 0
			for _, c := range rest {
				if c < '0' || c > '9' {
					break
				}
				n = n*10 + int(c-'0')
			}
			return n
		}
	}
	return 0
}
