package deploytest

// The Kubernetes overlays, rendered by kubectl kustomize as an operator
// would apply them, and what each must hold: a NetworkPolicy that lets the
// service reach exactly its Redis (and Redis accept it), pinned images,
// GOMEMLIMIT and GOMAXPROCS derived from the container's resources, no CPU
// limit on the service, an autoscaler that owns the replica count, and a
// token-store Redis configuration.

import (
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sessioncache/sessioncache/deploytest/internal/kubelet"
	"github.com/sessioncache/sessioncache/internal/redistest"
)

const kubernetesDir = "../deploy/kubernetes"

// overlays are the ways to run Redis that deploy/kubernetes/overlays offers.
var overlays = []string{"in-namespace", "external", "sentinel", "cluster"}

// kubectl returns the kubectl binary, or skips (fails, under
// SESSIONCACHE_TEST_REQUIRE_REAL=1) without one.
func kubectl(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		if os.Getenv(redistest.EnvRequireReal) == "1" {
			t.Fatalf("kubectl is not on PATH (%s=1)", redistest.EnvRequireReal)
		}
		t.Skip("kubectl is not on PATH: the overlays cannot be rendered")
	}
	return bin
}

// kustomize renders a kustomization folder as kubectl apply -k would.
func kustomize(t *testing.T, dir string) []byte {
	t.Helper()
	out, err := exec.Command(kubectl(t), "kustomize", dir).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr)
	}
	return out
}

// renderDir decodes the rendering of a kustomization folder strictly.
func renderDir(t *testing.T, dir string) *manifests {
	t.Helper()
	m := &manifests{}
	for _, doc := range splitYAML(kustomize(t, dir)) {
		m.decodeStrict(t, dir, doc)
	}
	return m
}

// withMonitoring renders an overlay with the monitoring component, as an
// operator's own kustomization would combine them.
func withMonitoring(t *testing.T, overlay string) *manifests {
	t.Helper()
	return withKustomization(t, overlay, "components:\n  - monitoring\n")
}

// withKustomization renders an overlay with more of a kustomization:
// extra, whose components are named by their folder under
// deploy/kubernetes/components.
func withKustomization(t *testing.T, overlay, extra string) *manifests {
	t.Helper()
	abs, err := filepath.Abs(kubernetesDir)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// kustomize takes relative paths only.
	rel, err := filepath.Rel(dir, abs)
	if err != nil {
		t.Fatal(err)
	}
	extra = regexp.MustCompile(`(?m)^components:\n((?:  - .*\n)+)`).ReplaceAllStringFunc(extra, func(block string) string {
		return regexp.MustCompile(`(?m)^  - (.*)$`).ReplaceAllString(block, "  - "+filepath.Join(rel, "components")+"/$1")
	})
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n" +
		"resources:\n  - " + filepath.Join(rel, "overlays", overlay) + "\n" + extra
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o600); err != nil {
		t.Fatal(err)
	}
	return renderDir(t, dir)
}

// The CRDs of the Prometheus Operator (monitoring.coreos.com/v1), as far as
// these manifests use them: decoded strictly, a misspelt or unknown field
// fails.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// certificate is cert-manager's Certificate (cert-manager.io/v1), as far as
// the https component uses it.
type certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName  string `json:"secretName"`
		Duration    string `json:"duration"`
		RenewBefore string `json:"renewBefore"`
		PrivateKey  struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy"`
		} `json:"privateKey"`
		DNSNames  []string `json:"dnsNames"`
		Usages    []string `json:"usages"`
		IssuerRef struct {
			Kind  string `json:"kind"`
			Name  string `json:"name"`
			Group string `json:"group"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

// withHTTPS renders an overlay with the https component.
func withHTTPS(t *testing.T, overlay string) *manifests {
	t.Helper()
	return withKustomization(t, overlay, "components:\n  - https\n")
}

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// api is the service's Deployment and its container.
func (m *manifests) api(t *testing.T) (kubelet.PodSpec, corev1.Container) {
	t.Helper()
	if len(m.deployments) != 1 {
		t.Fatalf("want one Deployment, got %d", len(m.deployments))
	}
	d := m.deployments[0]
	return kubelet.DeploymentPod(d, nil), d.Spec.Template.Spec.Containers[0]
}

func envVar(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// redisEndpoints resolves the hosts of the service's Redis URL to what
// answers for them in the overlay: the pods of a Service or of a
// StatefulSet's pod names (labels), or an address outside the cluster
// (nil labels), with the port.
type endpoint struct {
	host   string
	port   int
	labels map[string]string // of the pods behind the name; nil: outside
}

func (m *manifests) redisEndpoints(t *testing.T) []endpoint {
	t.Helper()
	ps, c := m.api(t)
	env := map[string]string{}
	configMaps := map[string]map[string]string{}
	for _, cm := range m.configMaps {
		configMaps[cm.Name] = cm.Data
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = kubelet.ExpandEnv(e.Value, env)
		case e.ValueFrom.ConfigMapKeyRef != nil:
			env[e.Name] = configMaps[e.ValueFrom.ConfigMapKeyRef.Name][e.ValueFrom.ConfigMapKeyRef.Key]
		case e.ValueFrom.ResourceFieldRef != nil:
			env[e.Name] = kubelet.ResourceFieldValue(t, ps.Template.Spec, c, e.ValueFrom.ResourceFieldRef)
		}
	}
	envRedisURL := settingEnv(t, "redis-url")
	raw := env[envRedisURL]
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		t.Fatalf("the Deployment's %s is %q: every overlay sets its Redis", envRedisURL, raw)
	}
	var out []endpoint
	for _, h := range strings.Split(u.Host, ",") {
		host, portStr, err := net.SplitHostPort(h)
		if err != nil {
			t.Fatalf("%s host %q: %v", envRedisURL, h, err)
		}
		port, _ := strconv.Atoi(portStr)
		ep := endpoint{host: host, port: port}
		name, sub, _ := strings.Cut(host, ".")
		for _, s := range m.services {
			if s.Name == name && sub == "" {
				ep.labels = s.Spec.Selector
			}
		}
		for _, s := range m.statefulSets {
			// <statefulset>-<ordinal>.<serviceName>
			if sub == s.Spec.ServiceName && strings.HasPrefix(name, s.Name+"-") {
				ord, err := strconv.Atoi(strings.TrimPrefix(name, s.Name+"-"))
				if err != nil || ord < 0 || int32(ord) >= *s.Spec.Replicas {
					t.Errorf("%s names pod %s, which StatefulSet %s (%d replicas) does not have", envRedisURL, name, s.Name, *s.Spec.Replicas)
				}
				ep.labels = s.Spec.Template.Labels
			}
		}
		if ep.labels == nil && !strings.Contains(host, ".") {
			t.Errorf("%s names %s, which is no Service or pod of the overlay", envRedisURL, host)
		}
		out = append(out, ep)
	}
	return out
}

// policiesFor returns the NetworkPolicies that select pods with labels.
func (m *manifests) policiesFor(labels map[string]string, kind networkingv1.PolicyType) []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for _, p := range m.policies {
		if kubelet.Selects(p.Spec.PodSelector.MatchLabels, labels) && slices.Contains(p.Spec.PolicyTypes, kind) {
			out = append(out, p)
		}
	}
	return out
}

// portAllows says whether a policy port (named or numbered) admits port on
// pods whose containers are cs.
func portAllows(ports []networkingv1.NetworkPolicyPort, port int, cs []corev1.Container) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Port == nil {
			return true
		}
		if p.Port.Type == intstr.Int && p.Port.IntValue() == port {
			return true
		}
		for _, c := range cs {
			for _, cp := range c.Ports {
				if p.Port.Type == intstr.String && cp.Name == p.Port.StrVal && int(cp.ContainerPort) == port {
					return true
				}
			}
		}
	}
	return false
}

func peerSelects(peer networkingv1.NetworkPolicyPeer, labels map[string]string) bool {
	if peer.IPBlock != nil || peer.NamespaceSelector != nil && len(peer.NamespaceSelector.MatchLabels) > 0 {
		return false
	}
	return peer.PodSelector != nil && kubelet.Selects(peer.PodSelector.MatchLabels, labels)
}

// Each overlay's NetworkPolicies let the service reach every Redis endpoint
// its URL names, and only through a rule written for it; Redis's own
// policy admits the service there; DNS stays reachable.
func TestOverlayNetworkPoliciesMatchRedis(t *testing.T) {
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			m := renderDir(t, filepath.Join(kubernetesDir, "overlays", overlay))
			_, c := m.api(t)
			apiLabels := m.deployments[0].Spec.Template.Labels
			egress := m.policiesFor(apiLabels, networkingv1.PolicyTypeEgress)
			if len(egress) == 0 {
				t.Fatal("no egress policy selects the service: it could reach anything")
			}
			allowsEgress := func(ep endpoint, cs []corev1.Container) bool {
				for _, p := range egress {
					for _, r := range p.Spec.Egress {
						for _, peer := range r.To {
							if ep.labels == nil && peer.IPBlock != nil || ep.labels != nil && peerSelects(peer, ep.labels) {
								if portAllows(r.Ports, ep.port, cs) {
									return true
								}
							}
						}
					}
				}
				return false
			}
			dns := false
			for _, p := range egress {
				for _, r := range p.Spec.Egress {
					if portAllows(r.Ports, 53, nil) && len(r.Ports) > 0 {
						dns = true
					}
				}
			}
			if !dns {
				t.Error("the service may not reach DNS (port 53)")
			}
			eps := m.redisEndpoints(t)
			for _, ep := range eps {
				var redisContainers []corev1.Container
				for _, w := range m.workloads() {
					if ep.labels != nil && kubelet.Selects(ep.labels, w.Labels) {
						redisContainers = append(redisContainers, w.Spec.Containers...)
					}
				}
				if !allowsEgress(ep, redisContainers) {
					t.Errorf("no egress rule lets the service reach %s:%d", ep.host, ep.port)
				}
				if ep.labels == nil {
					continue
				}
				ingress := m.policiesFor(ep.labels, networkingv1.PolicyTypeIngress)
				if len(ingress) == 0 {
					t.Errorf("no ingress policy guards the Redis at %s: any pod may reach it", ep.host)
				}
				admitted := false
				for _, p := range ingress {
					for _, r := range p.Spec.Ingress {
						for _, peer := range r.From {
							if peerSelects(peer, apiLabels) && portAllows(r.Ports, ep.port, redisContainers) {
								admitted = true
							}
						}
					}
				}
				if !admitted {
					t.Errorf("Redis's ingress policies do not admit the service at %s:%d", ep.host, ep.port)
				}
			}
			if overlay == "external" {
				// The egress rule follows redis-endpoint.env.
				env := readEnvFile(t, filepath.Join(kubernetesDir, "overlays", overlay, "redis-endpoint.env"))
				var rules []string
				for _, p := range egress {
					for _, r := range p.Spec.Egress {
						for _, peer := range r.To {
							if peer.IPBlock != nil {
								for _, port := range r.Ports {
									rules = append(rules, peer.IPBlock.CIDR+" "+port.Port.String())
								}
							}
						}
					}
				}
				if want := env["REDIS_CIDR"] + " " + env["REDIS_PORT"]; !slices.Contains(rules, want) {
					t.Errorf("egress to outside the cluster %v, want %s from redis-endpoint.env", rules, want)
				}
				if eps[0].host != env["REDIS_HOST"] || strconv.Itoa(eps[0].port) != env["REDIS_PORT"] {
					t.Errorf("the service's Redis is %s:%d, redis-endpoint.env says %s:%s", eps[0].host, eps[0].port, env["REDIS_HOST"], env["REDIS_PORT"])
				}
				ca := settingEnv(t, "redis-tls-ca-file")
				if _, ok := envVar(c, ca); !ok {
					t.Errorf("the external overlay must verify Redis's certificate against a CA (%s)", ca)
				}
			}
		})
	}
}

func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			out[k] = v
		}
	}
	return out
}

// Images are pinned to versions, the service container has no CPU limit,
// GOMEMLIMIT and GOMAXPROCS follow its resources, and the autoscaler owns
// the replica count.
func TestOverlayResources(t *testing.T) {
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			m := renderDir(t, filepath.Join(kubernetesDir, "overlays", overlay))
			for name, tpl := range m.workloads() {
				for _, c := range append(tpl.Spec.InitContainers, tpl.Spec.Containers...) {
					if !pinned(c.Image) {
						t.Errorf("%s container %s: image %q is not pinned to a version", name, c.Name, c.Image)
					}
					if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
						t.Errorf("%s container %s: want CPU and memory requests and a memory limit", name, c.Name)
					}
				}
			}
			ps, c := m.api(t)
			if !c.Resources.Limits.Cpu().IsZero() {
				t.Errorf("the service's container has a CPU limit: CFS throttling stalls every request in flight")
			}
			limit := c.Resources.Limits.Memory().Value()
			env := map[string]string{}
			for _, e := range c.Env {
				switch {
				case e.ValueFrom == nil:
					env[e.Name] = kubelet.ExpandEnv(e.Value, env)
				case e.ValueFrom.ResourceFieldRef != nil:
					env[e.Name] = kubelet.ResourceFieldValue(t, ps.Template.Spec, c, e.ValueFrom.ResourceFieldRef)
				}
			}
			memLimit, err := parseGoMemLimit(env["GOMEMLIMIT"])
			if err != nil {
				t.Errorf("GOMEMLIMIT %q: %v", env["GOMEMLIMIT"], err)
			} else if ratio := float64(memLimit) / float64(limit); ratio < 0.85 || ratio > 0.97 {
				t.Errorf("GOMEMLIMIT %s is %.1f%% of the memory limit %s, want 85%% to 97%%", env["GOMEMLIMIT"], 100*ratio, c.Resources.Limits.Memory())
			}
			// Derived, not copied: doubling the limit doubles it.
			c2 := *c.DeepCopy()
			c2.Resources.Limits[corev1.ResourceMemory] = *resource.NewQuantity(2*limit, resource.BinarySI)
			env2 := map[string]string{}
			for _, e := range c2.Env {
				switch {
				case e.ValueFrom == nil:
					env2[e.Name] = kubelet.ExpandEnv(e.Value, env2)
				case e.ValueFrom.ResourceFieldRef != nil:
					env2[e.Name] = kubelet.ResourceFieldValue(t, ps.Template.Spec, c2, e.ValueFrom.ResourceFieldRef)
				}
			}
			if m2, err := parseGoMemLimit(env2["GOMEMLIMIT"]); err != nil || m2 != 2*memLimit {
				t.Errorf("GOMEMLIMIT does not follow the memory limit (resourceFieldRef): %q for twice the limit", env2["GOMEMLIMIT"])
			}
			cpus := int64(c.Resources.Requests.Cpu().MilliValue()+999) / 1000
			if env["GOMAXPROCS"] != strconv.FormatInt(cpus, 10) {
				t.Errorf("GOMAXPROCS %q, want the CPU request rounded up (%d)", env["GOMAXPROCS"], cpus)
			}
			d := m.deployments[0]
			if len(m.hpas) != 1 {
				t.Fatalf("want one HorizontalPodAutoscaler, got %d", len(m.hpas))
			}
			h := m.hpas[0]
			if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != d.Name {
				t.Errorf("the autoscaler scales %s %s, not the Deployment %s", h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name, d.Name)
			}
			if d.Spec.Replicas != nil {
				t.Errorf("the Deployment sets replicas: each kubectl apply would undo the autoscaler")
			}
			if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 {
				t.Errorf("the autoscaler may go below 2 replicas")
			}
			for _, mt := range h.Spec.Metrics {
				if mt.Resource != nil && mt.Resource.Name == corev1.ResourceCPU && c.Resources.Requests.Cpu().IsZero() {
					t.Errorf("the autoscaler scales on CPU utilisation, which needs a CPU request")
				}
			}
		})
	}
}

// pinned says whether an image names a version: a digest, or a tag that is
// not latest and has at least major.minor.patch.
func pinned(image string) bool {
	if strings.Contains(image, "@sha256:") {
		return true
	}
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return false
	}
	return regexp.MustCompile(`^v?\d+\.\d+\.\d+`).MatchString(image[i+1:])
}

// parseGoMemLimit reads GOMEMLIMIT as the Go runtime does (a number of
// bytes with an optional B, KiB, MiB, GiB or TiB).
func parseGoMemLimit(s string) (int64, error) {
	m := regexp.MustCompile(`^(\d+)(B|KiB|MiB|GiB|TiB)?$`).FindStringSubmatch(s)
	if m == nil {
		return 0, strconv.ErrSyntax
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	return n << shift, err
}

// redisConf reads the directives of a redis.conf.
func redisConf(content string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(content, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		out[strings.ToLower(k)] = strings.TrimSpace(v)
	}
	return out
}

// redisBytes reads a Redis memory size (1mb = 1024*1024, 1m = 1000000).
func redisBytes(s string) int64 {
	m := regexp.MustCompile(`^(\d+)([a-z]*)$`).FindStringSubmatch(strings.ToLower(s))
	if m == nil {
		return -1
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	mult := map[string]int64{"": 1, "b": 1, "k": 1000, "kb": 1 << 10, "m": 1000 * 1000, "mb": 1 << 20, "g": 1000 * 1000 * 1000, "gb": 1 << 30}[m[2]]
	return n * mult
}

// confArgs turns a redis.conf into redis-server arguments, less port,
// bind and dir (the test's server sets them) and the directives named.
func confArgs(conf string, skip ...string) []string {
	var args []string
	for k, v := range redisConf(conf) {
		if k == "port" || k == "bind" || k == "dir" || slices.Contains(skip, k) {
			continue
		}
		args = append(args, "--"+k)
		if v == `""` {
			args = append(args, "")
			continue
		}
		args = append(args, strings.Fields(v)...)
	}
	return args
}

// redisConfOf returns the redis.conf of the overlay's Redis ConfigMap.
func redisConfOf(m *manifests) (string, bool) {
	for _, cm := range m.configMaps {
		if v, ok := cm.Data["redis.conf"]; ok {
			return v, true
		}
	}
	return "", false
}

// Each Redis the overlays run is a token store: never evicting, with an
// append-only file, and maxmemory at most 60% of its container's memory
// limit (an append-only file rewrite forks, and its copy-on-write pages
// need room). A real redis-server accepts the configuration, and every
// shell script parses.
func TestOverlayRedisIsATokenStore(t *testing.T) {
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			m := renderDir(t, filepath.Join(kubernetesDir, "overlays", overlay))
			for _, cm := range m.configMaps {
				for key, content := range cm.Data {
					if strings.HasSuffix(key, ".sh") {
						checkShell(t, cm.Name+"/"+key, content)
					}
				}
			}
			for name, tpl := range m.workloads() {
				for _, c := range tpl.Spec.Containers {
					if len(c.Command) >= 2 && c.Command[0] == "sh" && c.Command[1] == "-c" && len(c.Args) > 0 {
						checkShell(t, name+"/"+c.Name, c.Args[0])
					}
				}
			}
			conf, ok := redisConfOf(m)
			if overlay == "external" {
				if ok {
					t.Error("the external overlay configures a Redis of its own")
				}
				return
			}
			if !ok {
				t.Fatal("no redis.conf in the overlay's ConfigMaps")
			}
			d := redisConf(conf)
			if d["maxmemory-policy"] != "noeviction" || d["appendonly"] != "yes" {
				t.Errorf("redis.conf: maxmemory-policy %q, appendonly %q; want noeviction and yes", d["maxmemory-policy"], d["appendonly"])
			}
			for _, s := range m.statefulSets {
				for _, c := range s.Spec.Template.Spec.Containers {
					if c.Name != "redis" {
						continue
					}
					limit := c.Resources.Limits.Memory().Value()
					if max := redisBytes(d["maxmemory"]); max <= 0 || float64(max) > 0.6*float64(limit) {
						t.Errorf("maxmemory %q is more than 60%% of the memory limit %s", d["maxmemory"], c.Resources.Limits.Memory())
					}
				}
			}
			// redis-server refuses a directive it does not know, or a bad
			// value, and does not start.
			args := confArgs(conf, "cluster-config-file")
			if d["cluster-enabled"] == "yes" {
				args = append(args, "--cluster-config-file", "nodes.conf")
			}
			srv := redistest.StartServer(t, args...)
			got, err := srv.Client(t).ConfigGet(t.Context(), "maxmemory-policy").Result()
			if err != nil || got["maxmemory-policy"] != "noeviction" {
				t.Errorf("the running Redis: maxmemory-policy %v (%v)", got, err)
			}
		})
	}
}

// checkShell parses a script with sh -n.
func checkShell(t *testing.T, where, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-n")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s: the shell script does not parse: %v\n%s", where, err, out)
	}
}
