package deploytest

// The monitoring component (ServiceMonitor, PrometheusRule) against the
// service's real /metrics: every metric an alert reads, and every label
// value it matches, must be one the running service exposes, scraped while
// each alert's condition is made to happen.

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/deploytest/internal/kubelet"
	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/internal/servicetest"
)

// kubeStateMetrics are the kube-state-metrics series alerts and the
// sizing guide may use (kube-prometheus-stack ships it); the service's own
// come from /metrics.
var kubeStateMetrics = []string{"kube_pod_container_status_ready", "kube_deployment_status_replicas_available", "kube_deployment_spec_replicas",
	"kube_horizontalpodautoscaler_status_current_replicas", "kube_horizontalpodautoscaler_spec_max_replicas"}

// observedMetrics scrapes a service through everything the alerts watch:
// a refresh token sent to forward auth, a revocation no replica
// acknowledges, an evicting policy, Redis down (which also loses the
// revocation feed).
func observedMetrics(t *testing.T) (names map[string]bool, labels map[string]map[string]bool) {
	t.Helper()
	srv := redistest.StartServer(t)
	key := randomHex(16)
	p := startService(t, "-redis-url", "redis://"+srv.Addr+"/0",
		"-api-key-file", secretFile(t, "api-key", key), "-secret-file", secretFile(t, "secret", randomHex(32)),
		"-revocation-replicas", "1", "-replication-timeout", "10ms", "-redis-timeout", "200ms")
	base := "http://" + p.Addr
	c := newAPIClient(t, base, key)
	c.metrics = "http://" + p.MetricsAddr
	servicetest.WaitFor(t, "ready", 10*time.Second, func() bool { return status(base+"/readyz") == http.StatusOK })
	tok := c.login(alice, "laptop")
	g1 := c.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(tok.str("refresh_token")))
	t1 := g1.str("refresh_token")
	c.must(http.StatusOK, "POST", "/v1/tokens/introspect", refreshBody(t1))
	c.checkForwardAuth(g1, alice) // ok, and a refresh token where the access token belongs
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {t1}, "client_id": {clientID}}.Encode()
	if r := c.send("POST", "/oauth2/token", form, http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}); r.status != http.StatusOK {
		t.Fatalf("POST /oauth2/token: %d %s", r.status, r.raw)
	} else {
		t1 = r.str("refresh_token")
	}
	status(base + "/healthz")
	c.must(http.StatusServiceUnavailable, "DELETE", "/v1/users/"+alice+"/sessions/"+tok.str("session_id"), "") // not_replicated
	if err := srv.Client(t).ConfigSet(context.Background(), "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	servicetest.WaitFor(t, "/readyz 503 on an evicting policy", 10*time.Second, func() bool { return status(base+"/readyz") == http.StatusServiceUnavailable })
	c.must(http.StatusServiceUnavailable, "POST", "/v1/sessions", loginBody(alice, "phone")) // evicting_policy
	srv.Stop()
	c.must(http.StatusServiceUnavailable, "POST", "/v1/tokens/introspect", refreshBody(t1)) // unavailable

	c.scrape() // counted from the next scrape on
	return scrapeMetrics(c)
}

// scrapeMetrics reads the service's /metrics: the names of its metric
// families and of their series (a histogram's _bucket, _sum, _count), and
// every value each label took.
func scrapeMetrics(c *apiClient) (names map[string]bool, labels map[string]map[string]bool) {
	c.t.Helper()
	names, labels = map[string]bool{}, map[string]map[string]bool{}
	family := regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) `)
	sample := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? `)
	pair := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
	for _, line := range strings.Split(c.scrape(), "\n") {
		if m := family.FindStringSubmatch(line); m != nil {
			names[m[1]] = true
		}
		m := sample.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		names[m[1]] = true
		for _, kv := range pair.FindAllStringSubmatch(m[2], -1) {
			if labels[kv[1]] == nil {
				labels[kv[1]] = map[string]bool{}
			}
			labels[kv[1]][kv[2]] = true
		}
	}
	return names, labels
}

func TestMonitoringAlertsUseRealMetrics(t *testing.T) {
	m := withMonitoring(t, "in-namespace")
	if len(m.rules) != 1 || len(m.serviceMonitors) != 1 {
		t.Fatalf("want one PrometheusRule and one ServiceMonitor, got %d and %d", len(m.rules), len(m.serviceMonitors))
	}
	// The ServiceMonitor scrapes the service's Service, on a named port
	// of it, at the path the service serves metrics on.
	sm := m.serviceMonitors[0]
	var svcPorts []string
	for _, s := range m.services {
		if kubelet.Selects(sm.Spec.Selector.MatchLabels, s.Labels) {
			for _, p := range s.Spec.Ports {
				svcPorts = append(svcPorts, p.Name)
			}
			if pods := m.podsSelected(s.Spec.Selector); len(pods) != 1 || !strings.HasPrefix(pods[0], "Deployment ") {
				t.Errorf("the ServiceMonitor selects Service %s, whose pods are %v: want the service's", s.Name, pods)
			}
		}
	}
	for _, e := range sm.Spec.Endpoints {
		if !slices.Contains(svcPorts, e.Port) || e.Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoint port %q path %q: want /metrics on a port of the service (%v)", e.Port, e.Path, svcPorts)
		}
	}
	// Prometheus may scrape through the NetworkPolicies.
	scrape := false
	for _, p := range m.policies {
		for _, r := range p.Spec.Ingress {
			for _, peer := range r.From {
				if peer.PodSelector != nil && peer.PodSelector.MatchLabels["app.kubernetes.io/name"] == "prometheus" {
					scrape = true
				}
			}
		}
	}
	if !scrape {
		t.Error("no NetworkPolicy lets Prometheus scrape the service")
	}

	names, labels := observedMetrics(t)
	container := m.deployments[0].Spec.Template.Spec.Containers[0].Name
	want := []string{"SessioncacheReuseDetectionsRising", "SessioncacheRedisErrors", "SessioncacheNotReady", "SessioncacheEvictingPolicy", "SessioncacheLatencyHigh",
		"SessioncacheRefreshTokenAtForwardAuth", "SessioncacheRevocationFeedDown", "SessioncacheCorruptRecords", "SessioncacheKeyReloadFailing"}
	var alerts []string
	metric := regexp.MustCompile(`\b((?:sessioncache|kube|go|process)_[a-z0-9_]+)\b`)
	matcher := regexp.MustCompile(`([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	for _, g := range m.rules[0].Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %s: want an expression, a severity and a summary", r.Alert)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			used := metric.FindAllString(r.Expr, -1)
			if len(used) == 0 {
				t.Errorf("alert %s reads no metric of the service or kube-state-metrics", r.Alert)
			}
			kube := false
			for _, name := range used {
				switch {
				case strings.HasPrefix(name, "kube_"):
					kube = true
					if !slices.Contains(kubeStateMetrics, name) {
						t.Errorf("alert %s: %s is not a kube-state-metrics series this test knows", r.Alert, name)
					}
				case !names[name]:
					t.Errorf("alert %s reads %s, which the service does not expose", r.Alert, name)
				}
			}
			for _, mm := range matcher.FindAllStringSubmatch(r.Expr, -1) {
				label, values := mm[1], strings.Split(mm[3], "|")
				if kube {
					if label == "container" && mm[3] != container {
						t.Errorf("alert %s: container %q, the service's container is %q", r.Alert, mm[3], container)
					}
					continue
				}
				for _, v := range values {
					if !labels[label][v] {
						t.Errorf("alert %s matches %s=%q, which the service never showed (it showed %v)", r.Alert, label, v, keys(labels[label]))
					}
				}
			}
		}
	}
	for _, a := range want {
		if !slices.Contains(alerts, a) {
			t.Errorf("no alert %s (have %v)", a, alerts)
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
