package main

// Checks of the deployment files: the Kubernetes manifests decode strictly
// into the Kubernetes API types (an unknown or misspelt field fails), hang
// together (selectors, ports, probes), and configure the service with
// settings it accepts; docker-compose.yml runs Redis as a token store.

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

const manifestDir = "../../deploy/kubernetes"

// secretKeys are the keys of the Secret "sessioncache" that the README
// tells operators to create.
var secretKeys = []string{"api-key", "secret", "redis-password"}

type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// manifests holds every object of the manifest folder, by type.
type manifests struct {
	deployments  []*appsv1.Deployment
	statefulSets []*appsv1.StatefulSet
	services     []*corev1.Service
	accounts     []*corev1.ServiceAccount
	pdbs         []*policyv1.PodDisruptionBudget
	policies     []*networkingv1.NetworkPolicy
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

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	var k kustomization
	b, err := os.ReadFile(filepath.Join(manifestDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil || k.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml: %v (kind %q)", err, k.Kind)
	}
	files, _ := filepath.Glob(filepath.Join(manifestDir, "*.yaml"))
	var listed []string
	for _, f := range files {
		if filepath.Base(f) != "kustomization.yaml" {
			listed = append(listed, filepath.Base(f))
		}
	}
	sort.Strings(listed)
	resources := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(listed, resources) {
		t.Errorf("kustomization.yaml lists %v, the folder holds %v", resources, listed)
	}
	m := &manifests{}
	for _, f := range resources {
		b, err := os.ReadFile(filepath.Join(manifestDir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range splitYAML(b) {
			m.decodeStrict(t, f, doc)
		}
	}
	return m
}

func TestManifestsDecodeStrictly(t *testing.T) {
	m := loadManifests(t)
	if len(m.deployments) != 1 || len(m.statefulSets) != 1 || len(m.services) != 2 || len(m.pdbs) != 1 || len(m.policies) != 2 {
		t.Errorf("want 1 Deployment, 1 StatefulSet (Redis), 2 Services, 1 PodDisruptionBudget, 2 NetworkPolicies; got %d, %d, %d, %d, %d",
			len(m.deployments), len(m.statefulSets), len(m.services), len(m.pdbs), len(m.policies))
	}
	// The strict decoding is what catches typos: prove it does.
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte("apiVersion: apps/v1\nkind: Deployment\nspec:\n  replica: 2\n"), &d); err == nil {
		t.Errorf("strict decoding accepted an unknown field")
	}
}

// workloads returns the pod templates of every Deployment and StatefulSet.
func (m *manifests) workloads() map[string]corev1.PodTemplateSpec {
	out := map[string]corev1.PodTemplateSpec{}
	for _, d := range m.deployments {
		out["Deployment "+d.Name] = d.Spec.Template
	}
	for _, s := range m.statefulSets {
		out["StatefulSet "+s.Name] = s.Spec.Template
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
	m := loadManifests(t)
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
			if lim.Cpu().IsZero() || lim.Memory().IsZero() || req.Cpu().IsZero() || req.Memory().IsZero() {
				t.Errorf("%s container %s: want CPU and memory requests and limits", name, c.Name)
			}
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
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
// with the Secret filled in, is a configuration the service accepts.
func TestManifestsConfigureTheService(t *testing.T) {
	m := loadManifests(t)
	d := m.deployments[0]
	c := d.Spec.Template.Spec.Containers[0]
	if g := c.ReadinessProbe.HTTPGet; g == nil || g.Path != "/readyz" || !hasPort(d.Spec.Template, g.Port.String()) {
		t.Errorf("readiness probe %+v, want GET /readyz on a container port", c.ReadinessProbe.ProbeHandler)
	}
	if g := c.LivenessProbe.HTTPGet; g == nil || g.Path != "/healthz" || !hasPort(d.Spec.Template, g.Port.String()) {
		t.Errorf("liveness probe %+v, want GET /healthz on a container port", c.LivenessProbe.ProbeHandler)
	}
	dir := t.TempDir()
	env := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			ref := e.ValueFrom.SecretKeyRef
			if ref == nil || ref.Name != "sessioncache" || !slices.Contains(secretKeys, ref.Key) {
				t.Errorf("env %s: want a key of the Secret sessioncache", e.Name)
				continue
			}
			v = "0123456789abcdef0123456789abcdef"
		}
		// Kubernetes expands $(NAME) from the variables defined above.
		v = regexp.MustCompile(`\$\(([A-Z_]+)\)`).ReplaceAllStringFunc(v, func(s string) string { return env[s[2:len(s)-1]] })
		if strings.HasSuffix(e.Name, "_FILE") {
			// Stand-ins for the files the Secret volume provides.
			v = writeFile(t, dir, filepath.Base(v), "0123456789abcdef0123456789abcdef")
		}
		env[e.Name] = v
		if strings.HasPrefix(e.Name, "SESSIONCACHE_") && !isSetting(e.Name) {
			t.Errorf("env %s is not a setting of the service", e.Name)
		}
	}
	cfg, err := loadConfig(nil, envOf(env), io.Discard)
	if err != nil {
		t.Fatalf("the Deployment's configuration is refused: %v", err)
	}
	if cfg.APIKey == nil || cfg.Secret == nil || cfg.RedisOptions.standalone == nil {
		t.Errorf("the Deployment must set an API key, a secret and a Redis: %+v", cfg)
	}
	grace := time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	if grace <= cfg.ShutdownDelay+cfg.ShutdownTimeout {
		t.Errorf("terminationGracePeriodSeconds %v leaves no room for the shutdown delay %v and timeout %v", grace, cfg.ShutdownDelay, cfg.ShutdownTimeout)
	}
	redis := m.statefulSets[0].Spec.Template.Spec.Containers[0]
	checkTokenStoreRedis(t, "redis.yaml", redis.Args)
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

// composeFile is the part of docker-compose.yml this test checks.
type composeFile struct {
	Services map[string]struct {
		Image       string            `json:"image"`
		Build       any               `json:"build"`
		Command     []string          `json:"command"`
		Environment map[string]string `json:"environment"`
		Ports       []string          `json:"ports"`
		Healthcheck struct {
			Test []string `json:"test"`
		} `json:"healthcheck"`
	} `json:"services"`
}

func TestDockerCompose(t *testing.T) {
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	redis, svc := f.Services["redis"], f.Services["sessioncache"]
	if !strings.HasPrefix(redis.Image, "redis:7") || redis.Healthcheck.Test == nil {
		t.Errorf("redis service: image %q, health check %v", redis.Image, redis.Healthcheck.Test)
	}
	checkTokenStoreRedis(t, "docker-compose.yml", redis.Command)
	if svc.Build == nil || len(svc.Ports) != 1 || !strings.HasPrefix(svc.Ports[0], "127.0.0.1:") {
		t.Errorf("sessioncache service: build %v, ports %v; want built here and published on 127.0.0.1 only", svc.Build, svc.Ports)
	}
	// Compose fills ${NAME:?message} from the caller's environment.
	env := map[string]string{}
	for k, v := range svc.Environment {
		if !isSetting(k) {
			t.Errorf("environment %s is not a setting of the service", k)
		}
		env[k] = regexp.MustCompile(`\$\{[A-Z_]+:\?[^}]*\}`).ReplaceAllString(v, "0123456789abcdef0123456789abcdef")
	}
	cfg, err := loadConfig(nil, envOf(env), io.Discard)
	if err != nil {
		t.Fatalf("the compose configuration is refused: %v", err)
	}
	if cfg.RedisURL == "" || cfg.APIKey == nil || cfg.Secret == nil {
		t.Errorf("compose must use its Redis, an API key and a secret: %+v", cfg)
	}
	test := svc.Healthcheck.Test
	if len(test) < 3 || test[0] != "CMD" || test[1] != "/sessioncache" {
		t.Fatalf("health check %q: want the binary's own -check", test)
	}
	if c, err := loadConfig(test[2:], envOf(env), io.Discard); err != nil || c.Check != "/readyz" {
		t.Errorf("health check %q: %v, want -check /readyz", test, err)
	}
}

// The Dockerfile's health check runs a flag the binary has.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`CMD \["/sessioncache", "-check", "(/[a-z]+)"\]`).FindSubmatch(b)
	if m == nil || !bytes.Contains(b, []byte("./cmd/sessioncache")) || !bytes.Contains(b, []byte("ENTRYPOINT [\"/sessioncache\"]")) {
		t.Fatalf("Dockerfile: want a build of ./cmd/sessioncache, ENTRYPOINT /sessioncache and a -check health check")
	}
	if c, err := loadConfig([]string{"-check", string(m[1])}, envOf(map[string]string{envListen: "0.0.0.0:8080", envAPIKey: goodKey}), io.Discard); err != nil || c.Check != "/healthz" {
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
