package main

// Checks of the deployment files: every Kubernetes overlay, rendered by
// kubectl kustomize, decodes strictly into the Kubernetes API types (an
// unknown or misspelt field fails), hangs together (selectors, ports,
// probes), and configures the service with settings it accepts;
// docker-compose.yml runs Redis as a token store. kubelet_test.go and
// compose_test.go run what they describe.

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// secretKeys are the keys of the Secret "sessioncache" that the README
// tells operators to create.
var secretKeys = []string{"api-keys", "secret", "redis-password"}

// manifests holds every object of a rendered overlay, by type.
type manifests struct {
	deployments     []*appsv1.Deployment
	statefulSets    []*appsv1.StatefulSet
	jobs            []*batchv1.Job
	services        []*corev1.Service
	accounts        []*corev1.ServiceAccount
	configMaps      []*corev1.ConfigMap
	pdbs            []*policyv1.PodDisruptionBudget
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	policies        []*networkingv1.NetworkPolicy
	serviceMonitors []*serviceMonitor
	rules           []*prometheusRule
}

// decodeStrict decodes one YAML document into the API type its kind names,
// refusing unknown fields.
func (m *manifests) decodeStrict(t *testing.T, file string, doc []byte) {
	t.Helper()
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		obj = add(&m.deployments)
	case "apps/v1 StatefulSet":
		obj = add(&m.statefulSets)
	case "batch/v1 Job":
		obj = add(&m.jobs)
	case "v1 ConfigMap":
		obj = add(&m.configMaps)
	case "autoscaling/v2 HorizontalPodAutoscaler":
		obj = add(&m.hpas)
	case "monitoring.coreos.com/v1 ServiceMonitor":
		obj = add(&m.serviceMonitors)
	case "monitoring.coreos.com/v1 PrometheusRule":
		obj = add(&m.rules)
	case "v1 Service":
		obj = add(&m.services)
	case "v1 ServiceAccount":
		obj = add(&m.accounts)
	case "policy/v1 PodDisruptionBudget":
		obj = add(&m.pdbs)
	case "networking.k8s.io/v1 NetworkPolicy":
		obj = add(&m.policies)
	default:
		t.Fatalf("%s: unexpected kind %q %q: add it to this test", file, tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		t.Fatalf("%s: %s %s: %v", file, tm.APIVersion, tm.Kind, err)
	}
}

// add appends a new object to list and returns it.
func add[T any](list *[]*T) *T {
	o := new(T)
	*list = append(*list, o)
	return o
}

func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(d, "")) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// eachOverlay runs f on every overlay, rendered.
func eachOverlay(t *testing.T, f func(t *testing.T, overlay string, m *manifests)) {
	for _, o := range overlays {
		t.Run(o, func(t *testing.T) { f(t, o, renderDir(t, filepath.Join(kubernetesDir, "overlays", o))) })
	}
}

func TestManifestsDecodeStrictly(t *testing.T) {
	eachOverlay(t, func(t *testing.T, overlay string, m *manifests) {
		redis := 1
		if overlay == "external" {
			redis = 0
		}
		if len(m.deployments) != 1 || len(m.statefulSets) != redis || len(m.pdbs) != 1 || len(m.hpas) != 1 || len(m.policies) < 2 {
			t.Errorf("want 1 Deployment, %d StatefulSet (Redis), 1 PodDisruptionBudget, 1 HorizontalPodAutoscaler, 2 or more NetworkPolicies; got %d, %d, %d, %d, %d",
				redis, len(m.deployments), len(m.statefulSets), len(m.pdbs), len(m.hpas), len(m.policies))
		}
	})
	for _, o := range overlays {
		t.Run(o+"+monitoring", func(t *testing.T) {
			if m := withMonitoring(t, o); len(m.serviceMonitors) != 1 || len(m.rules) != 1 {
				t.Errorf("want the monitoring component's ServiceMonitor and PrometheusRule, got %d and %d", len(m.serviceMonitors), len(m.rules))
			}
		})
	}
	// The strict decoding is what catches typos: prove it does.
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte("apiVersion: apps/v1\nkind: Deployment\nspec:\n  replica: 2\n"), &d); err == nil {
		t.Errorf("strict decoding accepted an unknown field")
	}
}

// workloads returns the pod templates of every Deployment, StatefulSet and
// Job.
func (m *manifests) workloads() map[string]corev1.PodTemplateSpec {
	out := map[string]corev1.PodTemplateSpec{}
	for _, d := range m.deployments {
		out["Deployment "+d.Name] = d.Spec.Template
	}
	for _, s := range m.statefulSets {
		out["StatefulSet "+s.Name] = s.Spec.Template
	}
	for _, j := range m.jobs {
		out["Job "+j.Name] = j.Spec.Template
	}
	return out
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// podsSelected names the workloads whose pods sel selects.
func (m *manifests) podsSelected(sel map[string]string) []string {
	var out []string
	for name, tpl := range m.workloads() {
		if selects(sel, tpl.Labels) {
			out = append(out, name)
		}
	}
	return out
}

func TestManifestsHangTogether(t *testing.T) {
	eachOverlay(t, func(t *testing.T, _ string, m *manifests) { testManifestsHangTogether(t, m) })
}

func testManifestsHangTogether(t *testing.T, m *manifests) {
	for _, d := range m.deployments {
		if !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("Deployment %s: selector does not match its pods", d.Name)
		}
	}
	for _, s := range m.statefulSets {
		if !selects(s.Spec.Selector.MatchLabels, s.Spec.Template.Labels) {
			t.Errorf("StatefulSet %s: selector does not match its pods", s.Name)
		}
	}
	for name, tpl := range m.workloads() {
		for _, c := range tpl.Spec.Containers {
			lim, req := c.Resources.Limits, c.Resources.Requests
			if lim.Memory().IsZero() || req.Cpu().IsZero() || req.Memory().IsZero() {
				t.Errorf("%s container %s: want CPU and memory requests and a memory limit", name, c.Name)
			}
			if (c.ReadinessProbe == nil || c.LivenessProbe == nil) && !strings.HasPrefix(name, "Job ") {
				t.Errorf("%s container %s: want readiness and liveness probes", name, c.Name)
			}
			if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
				t.Errorf("%s container %s: want allowPrivilegeEscalation: false", name, c.Name)
			}
		}
		if tpl.Spec.SecurityContext == nil || tpl.Spec.SecurityContext.RunAsNonRoot == nil || !*tpl.Spec.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: want runAsNonRoot", name)
		}
		for _, v := range tpl.Spec.Volumes {
			if v.Secret != nil {
				for _, it := range v.Secret.Items {
					if !slices.Contains(secretKeys, it.Key) {
						t.Errorf("%s mounts Secret key %q, not one of %v", name, it.Key, secretKeys)
					}
				}
			}
		}
	}
	for _, s := range m.services {
		pods := m.podsSelected(s.Spec.Selector)
		if len(pods) != 1 {
			t.Errorf("Service %s selects %v, want exactly one workload", s.Name, pods)
			continue
		}
		tpl := m.workloads()[pods[0]]
		for _, p := range s.Spec.Ports {
			if !hasPort(tpl, p.TargetPort.String()) {
				t.Errorf("Service %s: target port %s is not a port of %s", s.Name, p.TargetPort.String(), pods[0])
			}
		}
	}
	for _, p := range m.pdbs {
		if pods := m.podsSelected(p.Spec.Selector.MatchLabels); len(pods) != 1 {
			t.Errorf("PodDisruptionBudget %s selects %v, want one workload", p.Name, pods)
		}
	}
	for _, p := range m.policies {
		if pods := m.podsSelected(p.Spec.PodSelector.MatchLabels); len(pods) != 1 {
			t.Errorf("NetworkPolicy %s selects %v, want one workload", p.Name, pods)
		}
	}
}

func hasPort(tpl corev1.PodTemplateSpec, port string) bool {
	for _, c := range tpl.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == port || p.ContainerPort > 0 && port == strconv.Itoa(int(p.ContainerPort)) {
				return true
			}
		}
	}
	return false
}

// The service's Deployment probes the right paths, and its environment,
// with the Secret's files in place, is a configuration the service accepts.
func TestManifestsConfigureTheService(t *testing.T) {
	eachOverlay(t, func(t *testing.T, overlay string, m *manifests) {
		d := m.deployments[0]
		c := d.Spec.Template.Spec.Containers[0]
		if g := c.ReadinessProbe.HTTPGet; g == nil || g.Path != "/readyz" || !hasPort(d.Spec.Template, g.Port.String()) {
			t.Errorf("readiness probe %+v, want GET /readyz on a container port", c.ReadinessProbe.ProbeHandler)
		}
		if g := c.LivenessProbe.HTTPGet; g == nil || g.Path != "/healthz" || !hasPort(d.Spec.Template, g.Port.String()) {
			t.Errorf("liveness probe %+v, want GET /healthz on a container port", c.LivenessProbe.ProbeHandler)
		}
		for _, e := range c.Env {
			if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
				t.Errorf("env %s comes from a Secret: secrets go in files (_FILE), never in the environment", e.Name)
			}
			if strings.HasPrefix(e.Name, "SESSIONCACHE_") && !isSetting(e.Name) {
				t.Errorf("env %s is not a setting of the service", e.Name)
			}
		}
		k := newKubelet(t, m, testSecrets())
		if overlay == "external" {
			k.configMaps["sessioncache-redis-ca"] = map[string]string{"ca.crt": string(newTestCA(t, "redis").certPEM)}
		}
		p := k.prepare(deploymentPod(d, nil))
		cfg, err := loadConfig(nil, envOf(p.env), io.Discard)
		if err != nil {
			t.Fatalf("the Deployment's configuration is refused: %v", err)
		}
		if cfg.APIKeys == nil || cfg.APIKeysFile == "" || cfg.Secret == nil {
			t.Errorf("the Deployment must set API keys from a file and a secret: %+v", cfg)
		}
		var password string
		switch o := cfg.RedisOptions; overlay {
		case "sentinel":
			if o.sentinel != nil {
				password = o.sentinel.Password
			}
		case "cluster":
			if o.cluster != nil {
				password = o.cluster.Password
			}
		default:
			if o.standalone != nil {
				password = o.standalone.Password
			}
		}
		if password != testSecrets()["sessioncache"]["redis-password"] || strings.Contains(cfg.RedisURL, "@") || strings.Contains(cfg.RedisURL, "password=") {
			t.Errorf("the Deployment must give the Redis password in a file, not in the URL %q (mode %s)", cfg.RedisURL, cfg.RedisMode)
		}
		grace := time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
		if grace <= cfg.ShutdownDelay+cfg.ShutdownTimeout {
			t.Errorf("terminationGracePeriodSeconds %v leaves no room for the shutdown delay %v and timeout %v", grace, cfg.ShutdownDelay, cfg.ShutdownTimeout)
		}
	})
}

func isSetting(env string) bool {
	for _, s := range settings {
		if s.env == env {
			return true
		}
	}
	return false
}

// checkTokenStoreRedis wants Redis arguments that never evict and keep an
// append-only file.
func checkTokenStoreRedis(t *testing.T, where string, args []string) {
	t.Helper()
	joined := " " + strings.Join(args, " ") + " "
	for _, want := range []string{" --maxmemory-policy noeviction ", " --appendonly yes "} {
		if !strings.Contains(joined, want) {
			t.Errorf("%s: Redis arguments %q lack %q", where, args, strings.TrimSpace(want))
		}
	}
}

// The Dockerfile's health check runs a flag the binary has, on the path
// that says the service can serve (docker-compose.yml inherits it).
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`CMD \["/sessioncache", "-check", "(/[a-z]+)"\]`).FindSubmatch(b)
	if m == nil || !bytes.Contains(b, []byte("./cmd/sessioncache")) || !bytes.Contains(b, []byte("ENTRYPOINT [\"/sessioncache\"]")) {
		t.Fatalf("Dockerfile: want a build of ./cmd/sessioncache, ENTRYPOINT /sessioncache and a -check health check")
	}
	if c, err := loadConfig([]string{"-check", string(m[1])}, envOf(map[string]string{envListen: "0.0.0.0:8080", envAPIKey: goodKey}), io.Discard); err != nil || c.Check != "/readyz" {
		t.Errorf("Dockerfile health check: %v", err)
	}
}

// The README's configuration table documents every setting, with its flag
// and its default.
func TestReadmeListsEverySetting(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{} // variable -> flag, default
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(cells[1], " `SESSIONCACHE_") {
			continue
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows[strings.Trim(cells[1], "`")] = cells[2:4]
	}
	for _, s := range settings {
		row, ok := rows[s.env]
		if !ok {
			t.Errorf("README.md does not document %s", s.env)
			continue
		}
		flag := "(environment only)"
		if s.flag != "" {
			flag = "`-" + s.flag + "`"
		}
		if row[0] != flag {
			t.Errorf("README.md: %s has flag %s, want %s", s.env, row[0], flag)
		}
		if s.def != "" && !strings.HasPrefix(row[1], "`"+s.def+"`") {
			t.Errorf("README.md: %s defaults to %s, want `%s`", s.env, row[1], s.def)
		}
		delete(rows, s.env)
	}
	for env := range rows {
		t.Errorf("README.md documents %s, which is no setting", env)
	}
}
