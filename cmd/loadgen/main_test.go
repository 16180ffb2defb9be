package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
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
		srv := httptest.NewServer(stubService(newStore(t, redistest.For(t, redistest.Mini))))
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
// service itself.
func stubService(s *redisstore.Store) http.Handler {
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
		g, err := s.Issue(r.Context(), req.UserID, req.Client)
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusCreated, map[string]string{"refresh_token": g.Token, "session_id": g.SessionID})
	})
	mux.HandleFunc("POST /v1/tokens/{op}", func(w http.ResponseWriter, r *http.Request) {
		tok, ctx := decode(r).RefreshToken, r.Context()
		switch r.PathValue("op") {
		case "rotate":
			g, err := s.Rotate(ctx, tok, redisstore.Client{})
			if err != nil {
				fail(w, err)
				return
			}
			reply(w, http.StatusOK, map[string]string{"refresh_token": g.Token, "session_id": g.SessionID})
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
	// Forward auth: the token is the bearer, the key in X-Sessioncache-Key.
	mux.HandleFunc("GET /v1/auth", func(w http.ResponseWriter, r *http.Request) {
		info, err := s.Validate(r.Context(), strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Auth-User-Id", info.UserID)
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
		srv := httptest.NewServer(stubService(newStore(t, b)))
		defer srv.Close()
		rep := runJSON(t, "-target", "http", "-http", srv.URL, "-api-key", "k",
			"-workers", "4", "-sessions", "40", "-count", "2000", "-mix", "realistic")
		checkReport(t, rep, 2000)
	})
}

// The auth operation asks /v1/auth about the current token of each slot,
// as a gateway does, and checks the user it names; it needs the service.
func TestHTTPForwardAuth(t *testing.T) {
	srv := httptest.NewServer(stubService(newStore(t, redistest.For(t, redistest.Mini))))
	defer srv.Close()
	// Rotations between the checks: the auth operation must follow the
	// current token.
	rep := runJSON(t, "-target", "http", "-http", srv.URL, "-api-key", "k",
		"-workers", "4", "-sessions", "40", "-count", "1000", "-mix", "auth=3,validate=1,rotate=1")
	if o := rep.Ops[opAuth]; o.Count < 400 || o.Errors != 0 || rep.Total.Errors != 0 || o.P50 > o.P99 {
		t.Errorf("auth: %+v, errors %v; want about 600 calls and none failed", o, rep.Errors)
	}
	if rep.Ops[opValidate].Count == 0 || rep.Ops[opRotate].Count == 0 {
		t.Errorf("the mix ran only %v", rep.Ops)
	}

	// Only a 200 naming the session's user is a success.
	st := newStore(t, redistest.For(t, redistest.Mini))
	srv2 := httptest.NewServer(stubService(st))
	defer srv2.Close()
	g, err := st.Issue(context.Background(), "8f2d7c1e-3b4a-4c5d-9e6f-7a8b9c0d1e2f", redisstore.Client{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := newForwardAuth(srv2.URL, "k", 1)(ctx, g.Token, g.UserID); err != nil {
		t.Errorf("a live session: %v", err)
	}
	if err := newForwardAuth(srv2.URL, "k", 1)(ctx, g.Token, "someone else"); !errors.Is(err, errUnexpected) {
		t.Errorf("another user named: %v, want an unexpected outcome", err)
	}
	if err := newForwardAuth(srv2.URL, "wrong", 1)(ctx, g.Token, g.UserID); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("wrong key: %v, want a 403 error", err)
	}
	if err := newForwardAuth(srv2.URL, "k", 1)(ctx, g.Token+"x", g.UserID); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("a bad token: %v, want a 401 error", err)
	}

	var out, errOut bytes.Buffer
	err = run([]string{"-target", "library", "-redis", "redis://" + miniredis.RunT(t).Addr(), "-mix", "auth", "-sessions", "1", "-workers", "1"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "needs the service") {
		t.Errorf("-mix auth on the library: %v, want a refusal", err)
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
