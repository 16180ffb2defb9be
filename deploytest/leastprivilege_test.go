package deploytest

// Least privilege on the network: who the NetworkPolicies let reach the
// service's pods, on which port. The kubelet emulation does not enforce
// NetworkPolicies; these tests evaluate them as a network plugin would,
// for the clients an operator has and the ones it must not admit.

import (
	"crypto/tls"
	"net"
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

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/sessioncache/sessioncache/deploytest/internal/kubelet"
)

// ownNamespace is the namespace the overlays are applied in, in these
// tests.
const ownNamespace = "sessioncache"

// caller is a pod that tries to reach the service.
type caller struct {
	name      string
	namespace string
	labels    map[string]string
}

// admits says whether the ingress policies that select the service's pods
// let from reach the container port named port.
func (m *manifests) admits(t *testing.T, from caller, port string) bool {
	t.Helper()
	_, c := m.api(t)
	number, err := kubelet.ContainerPort(c, port)
	if err != nil {
		t.Error(err)
		return false
	}
	podLabels := m.deployments[0].Spec.Template.Labels
	nsLabels := map[string]string{"kubernetes.io/metadata.name": from.namespace}
	for _, p := range m.policiesFor(podLabels, networkingv1.PolicyTypeIngress) {
		for _, r := range p.Spec.Ingress {
			if !portAllows(r.Ports, number, []corev1.Container{c}) {
				continue
			}
			if len(r.From) == 0 {
				return true
			}
			for _, peer := range r.From {
				if peer.IPBlock != nil {
					continue
				}
				if peer.NamespaceSelector != nil && len(peer.NamespaceSelector.MatchExpressions) > 0 || peer.PodSelector != nil && len(peer.PodSelector.MatchExpressions) > 0 {
					t.Fatalf("NetworkPolicy %s: matchExpressions are not evaluated here", p.Name)
				}
				nsOK := peer.NamespaceSelector == nil && from.namespace == ownNamespace ||
					peer.NamespaceSelector != nil && peerLabelsMatch(peer.NamespaceSelector.MatchLabels, nsLabels)
				podOK := peer.PodSelector == nil || peerLabelsMatch(peer.PodSelector.MatchLabels, from.labels)
				if nsOK && podOK {
					return true
				}
			}
		}
	}
	return false
}

// peerLabelsMatch is a NetworkPolicy peer's selector: unlike a workload's,
// an empty one ({}) selects everything.
func peerLabelsMatch(sel, labels map[string]string) bool {
	return len(sel) == 0 || kubelet.Selects(sel, labels)
}

var (
	clientLabel     = map[string]string{"sessioncache.io/client": "true"}
	prometheusLabel = map[string]string{"app.kubernetes.io/name": "prometheus"}
)

// Every overlay admits to the API's port only the labelled pods of its own
// namespace, and to nobody the metrics port; with the monitoring
// component, Prometheus's pods of the monitoring namespace reach the
// metrics port, and only it.
func TestOverlayNetworkPoliciesLeastPrivilege(t *testing.T) {
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			m := renderDir(t, filepath.Join(kubernetesDir, "overlays", overlay))
			mon := withMonitoring(t, overlay)
			for _, tc := range []struct {
				m           *manifests
				from        caller
				api, metric bool
			}{
				{m, caller{"a gateway of the namespace", ownNamespace, clientLabel}, true, false},
				{m, caller{"an unlabelled pod of the namespace", ownNamespace, nil}, false, false},
				{m, caller{"a labelled pod of another namespace", "team-x", clientLabel}, false, false},
				{m, caller{"Prometheus, without the component", "monitoring", prometheusLabel}, false, false},
				{mon, caller{"Prometheus", "monitoring", prometheusLabel}, false, true},
				{mon, caller{"a pod labelled prometheus elsewhere", "team-x", prometheusLabel}, false, false},
				{mon, caller{"a gateway of the namespace, with the component", ownNamespace, clientLabel}, true, false},
			} {
				if got := tc.m.admits(t, tc.from, "http"); got != tc.api {
					t.Errorf("%s (namespace %s, labels %v) reaches the API's port: %v, want %v", tc.from.name, tc.from.namespace, tc.from.labels, got, tc.api)
				}
				if got := tc.m.admits(t, tc.from, "metrics"); got != tc.metric {
					t.Errorf("%s (namespace %s, labels %v) reaches the metrics port: %v, want %v", tc.from.name, tc.from.namespace, tc.from.labels, got, tc.metric)
				}
			}
		})
	}
}

// deployGuide returns deploy/README.md.
func deployGuide(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// guideBlock returns the fenced yaml block of deploy/README.md that holds
// marker.
func guideBlock(t *testing.T, marker string) string {
	t.Helper()
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(deployGuide(t), -1) {
		if strings.Contains(m[1], marker) {
			return m[1]
		}
	}
	t.Fatalf("deploy/README.md has no yaml block with %q", marker)
	return ""
}

// The patch deploy/README.md gives for naming the API's clients in other
// namespaces admits the labelled pods of the namespace it names, and
// nobody else.
func TestGuideNamesTheAPIsClients(t *testing.T) {
	m := withKustomization(t, "in-namespace", guideBlock(t, "/spec/ingress/0/from/-"))
	for _, tc := range []struct {
		from caller
		want bool
	}{
		{caller{"a gateway of the named namespace", "gateways", clientLabel}, true},
		{caller{"an unlabelled pod of the named namespace", "gateways", nil}, false},
		{caller{"a labelled pod of another namespace", "team-x", clientLabel}, false},
		{caller{"a gateway of the service's namespace", ownNamespace, clientLabel}, true},
	} {
		if got := m.admits(t, tc.from, "http"); got != tc.want {
			t.Errorf("%s (namespace %s) reaches the API: %v, want %v", tc.from.name, tc.from.namespace, got, tc.want)
		}
		if m.admits(t, tc.from, "metrics") {
			t.Errorf("%s (namespace %s) reaches the metrics port", tc.from.name, tc.from.namespace)
		}
	}
}

// The Secret the deploy guide tells operators to create holds exactly the
// keys the manifests mount, and the tests' Secret is that one; the
// service's pod never mounts the password of Redis's internal user
// (replication, Sentinel, the cluster's Job), and that Job none of the
// service's.
func TestSecretKeysLeastPrivilege(t *testing.T) {
	block := regexp.MustCompile(`(?s)kubectl create secret generic sessioncache(.*?)\n\n?[a-z]`).FindStringSubmatch(deployGuide(t))
	if block == nil {
		t.Fatal("deploy/README.md has no kubectl create secret generic sessioncache")
	}
	var guide []string
	for _, m := range regexp.MustCompile(`--from-literal=([a-z-]+)=`).FindAllStringSubmatch(block[1], -1) {
		guide = append(guide, m[1])
	}
	var tests []string
	for k := range testSecrets()["sessioncache"] {
		tests = append(tests, k)
	}
	slices.Sort(guide)
	slices.Sort(tests)
	want := slices.Sorted(slices.Values(secretKeys))
	if !slices.Equal(guide, want) || !slices.Equal(tests, want) {
		t.Errorf("Secret keys: the guide creates %v, the tests %v, the manifests mount %v", guide, tests, want)
	}
	for _, overlay := range overlays {
		m := renderDir(t, filepath.Join(kubernetesDir, "overlays", overlay))
		for name, tpl := range m.workloads() {
			for _, v := range tpl.Spec.Volumes {
				if v.Secret == nil {
					continue
				}
				for _, it := range v.Secret.Items {
					if strings.HasPrefix(name, "Deployment ") && it.Key == "redis-internal-password" || strings.HasPrefix(name, "Job ") && it.Key != "redis-internal-password" {
						t.Errorf("%s: %s mounts %s", overlay, name, it.Key)
					}
				}
			}
		}
	}
}

// The https component, as deploy/README.md's first option for TLS inside
// the cluster: the in-namespace overlay with it, run by the kubelet with
// the Secret cert-manager would write (a certificate for the Certificate's
// names, from a CA of the test's). The probes pass over HTTPS, clients in
// the cluster reach the issuer it sets (https://sessioncache:8080) and
// verify the service against the CA, plain HTTP gets no answer, and
// /metrics stays on its own port.
func TestKubeletHTTPSComponent(t *testing.T) {
	kubelet.RequireRoot(t)
	img := buildImage(t)
	m := withHTTPS(t, "in-namespace")
	if len(m.certificates) != 1 {
		t.Fatalf("want one Certificate, got %d", len(m.certificates))
	}
	crt := m.certificates[0]
	_, c := m.api(t)
	issuer, _ := envVar(c, settingEnv(t, "issuer"))
	u, err := url.Parse(issuer.Value)
	if err != nil || u.Scheme != "https" || !slices.Contains(crt.Spec.DNSNames, u.Hostname()) {
		t.Fatalf("the issuer %q: want https, at a name of the Certificate %v", issuer.Value, crt.Spec.DNSNames)
	}
	mounted := false
	for _, v := range m.deployments[0].Spec.Template.Spec.Volumes {
		mounted = mounted || v.Secret != nil && v.Secret.SecretName == crt.Spec.SecretName
	}
	if !mounted {
		t.Fatalf("the Deployment does not mount the Certificate's Secret %s", crt.Spec.SecretName)
	}
	cert := issueServerCert(t, t.TempDir(), u.Hostname())
	read := func(f string) string {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	secrets := testSecrets()
	secrets[crt.Spec.SecretName] = map[string]string{"tls.crt": read(cert.certFile), "tls.key": read(cert.keyFile), "ca.crt": string(cert.caPEM)}
	k := newKubelet(t, m, secrets)
	k.RunStatefulSet(m.statefulSets[0])
	p := k.Run(kubelet.DeploymentPod(m.deployments[0], &img.Image))
	k.WaitReady(p, time.Minute)

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: k.Net.Dial,
		TLSClientConfig: &tls.Config{RootCAs: cert.pool, MinVersion: tls.VersionTLS12}}}
	key, _, _ := strings.Cut(secrets["sessioncache"]["api-keys"], "\n")
	req, _ := http.NewRequest("POST", issuer.Value+"/v1/sessions", strings.NewReader(loginBody(alice, "laptop")))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("a login at %s through the cluster's DNS: %v", issuer.Value, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.TLS == nil {
		t.Errorf("a login over HTTPS: %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	plain := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: k.Net.Dial}}
	if r, err := plain.Get("http://" + u.Host + "/healthz"); err == nil {
		r.Body.Close()
		if r.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP on the API's port answers 200")
		}
	}
	mport, err := kubelet.ContainerPort(p.Containers[0].Spec, "metrics")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := plain.Get("http://" + net.JoinHostPort(p.IP, strconv.Itoa(mport)) + "/metrics"); err != nil || r.StatusCode != http.StatusOK {
		t.Errorf("/metrics on its port: %v %v", r, err)
	} else {
		r.Body.Close()
	}
}
