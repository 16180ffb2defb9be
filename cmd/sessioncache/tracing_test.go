package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

func TestTracingOnlyWithAnEndpoint(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		on   bool
		fail bool
	}{
		{env: map[string]string{}},
		{env: map[string]string{envOTLPProtocol: "grpc"}},
		{env: map[string]string{envOTLPEndpoint: "http://127.0.0.1:4318", envOTelDisabled: "true"}},
		{env: map[string]string{envOTLPEndpoint: "http://127.0.0.1:4318", envOTelTraces: "none"}},
		{env: map[string]string{envOTLPEndpoint: "http://127.0.0.1:4318"}, on: true},
		{env: map[string]string{envOTLPTracesEndpoint: "http://127.0.0.1:4318/v1/traces"}, on: true},
		{env: map[string]string{envOTLPEndpoint: "http://127.0.0.1:4317", envOTLPProtocol: "grpc"}, on: true},
		{env: map[string]string{envOTLPEndpoint: "http://127.0.0.1:4318", envOTLPProtocol: "http/json"}, fail: true},
	} {
		tr, err := newTracing(context.Background(), func(k string) string { return tc.env[k] }, "127.0.0.1:8080")
		if (err != nil) != tc.fail || (tr != nil) != tc.on {
			t.Errorf("%v: tracing %v, error %v; want on %v, failing %v", tc.env, tr != nil, err, tc.on, tc.fail)
		}
		if tr != nil {
			tr.shutdown(context.Background())
		}
	}
}

// secretsOf returns what must never be in a trace: each token whole and
// in pieces, the user id, the API key.
func secretsOf(key, user string, tokens ...string) []string {
	s := []string{key, user}
	for _, tk := range tokens {
		s = append(s, tk)
		for i := 0; i+16 <= len(tk); i += 8 {
			s = append(s, tk[i:i+16])
		}
	}
	return s
}

// spanText is everything a span carries that a client could have put there
// or Redis commands hold: its name, attributes, events, links and status.
func spanText(s sdktrace.ReadOnlySpan) string {
	var b strings.Builder
	attrs := func(kv []attribute.KeyValue) {
		for _, a := range kv {
			fmt.Fprintf(&b, " %s=%s", a.Key, a.Value.String())
		}
	}
	b.WriteString(s.Name())
	attrs(s.Attributes())
	for _, e := range s.Events() {
		b.WriteString(" event " + e.Name)
		attrs(e.Attributes)
	}
	for _, l := range s.Links() {
		attrs(l.Attributes)
	}
	b.WriteString(" status " + s.Status().Description)
	return b.String()
}

// tracingKey is the API key of the traced service.
const tracingKey = "tracing-test-api-key-0123456789"

// traceRequests sends, through h, requests that carry a token in every
// place a client can put one, and returns what must not be traced.
func traceRequests(t *testing.T, h http.Handler) []string {
	t.Helper()
	const key = tracingKey
	const user = "auth0|tracing-user-507f1f77bcf8"
	srv := httptest.NewServer(h)
	defer srv.Close()
	// Not the OpenAPI-checking client: Envoy's paths below /v1/auth/ are
	// not in the document.
	c := &apiClient{t: t, base: srv.URL, apiKey: key, http: &http.Client{}}
	must := func(want int, r response) response {
		t.Helper()
		if r.status != want {
			t.Fatalf("%d %s, want %d", r.status, r.raw, want)
		}
		return r
	}
	json := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + key}}
	tok := must(http.StatusCreated, c.send("POST", "/v1/sessions", `{"client_id":"test-app","user_id":"`+user+`","device_name":"laptop"}`, json)).str("refresh_token")
	mid := must(http.StatusOK, c.send("POST", "/v1/tokens/rotate", refreshBody(tok), json)).str("refresh_token")
	rotated := must(http.StatusOK, c.send("POST", "/v1/tokens/rotate", refreshBody(mid), json))
	next, at := rotated.str("refresh_token"), rotated.str("access_token")
	must(http.StatusOK, c.send("POST", "/v1/tokens/introspect", "token="+url.QueryEscape(next),
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Authorization": {"Bearer " + key}}))
	gw := func(h http.Header) http.Header { h.Set("X-Sessioncache-Key", key); return h }
	must(http.StatusOK, c.send("GET", "/v1/auth", "", gw(http.Header{"Authorization": {"Bearer " + at}, "X-Forwarded-For": {at}})))
	must(http.StatusOK, c.send("GET", "/v1/auth", "", gw(http.Header{"Cookie": {"sc_session=" + at}})))
	must(http.StatusUnauthorized, c.send("GET", "/v1/auth?token="+at, "", gw(http.Header{})))
	must(http.StatusOK, c.send("GET", "/v1/auth/"+at, "", gw(http.Header{"Authorization": {"Bearer " + at}})))
	must(http.StatusUnauthorized, c.send("GET", "/v1/auth", "", gw(http.Header{"Authorization": {"Bearer " + next}})))
	must(http.StatusNotFound, c.send("GET", "/v1/tokens/"+next, "", json))
	must(http.StatusOK, c.send("GET", "/v1/users/"+url.PathEscape(user)+"/sessions", "", json))
	must(http.StatusBadRequest, c.send("POST", "/v1/tokens/rotate", refreshBody(tok), json)) // reused
	return secretsOf(key, user, tok, mid, next, at)
}

// Traces hold no token, no user id and no API key, wherever the client put
// them, and no Redis command's arguments.
func TestTracesHoldNoSecrets(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		exp := tracetest.NewInMemoryExporter()
		tr := &tracing{tp: sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)), server: "127.0.0.1:8080"}
		rdb := b.Client
		if cc, ok := rdb.(*redis.ClusterClient); ok {
			// As the service does, instrument a cluster client before it
			// knows its nodes: redisotel hooks the nodes it meets later.
			rdb = redis.NewClusterClient(cc.Options())
			t.Cleanup(func() { rdb.Close() })
		}
		if err := tr.instrument(rdb); err != nil {
			t.Fatal(err)
		}
		e := newTestEnvOn(t, b, withAPIKey(tracingKey), func(s *envSetup) { s.rdb = rdb })
		secrets := traceRequests(t, tr.handler(e.srv))

		spans := exp.GetSpans().Snapshots()
		kinds := map[trace.SpanKind]int{}
		names := map[string]bool{}
		for _, s := range spans {
			kinds[s.SpanKind()]++
			names[s.Name()] = true
			text := spanText(s)
			for _, sec := range secrets {
				if strings.Contains(text, sec) {
					t.Errorf("span %q holds %q: %s", s.Name(), sec, text)
				}
			}
			for _, a := range s.Attributes() {
				if a.Key == "db.statement" || a.Key == "db.query.text" {
					t.Errorf("span %q records the command: %s", s.Name(), a.Value.String())
				}
			}
		}
		// Not vacuous: a server span per request, Redis spans beneath them,
		// named by route.
		if kinds[trace.SpanKindServer] != 12 || kinds[trace.SpanKindClient] < 10 {
			t.Errorf("%d server spans and %d Redis spans, want 12 and at least 10", kinds[trace.SpanKindServer], kinds[trace.SpanKindClient])
		}
		for _, n := range []string{"POST /v1/sessions", "POST /v1/tokens/rotate", "GET /v1/auth", "GET /v1/auth/", "GET /v1/users/{user_id}/sessions", "evalsha"} {
			if !names[n] {
				t.Errorf("no span %q among %v", n, names)
			}
		}
		for _, s := range spans {
			if s.Name() == "GET /v1/auth/" {
				for _, a := range s.Attributes() {
					if a.Key == "url.path" && a.Value.AsString() != "/v1/auth/" {
						t.Errorf("url.path = %q, want the route", a.Value.AsString())
					}
				}
			}
		}
	})
}

// The scan above would see a Redis command's arguments: with go-redis's
// default (db.statement on) the user id shows.
func TestTracesWouldShowRedisArguments(t *testing.T) {
	b := redistest.For(t, redistest.Mini)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	if err := redisotel.InstrumentTracing(b.Client, redisotel.WithTracerProvider(tp)); err != nil {
		t.Fatal(err)
	}
	e := newTestEnvOn(t, b, withAPIKey(tracingKey))
	secrets := traceRequests(t, (&tracing{tp: tp}).handler(e.srv))
	leaked := false
	for _, s := range exp.GetSpans().Snapshots() {
		leaked = leaked || strings.Contains(spanText(s), secrets[1])
	}
	if !leaked {
		t.Errorf("with db.statement on, no span shows the user id: the scan is blind")
	}
}

// The service exports its spans over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT,
// and flushes them when it stops.
func TestTracesExportedOverOTLP(t *testing.T) {
	var mu sync.Mutex
	var raw []byte
	var reqs []*coltrace.ExportTraceServiceRequest
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			t.Errorf("the collector got %s %s", r.Method, r.URL.Path)
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		mu.Lock()
		raw, reqs = append(raw, body...), append(reqs, &req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Write(b)
	}))
	defer collector.Close()

	const key = "otlp-test-api-key-0123456789"
	p := startService(t, map[string]string{envAPIKey: key, envOTLPEndpoint: collector.URL, "OTEL_SERVICE_NAME": "sc-under-test"})
	c := newAPIClient(t, "http://"+p.addr, key)
	tok := c.must(http.StatusCreated, "POST", "/v1/sessions", `{"client_id":"test-app","user_id":"otlp-user-0123456789abcdef","device_name":"x"}`).str("refresh_token")
	c.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(tok))
	p.cmd.Process.Signal(os.Interrupt)
	if code := p.exitCode(t); code != exitOK {
		t.Fatalf("exit %d", code)
	}

	mu.Lock()
	defer mu.Unlock()
	names := map[string]bool{}
	service := ""
	for _, req := range reqs {
		for _, rs := range req.ResourceSpans {
			for _, a := range rs.Resource.Attributes {
				if a.Key == "service.name" {
					service = a.Value.GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					names[s.Name] = true
				}
			}
		}
	}
	if service != "sc-under-test" || !names["POST /v1/sessions"] || !names["POST /v1/tokens/rotate"] || !names["evalsha"] {
		t.Errorf("exported service %q, spans %v", service, names)
	}
	for _, s := range secretsOf(key, "otlp-user-0123456789abcdef", tok) {
		if strings.Contains(string(raw), s) {
			t.Errorf("the exported spans hold %q", s)
		}
	}
	if strings.Contains(p.logs.String(), `"msg":"request"`) {
		t.Errorf("requests logged although the access log is off by default:\n%s", p.logs)
	}
}
