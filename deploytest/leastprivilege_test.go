package deploytest

// Least privilege on the network: who the NetworkPolicies let reach the
// service's pods, on which port. The kubelet emulation does not enforce
// NetworkPolicies; these tests evaluate them as a network plugin would,
// for the clients an operator has and the ones it must not admit.

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

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
		t.Fatal(err)
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
					peer.NamespaceSelector != nil && kubelet.Selects(peer.NamespaceSelector.MatchLabels, nsLabels)
				podOK := peer.PodSelector == nil || kubelet.Selects(peer.PodSelector.MatchLabels, from.labels)
				if nsOK && podOK {
					return true
				}
			}
		}
	}
	return false
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
