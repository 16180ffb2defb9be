package deploytest

// Checks of the deployment files: every Kubernetes overlay, rendered by
// kubectl kustomize, decodes strictly into the Kubernetes API types (an
// unknown or misspelt field fails), hangs together (selectors, ports,
// probes), and configures the service with settings it accepts;
// docker-compose.yml runs Redis as a token store; deploy/README.md's
// sizing guide follows from the project's measurements. kubelet_test.go
// and compose_test.go run what they describe. The service is its binary,
// built from this tree: the settings it accepts are the ones it lists.

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/sessioncache/sessioncache/deploytest/internal/kubelet"
	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/internal/servicetest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// secretKeys are the keys of the Secret "sessioncache" that the README
// tells operators to create.
var secretKeys = []string{"api-keys", "secret", "redis-username", "redis-password", "redis-internal-password"}

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
	certificates    []*certificate
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
	case "cert-manager.io/v1 Certificate":
		obj = add(&m.certificates)
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
		t.Run(o+"+https", func(t *testing.T) {
			if m := withHTTPS(t, o); len(m.certificates) != 1 {
				t.Errorf("want the https component's Certificate, got %d", len(m.certificates))
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

// podsSelected names the workloads whose pods sel selects.
func (m *manifests) podsSelected(sel map[string]string) []string {
	var out []string
	for name, tpl := range m.workloads() {
		if kubelet.Selects(sel, tpl.Labels) {
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
		if !kubelet.Selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("Deployment %s: selector does not match its pods", d.Name)
		}
	}
	for _, s := range m.statefulSets {
		if !kubelet.Selects(s.Spec.Selector.MatchLabels, s.Spec.Template.Labels) {
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
// with the Secret's files in place, is a configuration the service
// accepts: secrets in files, the Redis password in a file and not in the
// URL, and room in the grace period for the shutdown.
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
			s, ok := lookupSetting(t, e.Name)
			if strings.HasPrefix(e.Name, "SESSIONCACHE_") && !ok {
				t.Errorf("env %s is not a setting of the service", e.Name)
			}
			if s.Secret {
				t.Errorf("env %s is a secret: secrets go in files (_FILE), never in the environment", e.Name)
			}
		}
		k := newKubelet(t, m, testSecrets())
		if overlay == "external" {
			k.ConfigMaps["sessioncache-redis-ca"] = map[string]string{"ca.crt": string(issueServerCert(t, t.TempDir(), "redis").caPEM)}
		}
		env := k.Prepare(kubelet.DeploymentPod(d, nil)).Containers[0].Env
		// -check reads and validates the whole configuration, its files
		// included, before it probes (nothing answers here): 2 is a
		// configuration the service refuses. It runs with the listen
		// address the container sets: the emulation moves 0.0.0.0 onto the
		// pod's loopback address, where the service would not ask for what
		// it needs on every interface (an API key, the issuer).
		if e, ok := envVar(c, settingEnv(t, "listen")); ok {
			env[e.Name] = e.Value
		}
		if code, out := runBinary(t, env, "-check", "/readyz"); code == exitConfig {
			t.Fatalf("the Deployment's configuration is refused:\n%s", out)
		}
		checkIssuerNamesService(t, m, env[settingEnv(t, "issuer")])
		value := func(flag string) string {
			name := settingEnv(t, flag)
			if v, ok := env[name]; ok {
				return v
			}
			s, _ := lookupSetting(t, name)
			return s.Default
		}
		if value("api-key-file") == "" && value("api-keys-file") == "" || value("secret-file") == "" {
			t.Errorf("the Deployment must set API keys from a file and a secret from a file")
		}
		password, err := os.ReadFile(value("redis-password-file"))
		url := value("redis-url")
		if err != nil || strings.TrimRight(string(password), "\r\n") != testSecrets()["sessioncache"]["redis-password"] || strings.Contains(url, "@") || strings.Contains(url, "password=") {
			t.Errorf("the Deployment must give the Redis password in a file (%v), not in the URL %q", err, url)
		}
		duration := func(flag string) time.Duration {
			d, err := time.ParseDuration(value(flag))
			if err != nil {
				t.Fatalf("-%s: %v", flag, err)
			}
			return d
		}
		grace := time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
		if delay, timeout := duration("shutdown-delay"), duration("shutdown-timeout"); grace <= delay+timeout {
			t.Errorf("terminationGracePeriodSeconds %v leaves no room for the shutdown delay %v and timeout %v", grace, delay, timeout)
		}
	})
}

// checkIssuerNamesService wants the issuer, the URL the manifests tell
// clients and gateways to reach the service at, to be a Service of the
// overlay that sends to the service's pods, on a port of that Service:
// http://<service>[.<namespace>.svc[.cluster.local]][:port].
func checkIssuerNamesService(t *testing.T, m *manifests, issuer string) {
	t.Helper()
	u, err := url.Parse(issuer)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		t.Fatalf("issuer %q: want http://<service>:<port> (%v)", issuer, err)
	}
	name, _, _ := strings.Cut(u.Hostname(), ".")
	port := u.Port()
	if port == "" {
		port = "80"
	}
	for _, svc := range m.services {
		if svc.Name != name {
			continue
		}
		if pods := m.podsSelected(svc.Spec.Selector); len(pods) != 1 || pods[0] != "Deployment "+m.deployments[0].Name {
			t.Errorf("issuer %q: Service %s sends to %v, not to the service's pods", issuer, name, pods)
		}
		for _, p := range svc.Spec.Ports {
			if strconv.Itoa(int(p.Port)) == port {
				return
			}
		}
		t.Errorf("issuer %q: Service %s has no port %s", issuer, name, port)
		return
	}
	t.Errorf("issuer %q names no Service of the overlay", issuer)
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

// The Dockerfile builds the service, and its health check runs a flag the
// binary has, on the path that says the service can serve
// (docker-compose.yml inherits it).
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`CMD \["/sessioncache", "-check", "(/[a-z]+)"\]`).FindSubmatch(b)
	if m == nil || !bytes.Contains(b, []byte("./cmd/sessioncache")) || !bytes.Contains(b, []byte("ENTRYPOINT [\"/sessioncache\"]")) {
		t.Fatalf("Dockerfile: want a build of ./cmd/sessioncache, ENTRYPOINT /sessioncache and a -check health check")
	}
	if string(m[1]) != "/readyz" {
		t.Errorf("Dockerfile health check: -check %s, want /readyz", m[1])
	}
	// Nothing answers on port 1: the check runs, and fails (a flag the
	// binary lacked would be refused, exit 2).
	if code, out := runBinary(t, nil, "-listen", "127.0.0.1:1", "-check", string(m[1])); code == 0 || code == exitConfig {
		t.Errorf("Dockerfile health check against nothing: exit %d, want a failed check\n%s", code, out)
	}
}

// deployDir holds deploy/README.md, the sizing guide.
const deployDir = "../deploy"

// sizingFigures are deploy/README.md's tables "What one session and one
// request cost" and "The rules", by symbol.
type sizingFigures map[string]float64

// markdownSection returns the text under a heading, up to the next heading
// of the same or a higher level.
func markdownSection(t *testing.T, doc, heading string) string {
	t.Helper()
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("no section %q", heading)
	}
	level := strings.Index(heading, " ")
	rest := doc[i+len(heading)+2:]
	for _, m := range regexp.MustCompile(`(?m)^#{1,6} `).FindAllStringIndex(rest, -1) {
		if m[1]-m[0]-1 <= level {
			return rest[:m[0]]
		}
	}
	return rest
}

// tableRows returns the cells of a section's table rows, header and
// separator left out.
func tableRows(section string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if strings.HasPrefix(cells[0], "---") || strings.HasPrefix(cells[0], ":") {
			continue
		}
		rows = append(rows, cells)
	}
	if len(rows) > 0 {
		rows = rows[1:]
	}
	return rows
}

// number reads the number a cell starts with: 1,234.5 µs, 50%, 10 GB.
func number(t *testing.T, cell string) float64 {
	t.Helper()
	m := regexp.MustCompile(`^[\d,]+(\.\d+)?`).FindString(cell)
	f, err := strconv.ParseFloat(strings.ReplaceAll(m, ",", ""), 64)
	if m == "" || err != nil {
		t.Fatalf("cell %q holds no number", cell)
	}
	return f
}

// symbols reads a table whose second column is a `symbol` and whose third
// is its value.
func symbols(t *testing.T, section string) sizingFigures {
	t.Helper()
	out := sizingFigures{}
	for _, row := range tableRows(section) {
		if len(row) < 3 || !strings.HasPrefix(row[1], "`") {
			continue
		}
		out[strings.Trim(row[1], "`")] = number(t, row[2])
	}
	return out
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pinnedRedisUs returns the Redis main-thread CPU per call (redis us/op)
// of a cell of bench/results/issue12-pinned.txt (redis/rotate-off/c64),
// one value per round.
func pinnedRedisUs(t *testing.T, cell string) []float64 {
	t.Helper()
	b, err := os.ReadFile("../bench/results/issue12-pinned.txt")
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`(?m)^round \d+ ` + regexp.QuoteMeta(cell) + `\s+\d+ ops/s\s+redis\s+([\d.]+) us/op`)
	var out []float64
	for _, m := range line.FindAllStringSubmatch(string(b), -1) {
		f, _ := strconv.ParseFloat(m[1], 64)
		out = append(out, f)
	}
	if len(out) == 0 {
		t.Fatalf("issue12-pinned.txt has no cell %s", cell)
	}
	return out
}

// thousands formats n with commas: 100,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// deploy/README.md's sizing guide: every measured figure is the one its
// source holds, every rule that the manifests implement is the one they
// implement, and every number of its tables follows from them by the
// formulas it states. The metrics it names to confirm the sizing are ones
// the service exposes, or fields of a real Redis's INFO.
func TestSizingGuide(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	costs := markdownSection(t, readme, "### What one session and one request cost")
	fig := symbols(t, costs)
	rules := symbols(t, markdownSection(t, readme, "### The rules"))
	for _, s := range []string{"b", "b_cluster", "c_rot", "c_rot_batched", "c_rot_1", "k_cluster", "c_val", "s_rot", "s_auth"} {
		if _, ok := fig[s]; !ok {
			t.Fatalf("the figures table has no `%s`", s)
		}
	}
	for _, s := range []string{"h", "f", "D_max", "u_redis", "u_svc"} {
		if _, ok := rules[s]; !ok {
			t.Fatalf("the rules table has no `%s`", s)
		}
	}
	want := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("%s is %v in deploy/README.md, its source says %v", name, got, want)
		}
	}

	// Memory: used_memory per session at 100,000 sessions; the cluster's
	// extra from MEMORY USAGE in the README's "Measured".
	mem, err := os.ReadFile("../bench/results/memory.txt")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`BenchmarkMemory/sessions=100000/rotations=1-\d+\s.*?([\d.]+) used-B/session`).FindSubmatch(mem)
	if m == nil {
		t.Fatal("bench/results/memory.txt has no used-B/session at 100,000 sessions")
	}
	used, _ := strconv.ParseFloat(string(m[1]), 64)
	want("`b`", fig["b"], math.Round(used))
	root, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m = regexp.MustCompile("\\*\\*(\\d+) B\\*\\* \\(`MEMORY USAGE`; (\\d+) B on the cluster\\)").FindSubmatch(root)
	if m == nil {
		t.Fatal("README.md's \"Measured\" gives no MEMORY USAGE per session on one Redis and on the cluster")
	}
	single, _ := strconv.Atoi(string(m[1]))
	cluster, _ := strconv.Atoi(string(m[2]))
	want("`b_cluster`", fig["b_cluster"], fig["b"]+float64(cluster-single))
	for _, s := range []string{fmt.Sprintf("%d B on the cluster against %d B", cluster, single), fmt.Sprintf("`b` + %d B", cluster-single)} {
		if !strings.Contains(costs, s) {
			t.Errorf("the figures table should say %q", s)
		}
	}

	// Redis CPU: medians of the pinned run (issue 12), with their range;
	// the cluster's factor from the cluster run.
	for _, c := range []struct{ symbol, cell string }{
		{"c_rot", "redis/rotate-off/c64"}, {"c_rot_batched", "redis/rotate-on4/c64"},
		{"c_rot_1", "redis/rotate-off/c1"}, {"c_val", "redis/validate-off/c64"},
	} {
		v := pinnedRedisUs(t, c.cell)
		want("`"+c.symbol+"`", fig[c.symbol], math.Round(10*median(v))/10)
		if !strings.Contains(costs, "`"+c.cell+"`") {
			t.Errorf("the figures table should name the cell of `%s`, `%s`", c.symbol, c.cell)
		}
		if c.symbol == "c_rot" {
			r := fmt.Sprintf("median of %d rounds (%.2f–%.2f)", len(v), slices.Min(v), slices.Max(v))
			if !strings.Contains(costs, r) {
				t.Errorf("the figures table should give c_rot's spread: %q", r)
			}
		}
	}
	cl, err := os.ReadFile("../bench/results/issue12-cluster.txt")
	if err != nil {
		t.Fatal(err)
	}
	const clusterRow = "cluster3/c192 ÷ redis/c64, Redis CPU per rotation, off"
	if m := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(clusterRow) + ` \| ([\d.]+) `).FindSubmatch(cl); m == nil {
		t.Errorf("issue12-cluster.txt has no row %q", clusterRow)
	} else {
		k, _ := strconv.ParseFloat(string(m[1]), 64)
		want("`k_cluster`", fig["k_cluster"], k)
	}
	if v := median(pinnedRedisUs(t, "redis/issue-off/c64")); !strings.Contains(strings.Join(strings.Fields(costs), " "), fmt.Sprintf("about %.0f µs of Redis CPU for a login", v)) {
		t.Errorf("deploy/README.md should say about %.0f µs of Redis CPU for a login (redis/issue-off/c64)", v)
	}
	if !strings.Contains(costs, fmt.Sprintf("`MaxInFlight` (%d)", redisstore.DefaultMaxInFlight)) ||
		!strings.Contains(costs, fmt.Sprintf("more than %d calls in flight", redisstore.DefaultMaxInFlight)) {
		t.Errorf("deploy/README.md should give the library's MaxInFlight, %d", redisstore.DefaultMaxInFlight)
	}
	if s := fmt.Sprintf("about %s rotations/s × 0.3 ms", thousands(int(math.Round(rules["u_svc"]/100/(fig["s_rot"]/1e6)/50)*50))); !strings.Contains(strings.Join(strings.Fields(costs), " "), s) {
		t.Errorf("deploy/README.md should say %q: a replica's rate at its target", s)
	}

	// Service CPU: deploy/results/cpucost.txt's medians.
	cc, err := os.ReadFile(filepath.Join(deployDir, "results", "cpucost.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for symbol, target := range map[string]string{"s_rot": "service rotate", "s_auth": "service auth"} {
		m := regexp.MustCompile(`(?m)^` + target + `\s+([\d.]+) \(`).FindSubmatch(cc)
		if m == nil {
			t.Fatalf("deploy/results/cpucost.txt has no median for %q", target)
		}
		f, _ := strconv.ParseFloat(string(m[1]), 64)
		want("`"+symbol+"`", fig[symbol], f)
	}
	if m := regexp.MustCompile(`(?m)^cpucost: (\d+) rounds of \S+, \d+ workers \((\d+) req/s\)`).FindSubmatch(cc); m == nil ||
		!strings.Contains(costs, "-rate "+string(m[2])) || !strings.Contains(costs, "median of "+string(m[1])+" rounds") {
		t.Errorf("the figures table should say at what rate and in how many rounds deploy/results/cpucost.txt was measured")
	}
	// At saturation, the lower figures the text gives.
	sat, err := os.ReadFile(filepath.Join(deployDir, "results", "cpucost-saturated.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for target, words := range map[string]string{"service rotate": "µs per rotation", "service auth": "µs per forward auth"} {
		m := regexp.MustCompile(`(?m)^` + target + `\s+([\d.]+) \(`).FindSubmatch(sat)
		if s := string(m[1]) + " " + words; m == nil || !strings.Contains(strings.Join(strings.Fields(costs), " "), s) {
			t.Errorf("deploy/README.md should give the saturated figure %q (deploy/results/cpucost-saturated.txt)", s)
		}
	}
	perCore := func(us float64) string { return thousands(int(math.Round(1e6/us/100) * 100)) }
	for _, s := range []string{
		"one Redis core at 100% runs about " + perCore(fig["c_rot"]) + " rotations/s",
		"one service core about " + perCore(fig["s_rot"]) + " rotations/s",
	} {
		if !strings.Contains(strings.Join(strings.Fields(costs), " "), s) {
			t.Errorf("deploy/README.md should say %q", s)
		}
	}
	// Logins and revocations, from bench/README.md's full table.
	bench, err := os.ReadFile("../bench/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for op, words := range map[string]string{"revoke-session": "µs for a revocation"} {
		var us float64
		for _, row := range tableRows(markdownSection(t, string(bench), "### All figures (full run, medians of 6, `clients=64` unless said)")) {
			if len(row) > 9 && row[0] == "redis" && row[1] == "library" && row[2] == op && row[3] == "64" {
				us = number(t, row[9])
			}
		}
		if s := fmt.Sprintf("about %.0f %s", us, words); us == 0 || !strings.Contains(strings.Join(strings.Fields(costs), " "), s) {
			t.Errorf("deploy/README.md should say %q (bench/README.md, All figures)", s)
		}
	}

	// The rules the manifests implement: the autoscaler's target and the
	// replicas' CPU request; maxmemory and the memory limit of each
	// overlay's Redis.
	base := renderDir(t, filepath.Join(kubernetesDir, "base"))
	if len(base.hpas) != 1 || len(base.deployments) != 1 {
		t.Fatal("the base: want one Deployment and one HorizontalPodAutoscaler")
	}
	var target int32
	for _, mt := range base.hpas[0].Spec.Metrics {
		if mt.Resource != nil && mt.Resource.Name == corev1.ResourceCPU && mt.Resource.Target.AverageUtilization != nil {
			target = *mt.Resource.Target.AverageUtilization
		}
	}
	want("`u_svc`", rules["u_svc"], float64(target))
	if req := base.deployments[0].Spec.Template.Spec.Containers[0].Resources.Requests.Cpu(); req.MilliValue() != 1000 {
		t.Errorf("the guide sizes replicas of 1 CPU; the Deployment requests %s", req)
	}
	for _, o := range overlays {
		om := renderDir(t, filepath.Join(kubernetesDir, "overlays", o))
		conf, ok := redisConfOf(om)
		if !ok {
			continue
		}
		max := redisBytes(redisConf(conf)["maxmemory"])
		for _, s := range om.statefulSets {
			for _, c := range s.Spec.Template.Spec.Containers {
				if c.Name == "redis" {
					want("`f` (overlay "+o+")", rules["f"], float64(c.Resources.Limits.Memory().Value())/float64(max))
				}
			}
		}
	}

	// The tables, recomputed.
	sizing := markdownSection(t, readme, "### 10 and 100 million sessions, 10,000 and 100,000 rotations per second")
	const gb = 1e9
	var wantRows [][]string
	for _, n := range []int{10_000_000, 100_000_000} {
		for _, r := range []int{10_000, 100_000} {
			perRotation := fig["c_rot"]
			bytes := fig["b"]
			shards := func() int {
				cpu := int(math.Ceil(float64(r) * perRotation / 1e6 / (rules["u_redis"] / 100)))
				return max(int(math.Ceil(float64(n)*bytes/(rules["D_max"]*gb))), cpu)
			}
			kind, count := "Sentinel", shards()
			if count > 1 {
				kind, bytes, perRotation = "Cluster", fig["b_cluster"], fig["k_cluster"]*fig["c_rot"]
				count = shards()
			}
			data := float64(n) * bytes / float64(count)
			svcCores := float64(r) * fig["s_rot"] / 1e6
			replicas := max(2, int(math.Ceil(svcCores/(rules["u_svc"]/100))))
			wantRows = append(wantRows, []string{
				thousands(n), thousands(r), kind, strconv.Itoa(count),
				fmt.Sprintf("%.1f GB", data/gb),
				fmt.Sprintf("%.1f GB", rules["h"]*data/gb),
				fmt.Sprintf("%.1f GB", rules["f"]*rules["h"]*data/gb),
				fmt.Sprintf("%.0f%%", 100*float64(r)*perRotation/1e6/float64(count)),
				fmt.Sprintf("%.1f cores", svcCores),
				strconv.Itoa(replicas),
				strconv.Itoa(int(math.Ceil(1.5 * float64(replicas)))),
			})
		}
	}
	per10k := [][]string{
		{"rotations", fmt.Sprintf("%.2f core", 1e4*fig["c_rot"]/1e6), fmt.Sprintf("%.2f core", 1e4*fig["s_rot"]/1e6)},
		// Forward auth answers from memory: no Redis command per request.
		{"forward auths (`GET /v1/auth`, from memory)", "0.00 core", fmt.Sprintf("%.2f core", 1e4*fig["s_auth"]/1e6)},
	}
	tables := tableRows(sizing)
	var gotRows, gotPer10k [][]string
	for _, row := range tables {
		if len(row) == len(wantRows[0]) {
			gotRows = append(gotRows, row)
		} else {
			gotPer10k = append(gotPer10k, row)
		}
	}
	// The second table's header is a row of the first's section.
	if len(gotPer10k) > 0 && strings.HasPrefix(gotPer10k[0][0], "per ") {
		gotPer10k = gotPer10k[1:]
	}
	format := func(rows [][]string) string {
		var b strings.Builder
		for _, r := range rows {
			b.WriteString("| " + strings.Join(r, " | ") + " |\n")
		}
		return b.String()
	}
	if format(gotRows) != format(wantRows) {
		t.Errorf("the sizing table does not follow from the figures and rules; want:\n%s\ngot:\n%s", format(wantRows), format(gotRows))
	}
	if format(gotPer10k) != format(per10k) {
		t.Errorf("the per-10,000 table does not follow from the figures; want:\n%s\ngot:\n%s", format(per10k), format(gotPer10k))
	}

	lowLoad := fmt.Sprintf("at 10,000 rotations/s on one shard that is %.0f%% of its main thread", 1e4*fig["c_rot_1"]/1e6*100)
	if !strings.Contains(strings.Join(strings.Fields(sizing), " "), lowLoad) {
		t.Errorf("deploy/README.md should say %q", lowLoad)
	}
	if last := wantRows[len(wantRows)-1]; !strings.Contains(strings.Join(strings.Fields(sizing), " "), "raise the autoscaler's `maxReplicas` (10 in the base) to "+last[len(last)-1]) {
		t.Errorf("deploy/README.md should raise maxReplicas to %s at 100,000 rotations/s", last[len(last)-1])
	}
	if got := base.hpas[0].Spec.MaxReplicas; got != 10 {
		t.Errorf("the base's maxReplicas is %d; deploy/README.md says 10", got)
	}

	checkGrowth(t, readme, fig, rules)

	confirm := markdownSection(t, readme, "### Confirming the sizing in production")
	var named []string
	for s := range fig {
		named = append(named, s)
	}
	for s := range rules {
		named = append(named, s)
	}
	checkSizingMetrics(t, confirm, named)
	checkBatchingFigures(t, confirm)
}

// checkGrowth checks the guide's "Growing a cluster" against its source,
// bench/results/issue20-masters.txt: Redis CPU per rotation on 1 to 4
// masters (64 callers per master), its ratios to one Redis of the same
// run, and the rotations the cluster carries at u_redis per master,
// recomputed from c_rot; and the memory threshold, from h.
func checkGrowth(t *testing.T, readme string, fig, rules sizingFigures) {
	t.Helper()
	grow := markdownSection(t, readme, "### Growing a cluster")
	b, err := os.ReadFile("../bench/results/issue20-masters.txt")
	if err != nil {
		t.Fatal(err)
	}
	res := string(b)
	find := func(pattern string) string {
		t.Helper()
		m := regexp.MustCompile(`(?m)^\| ` + pattern + ` \| ([\d.]+) \(`).FindStringSubmatch(res)
		if m == nil {
			t.Fatalf("issue20-masters.txt has no row %s", pattern)
		}
		return m[1]
	}
	var want [][]string
	for n := 1; n <= 4; n++ {
		c := strconv.Itoa(64 * n)
		cell := fmt.Sprintf("cluster%d/rotate-off/c%s", n, c)
		us := find(regexp.QuoteMeta(cell) + ` \| [^|]+`)
		ratio := fmt.Sprintf("cluster%d/c%s ÷ redis/c64, Redis CPU per rotation, ", n, c)
		off, on := find(regexp.QuoteMeta(ratio+"off")), find(regexp.QuoteMeta(ratio+"on4"))
		r, _ := strconv.ParseFloat(off, 64)
		carries := float64(n) * rules["u_redis"] / 100 / (fig["c_rot"] / 1e6 * r)
		want = append(want, []string{strconv.Itoa(n), us + " µs", off, on, thousands(int(math.Round(carries/100) * 100))})
	}
	got := tableRows(grow)
	if len(got) > 0 && got[0][0] == "masters" {
		got = got[1:]
	}
	if fmt.Sprint(want) != fmt.Sprint(got) {
		t.Errorf("the growth table does not follow from bench/results/issue20-masters.txt and c_rot; want:\n%v\ngot:\n%v", want, got)
	}
	text := strings.Join(strings.Fields(grow), " ")
	single := find(regexp.QuoteMeta("redis/rotate-off/c64") + ` \| [^|]+`)
	cmdLine := strings.TrimPrefix(strings.SplitN(res, "   (", 2)[0], "# ")
	for _, s := range []string{
		"One Redis in the same run: " + single + " µs per rotation",
		fmt.Sprintf("above %.0f%% of `maxmemory` (`1 / h`", 100/rules["h"]),
		"above `u_redis` (" + strconv.Itoa(int(rules["u_redis"])) + "%)",
		"`" + cmdLine + "`",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("deploy/README.md, \"Growing a cluster\", should say %q", s)
		}
	}
}

// checkBatchingFigures checks the calls per Redis request the guide's last
// section quotes against their source, deploy/results/batching.txt: the
// range over the rounds of each kind of run.
func checkBatchingFigures(t *testing.T, confirm string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "results", "batching.txt"))
	if err != nil {
		t.Fatal(err)
	}
	type run struct {
		perRequest float64
		p99        time.Duration
	}
	runs := map[string][]run{} // "4 -rate 1000", "4", "off"...
	line := regexp.MustCompile(`(?m)^round \d+  max-in-flight (\S+)\s+(-rate \d+)?\s+calls .* calls/request\s+([\d.]+)  \S+ rotations/s, p50 \S+, p99 (\S+)`)
	for _, m := range line.FindAllStringSubmatch(string(b), -1) {
		v, _ := strconv.ParseFloat(m[3], 64)
		p99, err := time.ParseDuration(m[4])
		if err != nil {
			t.Fatalf("deploy/results/batching.txt: p99 %q: %v", m[4], err)
		}
		kind := strings.TrimSpace(m[1] + " " + m[2])
		runs[kind] = append(runs[kind], run{v, p99})
	}
	span := func(kind string) (lo, hi run) {
		rs := runs[kind]
		if len(rs) == 0 {
			t.Fatalf("deploy/results/batching.txt has no run %q", kind)
		}
		lo, hi = rs[0], rs[0]
		for _, r := range rs {
			if r.perRequest < lo.perRequest {
				lo = r
			}
			if r.perRequest > hi.perRequest {
				hi = r
			}
		}
		return lo, hi
	}
	text := strings.Join(strings.Fields(confirm), " ")
	lo, hi := span("4 -rate 1000")
	flatLo, flatHi := span("4")
	busyLo, busyHi := span("4 -rate 3000")
	offLo, offHi := span("off")
	ms := func(d time.Duration) float64 { return math.Round(float64(d) / 1e6) }
	for _, s := range []string{
		fmt.Sprintf("(%.2f–%.2f at 1,000 rotations/s)", lo.perRequest, hi.perRequest),
		fmt.Sprintf("about %.0f on one driven flat out (%.1f–%.1f)", (flatLo.perRequest+flatHi.perRequest)/2, flatLo.perRequest, flatHi.perRequest),
		fmt.Sprintf("took it from %.2f to %.2f at 3,000/s, with the p99 from %.0f to %.0f ms", busyLo.perRequest, busyHi.perRequest, ms(busyLo.p99), ms(busyHi.p99)),
	} {
		if !strings.Contains(text, s) {
			t.Errorf("deploy/README.md should say %q (deploy/results/batching.txt)", s)
		}
	}
	if offLo.perRequest != 1 || offHi.perRequest != 1 {
		t.Errorf("deploy/results/batching.txt: with batching off, %.2f–%.2f calls per request; the guide says 1", offLo.perRequest, offHi.perRequest)
	}
}

// checkSizingMetrics checks the names the guide's last section gives: the
// service's metrics against the /metrics of the running service (after a
// login and a rotation), Redis's INFO fields against a real Redis (a
// master and its replica, after a script call and a write refused for
// memory, so that every section has its fields), the Kubernetes ones
// against the series this package knows. symbols are the guide's own
// names (`b`, `h`), which are no fields.
func checkSizingMetrics(t *testing.T, confirm string, symbols []string) {
	t.Helper()
	p := startService(t)
	c := newAPIClient(t, "http://"+p.Addr, "")
	c.metrics = "http://" + p.MetricsAddr
	tok := c.login(alice, "laptop").str("refresh_token")
	c.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(tok))
	exposed, _ := scrapeMetrics(c)
	for _, name := range regexp.MustCompile(`\b(?:sessioncache|process|go)_[a-z_]+\b`).FindAllString(confirm, -1) {
		if !exposed[name] {
			t.Errorf("deploy/README.md names %s, which the service does not expose", name)
		}
	}
	for _, name := range regexp.MustCompile(`\bkube_[a-z_]+\b`).FindAllString(confirm, -1) {
		if !slices.Contains(kubeStateMetrics, name) {
			t.Errorf("deploy/README.md names %s, which is no kube-state-metrics series this package knows", name)
		}
	}
	for _, name := range regexp.MustCompile(`\bcontainer_[a-z_]+\b`).FindAllString(confirm, -1) {
		if !slices.Contains(cadvisorMetrics, name) {
			t.Errorf("deploy/README.md names %s, which is no cAdvisor series this package knows", name)
		}
	}

	start := strings.Index(confirm, "On Redis")
	end := strings.Index(confirm, "On Kubernetes")
	if start < 0 || end < start {
		t.Fatal("the confirming section: want \"On Redis\" then \"On Kubernetes\"")
	}
	var fields []string
	for _, m := range regexp.MustCompile("`([a-zA-Z][a-zA-Z0-9_]*)`").FindAllStringSubmatch(confirm[start:end], -1) {
		if m[1] != strings.ToUpper(m[1]) && !slices.Contains(symbols, m[1]) {
			fields = append(fields, m[1])
		}
	}
	if len(fields) == 0 {
		t.Fatal("the confirming section names no INFO field")
	}
	master := redistest.StartServer(t)
	replica := redistest.StartServer(t, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
	ctx := t.Context()
	mc, rc := master.Client(t), replica.Client(t)
	servicetest.WaitFor(t, "the replica to sync", 10*time.Second, func() bool {
		info, err := rc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	if err := redis.NewScript("return 1").Run(ctx, mc, nil).Err(); err != nil {
		t.Fatal(err)
	}
	if err := mc.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := mc.Set(ctx, "sizing-guide-oom", "x", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "OOM") {
		t.Fatalf("a write over maxmemory: %v, want OOM", err)
	}
	if err := mc.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	var info strings.Builder
	for _, c := range []*redis.Client{mc, rc} {
		s, err := c.Info(ctx, "everything").Result()
		if err != nil {
			t.Fatal(err)
		}
		info.WriteString(s)
	}
	for _, f := range fields {
		if !regexp.MustCompile(`(?m)(^|[,:])` + regexp.QuoteMeta(f) + `[:=]`).MatchString(info.String()) {
			t.Errorf("deploy/README.md names %s, which is no field of Redis's INFO", f)
		}
	}
}

// cadvisorMetrics are the container series (cAdvisor, through the
// kubelet) the guide may name.
var cadvisorMetrics = []string{"container_cpu_usage_seconds_total", "container_memory_working_set_bytes"}
