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
	buildInfo    *prometheus.GaugeVec
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
	m.reg.MustRegister(m.requests, m.duration, m.revocations, m.graceReplays, m.buildInfo,
		poolCollector{rdb},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// onEvent counts the store's security events.
func (m *metrics) onEvent(_ context.Context, e redisstore.Event) {
	switch e.Kind {
	case redisstore.EventReuseDetected, redisstore.EventSessionRevoked, redisstore.EventSessionEvicted:
		m.revocations.WithLabelValues(string(e.Reason)).Inc()
	case redisstore.EventGraceReplay:
		m.graceReplays.Inc()
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
