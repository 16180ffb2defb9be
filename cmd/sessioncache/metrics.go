package main

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/sessionauth"
	"github.com/sessioncache/sessioncache/redisstore"
)

// metrics are the service's Prometheus metrics. Labels take a few fixed
// values each: never a user, session or token id.
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	revocations  *prometheus.CounterVec
	graceReplays prometheus.Counter
	corrupt      prometheus.Counter

	keyReloadErrors *prometheus.CounterVec
	keysReloaded    *prometheus.GaugeVec
	buildInfo       *prometheus.GaugeVec

	refreshTokenAtAuth prometheus.Counter
	feedNotices        *prometheus.CounterVec
}

func newMetrics(rdb redis.UniversalClient) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessioncache_requests_total",
			Help: "HTTP requests by operation and outcome (ok, grace_replay, reused, expired, revoked, unknown, malformed, invalid_request, unauthorized, unavailable, corrupt, ...).",
		}, []string{"operation", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sessioncache_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by operation and outcome.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"operation", "outcome"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessioncache_session_revocations_total",
			Help: "Sessions revoked, by reason: logout, logout_all, reuse (a rotated token was replayed), evicted (max sessions reached).",
		}, []string{"reason"}),
		graceReplays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sessioncache_grace_replays_total",
			Help: "Rotations answered with the current token because its predecessor was presented again within the grace window.",
		}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sessioncache_corrupt_records_total",
			Help: "Session records found damaged (a field missing or malformed) or naming another user than their token proves: the call answered corrupt, or a listing skipped the session. Anyone with write access to Redis, or damaged data.",
		}),
		keyReloadErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessioncache_keys_reload_errors_total",
			Help: "Reloads of a key file (file: signing_keys, api_keys, clients) that changed nothing: the file did not load, was removed, or was written in place (only a new file renamed into place is loaded); the previous keys stay in force.",
		}, []string{"file"}),
		keysReloaded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sessioncache_keys_last_reload_success_timestamp_seconds",
			Help: "When a key file (file: signing_keys, api_keys, clients) was last loaded (unix seconds), at start or since; time() minus it is the age of the keys in force.",
		}, []string{"file"}),
		refreshTokenAtAuth: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sessioncache_auth_refresh_token_presented_total",
			Help: "Forward-auth requests refused because they carried a refresh token (in a header or a cookie): a client leaking its refresh token.",
		}),
		feedNotices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessioncache_revocation_feed_notices_total",
			Help: "What the revocation feed reported: subscribed, lost, revoked (messages).",
		}, []string{"kind"}),
		buildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sessioncache_build_info",
			Help: "Always 1; the labels name the build: version, Go version and VCS revision (see -version).",
		}, []string{"version", "goversion", "revision"}),
	}
	b := readBuild()
	m.buildInfo.WithLabelValues(b.version, b.goVersion, b.revision).Set(1)
	for _, r := range []redisstore.Reason{redisstore.ReasonLogout, redisstore.ReasonLogoutAll, redisstore.ReasonReuse, redisstore.ReasonEvicted} {
		m.revocations.WithLabelValues(string(r))
	}
	for _, k := range []redisstore.NoticeKind{redisstore.NoticeSubscribed, redisstore.NoticeLost, redisstore.NoticeRevoked} {
		m.feedNotices.WithLabelValues(k.String())
	}
	m.reg.MustRegister(m.requests, m.duration, m.revocations, m.graceReplays, m.corrupt, m.keyReloadErrors, m.keysReloaded, m.buildInfo, m.refreshTokenAtAuth, m.feedNotices,
		poolCollector{rdb},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// watchGate exports what the session liveness memory did.
func (m *metrics) watchGate(g *sessionauth.Gate) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "sessioncache_auth_session_checks_total",
			Help:        "Session liveness checks of forward auth and introspection, by where the answer came from: memory (no Redis command) or redis.",
			ConstLabels: prometheus.Labels{"source": "memory"},
		}, func() float64 { return float64(g.Stats().Memory) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "sessioncache_auth_session_checks_total",
			Help:        "Session liveness checks of forward auth and introspection, by where the answer came from: memory (no Redis command) or redis.",
			ConstLabels: prometheus.Labels{"source": "redis"},
		}, func() float64 { return float64(g.Stats().Redis) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sessioncache_auth_memory_sessions",
			Help: "Sessions this instance remembers for forward auth.",
		}, func() float64 { return float64(g.Stats().Sessions) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sessioncache_revocation_feed_trusted",
			Help: "1 while the revocation feed is whole and synced, so that forward auth answers from memory; 0 while every answer comes from Redis.",
		}, func() float64 {
			if g.Trusted() {
				return 1
			}
			return 0
		}),
	)
}

// watchStores exports how the store's calls went to Redis, read from
// stats at each scrape: calls and the requests that carried them, whose
// rates' ratio is the mean calls per request (a ratio of two rates is
// current and adds up over replicas; a gauge of the ratio since start would
// be neither).
func (m *metrics) watchStores(stats func() redisstore.BatchStats) {
	m.reg.MustRegister(batchCollector{stats})
}

// batchCollector reports the store's BatchStats at each scrape, from one
// reading.
type batchCollector struct{ stats func() redisstore.BatchStats }

var (
	batchCalls    = prometheus.NewDesc("sessioncache_redis_calls_total", "Calls of the store to Redis, each one script or command: logins, rotations, validations, session checks, revocations, listings (not the revocation feed or readiness probes).", nil, nil)
	batchRequests = prometheus.NewDesc("sessioncache_redis_requests_total", "Redis requests (round trips) that carried those calls: a call alone, or a pipeline of calls that waited for a busy node. Calls over requests is the mean calls per request; 1 while no call waits, or with SESSIONCACHE_MAX_IN_FLIGHT=off.", nil, nil)
	batchBatched  = prometheus.NewDesc("sessioncache_redis_batched_calls_total", "Calls that found SESSIONCACHE_MAX_IN_FLIGHT requests in flight to their Redis node, waited, and went out in a pipeline with others.", nil, nil)
	batchWaited   = prometheus.NewDesc("sessioncache_redis_waited_calls_total", "Calls that found SESSIONCACHE_MAX_IN_FLIGHT requests in flight to their Redis node and waited, however they went out then (in a pipeline, alone, or not at all when their request ended first).", nil, nil)
	batchMoving   = prometheus.NewDesc("sessioncache_redis_moving_retries_total", "Calls sent again because Redis refused them, unrun, while their hash slot moved between cluster nodes (TRYAGAIN, or ASK and MOVED beyond go-redis's redirects) or had no master (CLUSTERDOWN).", nil, nil)
	batchWaiting  = prometheus.NewDesc("sessioncache_redis_waiting_calls", "Calls waiting now for a busy Redis node (SESSIONCACHE_MAX_IN_FLIGHT requests in flight to it).", nil, nil)
)

func (batchCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{batchCalls, batchRequests, batchBatched, batchWaited, batchMoving, batchWaiting} {
		ch <- d
	}
}

func (c batchCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(batchCalls, prometheus.CounterValue, float64(s.Calls))
	ch <- prometheus.MustNewConstMetric(batchRequests, prometheus.CounterValue, float64(s.Requests))
	ch <- prometheus.MustNewConstMetric(batchBatched, prometheus.CounterValue, float64(s.Batched))
	ch <- prometheus.MustNewConstMetric(batchWaited, prometheus.CounterValue, float64(s.Waited))
	ch <- prometheus.MustNewConstMetric(batchMoving, prometheus.CounterValue, float64(s.Moving))
	ch <- prometheus.MustNewConstMetric(batchWaiting, prometheus.GaugeValue, float64(s.Waiting))
}

// onEvent counts the store's security events.
func (m *metrics) onEvent(_ context.Context, e redisstore.Event) {
	switch e.Kind {
	case redisstore.EventReuseDetected, redisstore.EventSessionRevoked, redisstore.EventSessionEvicted:
		m.revocations.WithLabelValues(string(e.Reason)).Inc()
	case redisstore.EventGraceReplay:
		m.graceReplays.Inc()
	case redisstore.EventCorrupt:
		m.corrupt.Inc()
	}
}

// forOperation returns the function that counts a request of op and times
// it, by outcome. It resolves each outcome's counter and histogram once
// and keeps them in a map it replaces (never changes) on a new outcome, so
// that counting a request takes no lock, hash of labels or allocation.
func (m *metrics) forOperation(op string) func(outcome string, seconds float64) {
	type observers struct {
		count    prometheus.Counter
		duration prometheus.Observer
	}
	var (
		known atomic.Pointer[map[string]observers]
		mu    sync.Mutex
	)
	known.Store(&map[string]observers{})
	return func(outcome string, seconds float64) {
		o, ok := (*known.Load())[outcome]
		if !ok {
			mu.Lock()
			old := *known.Load()
			if o, ok = old[outcome]; !ok {
				o = observers{m.requests.WithLabelValues(op, outcome), m.duration.WithLabelValues(op, outcome)}
				next := make(map[string]observers, len(old)+1)
				for k, v := range old {
					next[k] = v
				}
				next[outcome] = o
				known.Store(&next)
			}
			mu.Unlock()
		}
		o.count.Inc()
		o.duration.Observe(seconds)
	}
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// poolCollector reports the Redis client's connection pool at each scrape.
type poolCollector struct{ rdb redis.UniversalClient }

var (
	poolConns    = prometheus.NewDesc("sessioncache_redis_pool_connections", "Connections in the Redis client pool, by state (total, idle).", []string{"state"}, nil)
	poolHits     = prometheus.NewDesc("sessioncache_redis_pool_hits_total", "Times a free connection was found in the pool.", nil, nil)
	poolMisses   = prometheus.NewDesc("sessioncache_redis_pool_misses_total", "Times no free connection was found in the pool.", nil, nil)
	poolTimeouts = prometheus.NewDesc("sessioncache_redis_pool_timeouts_total", "Times waiting for a pool connection timed out.", nil, nil)
	poolStale    = prometheus.NewDesc("sessioncache_redis_pool_stale_connections_total", "Stale connections removed from the pool.", nil, nil)
	poolWaits    = prometheus.NewDesc("sessioncache_redis_pool_waits_total", "Times a request waited for a pool connection.", nil, nil)
	poolWaited   = prometheus.NewDesc("sessioncache_redis_pool_wait_seconds_total", "Time requests spent waiting for a pool connection.", nil, nil)
)

func (poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolConns, poolHits, poolMisses, poolTimeouts, poolStale, poolWaits, poolWaited} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.rdb.PoolStats()
	ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(s.TotalConns), "total")
	ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(s.IdleConns), "idle")
	ch <- prometheus.MustNewConstMetric(poolHits, prometheus.CounterValue, float64(s.Hits))
	ch <- prometheus.MustNewConstMetric(poolMisses, prometheus.CounterValue, float64(s.Misses))
	ch <- prometheus.MustNewConstMetric(poolTimeouts, prometheus.CounterValue, float64(s.Timeouts))
	ch <- prometheus.MustNewConstMetric(poolStale, prometheus.CounterValue, float64(s.StaleConns))
	ch <- prometheus.MustNewConstMetric(poolWaits, prometheus.CounterValue, float64(s.WaitCount))
	ch <- prometheus.MustNewConstMetric(poolWaited, prometheus.CounterValue, float64(s.WaitDurationNs)/1e9)
}
