package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/sessioncache/sessioncache/bench"
	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// runJSON runs loadgen with args and returns its JSON report.
func runJSON(t *testing.T, args ...string) Report {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(append(args, "-json", "-progress", "0"), &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	return rep
}

func checkReport(t *testing.T, rep Report, count int) {
	t.Helper()
	if rep.Total.Count < uint64(count) || rep.Total.Errors != 0 {
		t.Errorf("total: %d operations, %d errors (%v); want at least %d and none", rep.Total.Count, rep.Total.Errors, rep.Errors, count)
	}
	for _, op := range []string{opValidate, opRotate, opIssue} {
		if o := rep.Ops[op]; o.Count == 0 || o.P99 <= 0 || o.P50 > o.P99 || o.P99 > o.P999 {
			t.Errorf("%s: %+v; want calls and ordered percentiles", op, o)
		}
	}
}

// eachRedis runs f with the URL and a fresh key prefix of each Redis that
// -target library can use: an in-process miniredis (on the wall clock), and
// the real Redis of SESSIONCACHE_TEST_REDIS_URL.
func eachRedis(t *testing.T, f func(t *testing.T, url, prefix string)) {
	t.Run(string(redistest.Mini), func(t *testing.T) {
		f(t, "redis://"+miniredis.RunT(t).Addr()+"/0", redistest.NewPrefix())
	})
	t.Run(string(redistest.Real), func(t *testing.T) {
		b := redistest.For(t, redistest.Real)
		f(t, os.Getenv(redistest.EnvRedisURL), b.Prefix)
	})
}

func TestLibraryRealisticMix(t *testing.T) {
	eachRedis(t, func(t *testing.T, url, prefix string) {
		rep := runJSON(t, "-target", "library", "-redis", url, "-prefix", prefix,
			"-workers", "4", "-sessions", "40", "-count", "3000", "-mix", "realistic")
		checkReport(t, rep, 3000)
	})
}

// The list operation reads every page: with 5 sessions a user and pages of
// 2, a lister that stopped after the first page would see too few.
func TestListReadsEveryPage(t *testing.T) {
	args := []string{"-workers", "2", "-sessions", "20", "-sessions-per-user", "5", "-list-limit", "2", "-count", "200", "-mix", "list"}
	check := func(t *testing.T, rep Report) {
		if o := rep.Ops[opList]; o.Count != 200 || rep.Total.Errors != 0 {
			t.Errorf("list: %+v, errors %v; want 200 calls and none", o, rep.Errors)
		}
	}
	t.Run("library", func(t *testing.T) {
		eachRedis(t, func(t *testing.T, url, prefix string) {
			check(t, runJSON(t, append(args, "-target", "library", "-redis", url, "-prefix", prefix)...))
		})
	})
	t.Run("http", func(t *testing.T) {
		srv := httptest.NewServer(stubService(newStore(t, redistest.For(t, redistest.Mini)), 5*time.Minute))
		defer srv.Close()
		check(t, runJSON(t, append(args, "-target", "http", "-http", srv.URL, "-api-key", "k")...))
	})
}

func TestParseFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-list-limit", "-1"},
		{"-list-limit", "1001"},
		{"-target", "library", "-sessions-per-user", "101"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestParseMix(t *testing.T) {
	for _, bad := range []string{"nope", "rotate=x", "fly=1", "rotate=0"} {
		if _, err := parseMix(bad); err == nil {
			t.Errorf("parseMix(%q) accepted", bad)
		}
	}
	m, err := parseMix("rotate=3,validate=1")
	if err != nil || len(m.ops) != 2 || m.cum[0] != 0.75 {
		t.Errorf("parseMix = %+v, %v", m, err)
	}
}

// stubService serves the subset of the sessioncache HTTP API that loadgen
// uses, on a library store, so that the http target is tested without the
// service itself. As the service does, it wants a client_id at login,
// hands out an access token valid for accessTTL with every grant, and
// accepts at /v1/auth the access token of a live session, never a refresh
// token. Its access tokens are opaque: loadgen never reads them.
func stubService(s *redisstore.Store, accessTTL time.Duration) http.Handler {
	type access struct {
		user, session string
		exp           time.Time
	}
	var mu sync.Mutex
	accessTokens := map[string]access{}
	grant := func(g redisstore.Grant) map[string]any {
		b := make([]byte, 16)
		crand.Read(b)
		at := "at." + hex.EncodeToString(b)
		mu.Lock()
		accessTokens[at] = access{user: g.UserID, session: g.SessionID, exp: time.Now().Add(accessTTL)}
		mu.Unlock()
		return map[string]any{"refresh_token": g.Token, "session_id": g.SessionID, "client_id": g.ClientID,
			"access_token": at, "token_type": "Bearer", "expires_in": int64(accessTTL / time.Second)}
	}
	// ErrReused also matches ErrRevoked: it comes first.
	reasons := []struct {
		err    error
		reason string
	}{
		{redisstore.ErrMalformed, "malformed"}, {redisstore.ErrUnknown, "unknown"}, {redisstore.ErrExpired, "expired"},
		{redisstore.ErrReused, "reused"}, {redisstore.ErrRevoked, "revoked"},
	}
	reason := func(err error) string {
		for _, r := range reasons {
			if errors.Is(err, r.err) {
				return r.reason
			}
		}
		return ""
	}
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	fail := func(w http.ResponseWriter, err error) {
		if r := reason(err); r != "" {
			reply(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "reason": r})
			return
		}
		if errors.Is(err, redisstore.ErrInvalidArgument) {
			reply(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "reason": err.Error()})
			return
		}
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "unavailable"})
	}
	type request struct {
		UserID       string `json:"user_id"`
		ClientID     string `json:"client_id"`
		RefreshToken string `json:"refresh_token"`
		redisstore.Client
	}
	decode := func(r *http.Request) (req request) {
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &req)
		return req
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		req := decode(r)
		if req.ClientID == "" {
			reply(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "reason": "client_id is required"})
			return
		}
		req.Client.ClientID = req.ClientID
		g, err := s.Issue(r.Context(), req.UserID, req.Client)
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusCreated, grant(g))
	})
	mux.HandleFunc("POST /v1/tokens/{op}", func(w http.ResponseWriter, r *http.Request) {
		req, ctx := decode(r), r.Context()
		tok := req.RefreshToken
		switch r.PathValue("op") {
		case "rotate":
			g, err := s.Rotate(ctx, tok, redisstore.Client{ClientID: req.ClientID})
			if err != nil {
				fail(w, err)
				return
			}
			reply(w, http.StatusOK, grant(g))
		case "introspect":
			_, err := s.Validate(ctx, tok)
			reply(w, http.StatusOK, map[string]bool{"active": err == nil})
		case "revoke":
			s.RevokeToken(ctx, tok)
			reply(w, http.StatusOK, map[string]string{})
		}
	})
	mux.HandleFunc("GET /v1/users/{id}/sessions", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		opt := redisstore.ListOptions{Cursor: q.Get("cursor")}
		if q.Has("limit") {
			n, err := strconv.Atoi(q.Get("limit"))
			if err != nil || n < 1 {
				reply(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
				return
			}
			opt.Limit = n
		}
		page, err := s.ListSessions(r.Context(), r.PathValue("id"), opt)
		if err != nil {
			fail(w, err)
			return
		}
		body := map[string]any{"sessions": page.Sessions}
		if page.Next != "" {
			body["next_cursor"] = page.Next
		}
		reply(w, http.StatusOK, body)
	})
	mux.HandleFunc("DELETE /v1/users/{id}/sessions", func(w http.ResponseWriter, r *http.Request) {
		n, err := s.RevokeAll(r.Context(), r.PathValue("id"), "")
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusOK, map[string]int{"revoked": n})
	})
	// Forward auth: the access token is the bearer, the key in
	// X-Sessioncache-Key.
	mux.HandleFunc("GET /v1/auth", func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		a, ok := accessTokens[tok]
		mu.Unlock()
		switch {
		case s.Genuine(tok):
			reply(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "reason": "refresh_token"})
		case !ok:
			reply(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "reason": "unknown"})
		case !time.Now().Before(a.exp):
			reply(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "reason": "expired"})
		case s.CheckSession(r.Context(), a.user, a.session) != nil:
			reply(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "reason": "revoked"})
		default:
			w.Header().Set("X-Auth-User-Id", a.user)
		}
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/auth" {
			if r.Header.Get("X-Sessioncache-Key") != "k" {
				w.WriteHeader(http.StatusForbidden)
				return
			}
			mux.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer k" {
			reply(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// newStore returns a library store on b, its scripts loaded.
func newStore(t *testing.T, b *redistest.Backend) *redisstore.Store {
	t.Helper()
	s, err := redisstore.New(b.Client, redisstore.Options{Secret: []byte(strings.Repeat("s", 32)), KeyPrefix: b.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestHTTPRealisticMix(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		srv := httptest.NewServer(stubService(newStore(t, b), 5*time.Minute))
		defer srv.Close()
		rep := runJSON(t, "-target", "http", "-http", srv.URL, "-api-key", "k",
			"-workers", "4", "-sessions", "40", "-count", "2000", "-mix", "realistic")
		checkReport(t, rep, 2000)
	})
}

// The auth operation asks /v1/auth about the access token of each slot's
// latest grant, as a gateway does, and checks the user it names; it needs
// the service.
func TestHTTPForwardAuth(t *testing.T) {
	srv := httptest.NewServer(stubService(newStore(t, redistest.For(t, redistest.Mini)), 5*time.Minute))
	defer srv.Close()
	// Rotations and logouts between the checks: the auth operation must
	// follow the slot's access token (one of a logged-out session is
	// refused).
	rep := runJSON(t, "-target", "http", "-http", srv.URL, "-api-key", "k",
		"-workers", "4", "-sessions", "40", "-count", "1000", "-mix", "auth=3,validate=1,rotate=1,revoke=0.3")
	if o := rep.Ops[opAuth]; o.Count < 400 || o.Errors != 0 || rep.Total.Errors != 0 || o.P50 > o.P99 {
		t.Errorf("auth: %+v, errors %v; want about 600 calls and none failed", o, rep.Errors)
	}
	if rep.Ops[opValidate].Count == 0 || rep.Ops[opRotate].Count == 0 || rep.Ops[opRevoke].Count == 0 {
		t.Errorf("the mix ran only %v", rep.Ops)
	}

	// Only a 200 naming the session's user is a success.
	st := newStore(t, redistest.For(t, redistest.Mini))
	srv2 := httptest.NewServer(stubService(st, 5*time.Minute))
	defer srv2.Close()
	ctx := context.Background()
	const user = "8f2d7c1e-3b4a-4c5d-9e6f-7a8b9c0d1e2f"
	g, err := bench.NewHTTP(srv2.URL, "k", 1).IssueGrant(ctx, user, redisstore.Client{})
	if err != nil || g.AccessToken == "" {
		t.Fatalf("login: %+v, %v; want an access token", g, err)
	}
	if err := newForwardAuth(srv2.URL, "k", 1, nil)(ctx, g.AccessToken, user); err != nil {
		t.Errorf("a live session: %v", err)
	}
	if err := newForwardAuth(srv2.URL, "k", 1, nil)(ctx, g.AccessToken, "someone else"); !errors.Is(err, errUnexpected) {
		t.Errorf("another user named: %v, want an unexpected outcome", err)
	}
	if err := newForwardAuth(srv2.URL, "wrong", 1, nil)(ctx, g.AccessToken, user); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("wrong key: %v, want a 403 error", err)
	}
	for what, tok := range map[string]string{"a bad token": g.AccessToken + "x", "the refresh token": g.RefreshToken} {
		if err := newForwardAuth(srv2.URL, "k", 1, nil)(ctx, tok, user); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("%s: %v, want a 401 error", what, err)
		}
	}
	if _, err := st.RevokeToken(ctx, g.RefreshToken); err != nil {
		t.Fatal(err)
	}
	if err := newForwardAuth(srv2.URL, "k", 1, nil)(ctx, g.AccessToken, user); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("a logged-out session: %v, want a 401 error", err)
	}

	var out, errOut bytes.Buffer
	err = run([]string{"-target", "library", "-redis", "redis://" + miniredis.RunT(t).Addr(), "-mix", "auth", "-sessions", "1", "-workers", "1"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "needs the service") {
		t.Errorf("-mix auth on the library: %v, want a refusal", err)
	}
}

// A worker refreshes an access token that expires within refreshAhead
// before it sends it, as an OAuth client does, and only then: with access
// tokens shorter than that, every auth operation follows a rotation.
func TestHTTPForwardAuthRefreshesAhead(t *testing.T) {
	for _, tc := range []struct {
		ttl       time.Duration
		rotations func(auths uint64) uint64
	}{
		{refreshAhead / 2, func(auths uint64) uint64 { return auths }},
		{5 * time.Minute, func(uint64) uint64 { return 0 }},
	} {
		t.Run("ttl="+tc.ttl.String(), func(t *testing.T) {
			srv := httptest.NewServer(stubService(newStore(t, redistest.For(t, redistest.Mini)), tc.ttl))
			defer srv.Close()
			rep := runJSON(t, "-target", "http", "-http", srv.URL, "-api-key", "k", "-workers", "2", "-sessions", "4", "-count", "100", "-mix", "auth")
			auths, rotations := rep.Ops[opAuth].Count, rep.Ops[opRotate].Count
			if auths != 100 || rotations != tc.rotations(auths) || rep.Total.Errors != 0 {
				t.Errorf("%d auths, %d rotations, errors %v; want 100 auths, %d rotations and no error", auths, rotations, rep.Errors, tc.rotations(100))
			}
		})
	}
}

// -target bare drives bench.Bare, the service's ceiling, and -server-pid
// reports the CPU a process spent per operation: here the test's own, since
// the bare server runs in it.
func TestBareTargetAndServerCPU(t *testing.T) {
	b := redistest.For(t, redistest.Mini)
	srv := httptest.NewServer(bench.Bare(b.Client, b.Prefix+"bare", time.Second))
	defer srv.Close()
	rep := runJSON(t, "-target", "bare", "-http", srv.URL, "-mix", "bare", "-workers", "2", "-sessions", "2",
		"-count", "2000", "-server-pid", strconv.Itoa(os.Getpid()))
	if o := rep.Ops[opBare]; o.Count != 2000 || rep.Total.Errors != 0 {
		t.Errorf("bare: %+v, errors %v; want 2000 calls and none failed", o, rep.Errors)
	}
	if v, err := b.Client.Get(context.Background(), b.Prefix+"bare").Result(); err != nil || !strings.Contains(v, `"refresh_token":"sct_`) {
		t.Errorf("the bare handler stored %q, %v; want the rotation-shaped body", v, err)
	}
	// 2,000 HTTP requests served and sent in this process cost well over
	// 10 ms of CPU, and less than a second each.
	if s := rep.Server; s == nil || s.PID != os.Getpid() || s.Seconds <= 0.01 || s.PerOp <= 0 || s.PerOp > 1e6 {
		t.Errorf("server CPU: %+v", s)
	}

	for _, args := range [][]string{
		{"-target", "bare", "-http", srv.URL, "-mix", "rotate"},
		{"-target", "bare", "-http", srv.URL, "-mix", "bare=1,rotate=1"},
		{"-target", "library", "-redis", "redis://" + b.Mini.Addr(), "-mix", "bare"},
	} {
		var out, errOut bytes.Buffer
		if err := run(append(args, "-sessions", "1", "-workers", "1", "-count", "1"), &out, &errOut); err == nil || !strings.Contains(err.Error(), "-target bare") {
			t.Errorf("%q: %v, want a refusal naming -target bare", args, err)
		}
	}
	var out, errOut bytes.Buffer
	if err := run([]string{"-target", "bare", "-http", srv.URL, "-mix", "bare", "-sessions", "1", "-workers", "1", "-count", "1", "-server-pid", "999999999"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "-server-pid") {
		t.Errorf("a process that does not exist: %v, want a -server-pid error", err)
	}
}

func TestCPUTime(t *testing.T) {
	before, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the clock ticks over (10 ms per tick), or fail after 10s
	// of spinning.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if after, err := cpuTime(os.Getpid()); err != nil || after > before {
			if err != nil || after-before > time.Second {
				t.Fatalf("cpuTime went from %v to %v, %v", before, after, err)
			}
			return
		}
	}
	t.Fatalf("cpuTime stayed at %v over 10s of spinning", before)
}
