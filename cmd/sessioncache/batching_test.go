package main

// Batching as operators see it: SESSIONCACHE_MAX_IN_FLIGHT reaches the
// store, and /metrics shows how the store's calls went to Redis.

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/bench"
	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// batchMetrics reads the batching series of a /metrics exposition.
func batchMetrics(exposition string) redisstore.BatchStats {
	return redisstore.BatchStats{
		Calls:    uint64(metricValue(exposition, "sessioncache_redis_calls_total")),
		Requests: uint64(metricValue(exposition, "sessioncache_redis_requests_total")),
		Batched:  uint64(metricValue(exposition, "sessioncache_redis_batched_calls_total")),
		Waiting:  int64(metricValue(exposition, "sessioncache_redis_waiting_calls")),
	}
}

// scrapeBatching reads the batching series of the service whose metrics
// listener is at base.
func scrapeBatching(t *testing.T, base string) redisstore.BatchStats {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "# TYPE sessioncache_redis_calls_total counter") {
		t.Fatalf("/metrics has no sessioncache_redis_calls_total")
	}
	return batchMetrics(string(b))
}

// introspect sends n introspections of tok to the service at base (each
// one a Validate call of the store), from 64 concurrent clients.
func introspect(t *testing.T, base, apiKey, tok string, n int) {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer hc.CloseIdleConnections()
	err := bench.Parallel(n, func(int) error {
		req, _ := http.NewRequest("POST", base+"/v1/tokens/introspect", strings.NewReader(refreshBody(tok)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("introspection: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// SESSIONCACHE_MAX_IN_FLIGHT reaches the store of the real binary: off,
// 64 concurrent callers still get one Redis request per call; by default
// the same load makes calls wait and share requests, and /metrics shows
// both.
func TestMaxInFlight(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"off", map[string]string{envMaxInFlight: "off"}},
		{"default", map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := redistest.For(t, redistest.Real)
			env := tc.env
			env[envRedisURL] = os.Getenv(redistest.EnvRedisURL)
			env[envKeyPrefix] = b.Prefix
			env[envAPIKey] = randomHex(16)
			p := startService(t, env)
			base := "http://" + p.addr
			c := newAPIClient(t, base, env[envAPIKey])
			poll(t, 10*time.Second, "/readyz 200", func() bool { return readyStatus(base) == http.StatusOK })
			tok := c.login(alice, "laptop").str("refresh_token")
			before := scrapeBatching(t, "http://"+p.MetricsAddr)
			if before.Calls == 0 || before.Requests == 0 {
				t.Fatalf("after a login: %+v, want calls and requests counted", before)
			}

			if tc.name == "off" {
				introspect(t, base, env[envAPIKey], tok, 3000)
				got := scrapeBatching(t, "http://"+p.MetricsAddr)
				if got.Calls < before.Calls+3000 || got.Requests != got.Calls || got.Batched != 0 || got.Waiting != 0 {
					t.Errorf("batching off, after 3,000 introspections: %+v, want every call a request of its own", got)
				}
				return
			}
			var got redisstore.BatchStats
			n := 0
			poll(t, 30*time.Second, "calls batched under 64 concurrent callers", func() bool {
				introspect(t, base, env[envAPIKey], tok, 500)
				n += 500
				got = scrapeBatching(t, "http://"+p.MetricsAddr)
				return got.Batched > before.Batched
			})
			if got.Requests >= got.Calls || got.Calls < got.Batched || got.Waiting != 0 {
				t.Errorf("batching on, after %d introspections: %+v, want fewer requests than calls and none waiting at rest", n, got)
			}
			t.Logf("%d introspections: %+v, %.2f calls per request", n, got,
				float64(got.Calls-before.Calls)/float64(got.Requests-before.Requests))
		})
	}
}

// The batching counters add up every store the service used: they never go
// back when new signing keys swap the store, and calls that finish on the
// previous store still count.
func TestBatchMetricsSurviveStoreSwap(t *testing.T) {
	e := newTestEnv(t)
	newStore := func() *redisstore.Store {
		st, err := redisstore.New(e.b.Client, redisstore.Options{Secret: testSecret, KeyPrefix: e.b.Prefix})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	scrape := func() redisstore.BatchStats { return batchMetrics(e.scrape()) }
	var last redisstore.BatchStats
	rises := func(what string) {
		t.Helper()
		got := scrape()
		if got.Calls <= last.Calls || got.Requests <= last.Requests {
			t.Errorf("%s: %+v, want more calls and requests than %+v", what, got, last)
		}
		last = got
	}
	tok := e.login(alice, "laptop").str("refresh_token")
	rises("after a login")

	first := e.srv.store()
	e.srv.setStore(newStore())
	e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(tok))
	rises("after the first swap and a call")
	if _, err := first.Validate(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	rises("after a call that finished on the previous store")

	for i := range 3 {
		e.srv.setStore(newStore())
		if got := scrape(); got.Calls < last.Calls || got.Requests < last.Requests {
			t.Fatalf("swap %d: %+v, down from %+v", i+2, got, last)
		}
		e.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(tok))
		rises("a call after another swap")
	}
}
