package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/bench"
	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// The hot path in process: the service's rotation, refresh at the token
// endpoint and forward auth beside bench.Bare (one go-redis SET per
// request) and bench.BareHeaders (200 with three headers, no I/O), the
// ceilings of bench/cpucost, on the same Redis client, without the HTTP
// server and client around them. Allocations per request here are the
// handler's own:
//
//	go test -run '^$' -bench Handler -benchmem ./cmd/sessioncache/
//	go test -run '^$' -bench 'Handler/handler=rotate' -cpuprofile cpu.out ./cmd/sessioncache/
//	go tool pprof -top cpu.out

// hotPath is a service on a real Redis with sessions logged in, and
// requests that can be sent again and again.
type hotPath struct {
	srv     *server
	bare    http.Handler
	tokens  []string
	access  []string
	users   []string
	headers http.Handler
}

const hotPathKey = "hot-path-api-key-0123456789"

func newHotPath(tb testing.TB, sessions int) *hotPath {
	tb.Helper()
	b := redistest.For(tb, redistest.Real)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	m := newMetrics(b.Client)
	st, err := redisstore.New(b.Client, redisstore.Options{Secret: testSecret, KeyPrefix: b.Prefix, OnEvent: m.onEvent})
	if err != nil {
		tb.Fatal(err)
	}
	h := &hotPath{
		srv: newServer(serverConfig{store: st, log: log, metrics: m, apiKeys: [][]byte{[]byte(hotPathKey)},
			tokens: newTestAuthority(tb, testSecret, time.Now), issuer: testIssuer,
			dpop: newTestDPoP(tb, b.Client, b.Prefix, time.Now, testSecret, testIssuer, 0)}),
		bare:    bench.Bare(b.Client, b.Prefix+"bare", defaultRedisTimeout),
		headers: bench.BareHeaders(),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.srv.watchRevocations(ctx, st, redisstore.DefaultHeartbeat)
	}()
	tb.Cleanup(func() { cancel(); <-done })
	for !h.srv.gate.Trusted() {
		time.Sleep(time.Millisecond)
	}
	for i := range sessions {
		g, err := st.Issue(ctx, "hot-path-user-"+string(rune('a'+i%26)), redisstore.Client{ClientID: testClient, DeviceName: "bench"})
		if err != nil {
			tb.Fatal(err)
		}
		at, _, err := h.srv.accessToken(g, "")
		if err != nil {
			tb.Fatal(err)
		}
		h.tokens = append(h.tokens, g.Token)
		h.access = append(h.access, at)
		h.users = append(h.users, g.UserID)
	}
	tb.Cleanup(func() { b.Client.Del(context.Background(), b.Prefix+"bare") })
	return h
}

// reusable is a request and a response writer that serve again and again
// without allocating.
type reusable struct {
	req  *http.Request
	body bytes.Reader
	w    recorder
}

func newReusable(method, target string, header http.Header) *reusable {
	u := &reusable{w: recorder{h: http.Header{}}}
	u.req, _ = http.NewRequest(method, "http://127.0.0.1:8080"+target, nil)
	u.req.Header = header
	u.req.RemoteAddr = "192.0.2.1:40000"
	return u
}

// serve sends the request, with body if not nil, to h and returns the
// status and the answer's body.
func (u *reusable) serve(h http.Handler, body []byte) (int, []byte) {
	u.req.Body = http.NoBody
	if body != nil {
		u.body.Reset(body)
		u.req.Body = io.NopCloser(&u.body)
		u.req.ContentLength = int64(len(body))
	}
	clear(u.w.h)
	u.w.status, u.w.body = 0, u.w.body[:0]
	h.ServeHTTP(&u.w, u.req)
	if u.w.status == 0 {
		u.w.status = http.StatusOK
	}
	return u.w.status, u.w.body
}

type recorder struct {
	h      http.Header
	status int
	body   []byte
}

func (w *recorder) Header() http.Header { return w.h }
func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *recorder) Write(b []byte) (int, error) {
	w.body = append(w.body, b...)
	return len(b), nil
}

// rotateBody is what loadgen sends to rotate a token.
func rotateBody(tok string) []byte {
	return []byte(`{"refresh_token":"` + tok + `","device_id":"","ip_address":"203.0.113.42","user_agent":"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}`)
}

// nextToken reads the new refresh token of a rotation's answer.
func nextToken(tb testing.TB, status int, body []byte) string {
	const field = `"refresh_token":"`
	_, rest, ok := bytes.Cut(body, []byte(field))
	if status != http.StatusOK || !ok {
		tb.Fatalf("rotate: %d %s", status, body)
	}
	tok, _, _ := strings.Cut(string(rest), `"`)
	return tok
}

func BenchmarkHandler(b *testing.B) {
	h := newHotPath(b, 64)
	b.Run("handler=bare", func(b *testing.B) {
		u := newReusable("POST", "/", http.Header{"Content-Type": {"application/json"}})
		body := rotateBody(h.tokens[0])
		b.ReportAllocs()
		for b.Loop() {
			if status, out := u.serve(h.bare, body); status != http.StatusOK {
				b.Fatalf("bare: %d %s", status, out)
			}
		}
	})
	b.Run("handler=rotate", func(b *testing.B) {
		u := newReusable("POST", "/v1/tokens/rotate", http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + hotPathKey}})
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			k := i % len(h.tokens)
			status, out := u.serve(h.srv, rotateBody(h.tokens[k]))
			h.tokens[k] = nextToken(b, status, out)
			i++
		}
	})
	b.Run("handler=token", func(b *testing.B) {
		u := newReusable("POST", "/oauth2/token", http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			k := i % len(h.tokens)
			status, out := u.serve(h.srv, []byte("grant_type=refresh_token&client_id="+testClient+"&refresh_token="+h.tokens[k]))
			h.tokens[k] = nextToken(b, status, out)
			i++
		}
	})
	b.Run("handler=headers", func(b *testing.B) {
		u := newReusable("GET", "/v1/auth", http.Header{"Authorization": {"Bearer " + h.access[0]}, "X-Sessioncache-Key": {hotPathKey}})
		b.ReportAllocs()
		for b.Loop() {
			if status, out := u.serve(h.headers, nil); status != http.StatusOK {
				b.Fatalf("headers: %d %s", status, out)
			}
		}
	})
	b.Run("handler=auth", func(b *testing.B) {
		us := make([]*reusable, len(h.access))
		for k, tok := range h.access {
			us[k] = newReusable("GET", "/v1/auth", http.Header{"Authorization": {"Bearer " + tok}, "X-Sessioncache-Key": {hotPathKey}})
		}
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			if status, out := us[i%len(us)].serve(h.srv, nil); status != http.StatusOK {
				b.Fatalf("auth: %d %s", status, out)
			}
			i++
		}
	})
}

// BenchmarkHandlerDPoP is the hot path of DPoP-bound sessions next to that
// of bearer ones (BenchmarkHandler): a refresh at the token endpoint and a
// forward auth, each with a proof, whose signing is not timed.
func BenchmarkHandlerDPoP(b *testing.B) {
	h := newHotPath(b, 1)
	k := newDPoPKey(b, time.Now)
	ctx := context.Background()
	var tokens, access []string
	for i := range 64 {
		g, err := h.srv.store().Issue(ctx, "hot-path-dpop-"+string(rune('a'+i%26)), redisstore.Client{ClientID: testClient, JKT: k.jkt})
		if err != nil {
			b.Fatal(err)
		}
		at, _, err := h.srv.accessToken(g, k.jkt)
		if err != nil {
			b.Fatal(err)
		}
		tokens, access = append(tokens, g.Token), append(access, at)
	}
	b.Run("handler=token", func(b *testing.B) {
		u := newReusable("POST", "/oauth2/token", http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			n := i % len(tokens)
			u.req.Header["Dpop"] = []string{k.proof(b, "POST", testIssuer+tokenPath, "", "")}
			body := []byte("grant_type=refresh_token&client_id=" + testClient + "&refresh_token=" + tokens[n])
			b.StartTimer()
			status, out := u.serve(h.srv, body)
			tokens[n] = nextToken(b, status, out)
		}
	})
	b.Run("handler=auth", func(b *testing.B) {
		us := make([]*reusable, len(access))
		for n, tok := range access {
			us[n] = newReusable("GET", "/v1/auth", with(originalHeaders(), http.Header{"Authorization": {"DPoP " + tok}, "X-Sessioncache-Key": {hotPathKey}}))
		}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			u := us[i%len(us)]
			u.req.Header["Dpop"] = []string{k.proof(b, "GET", originalURL, access[i%len(us)], "")}
			b.StartTimer()
			if status, out := u.serve(h.srv, nil); status != http.StatusOK {
				b.Fatalf("auth: %d %s", status, out)
			}
		}
	})
}
