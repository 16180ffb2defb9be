package kubelet

import (
	"math"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// envValue resolves one variable as the kubelet does.
func (k *Kubelet) envValue(ps PodSpec, c corev1.Container, e corev1.EnvVar, defined map[string]string) string {
	t := k.t
	if e.ValueFrom == nil {
		return ExpandEnv(e.Value, defined)
	}
	switch f := e.ValueFrom; {
	case f.SecretKeyRef != nil:
		v, ok := k.Secrets[f.SecretKeyRef.Name][f.SecretKeyRef.Key]
		if !ok {
			t.Fatalf("env %s: no key %s in Secret %s", e.Name, f.SecretKeyRef.Key, f.SecretKeyRef.Name)
		}
		return v
	case f.ConfigMapKeyRef != nil:
		v, ok := k.ConfigMaps[f.ConfigMapKeyRef.Name][f.ConfigMapKeyRef.Key]
		if !ok {
			t.Fatalf("env %s: no key %s in ConfigMap %s", e.Name, f.ConfigMapKeyRef.Key, f.ConfigMapKeyRef.Name)
		}
		return v
	case f.FieldRef != nil:
		switch f.FieldRef.FieldPath {
		case "metadata.name":
			return ps.Name
		case "metadata.namespace":
			return Namespace
		case "status.podIP":
			return ps.ip
		}
		t.Fatalf("env %s: fieldRef %s is not emulated", e.Name, f.FieldRef.FieldPath)
	case f.ResourceFieldRef != nil:
		return ResourceFieldValue(t, ps.Template.Spec, c, f.ResourceFieldRef)
	}
	t.Fatalf("env %s: valueFrom not emulated", e.Name)
	return ""
}

// ExpandEnv is Kubernetes's $(VAR) expansion: a variable defined before
// is replaced, $$ is a $, anything else stays as written.
func ExpandEnv(s string, defined map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i:], ')'); end > 0 {
				name := s[i+2 : i+end]
				if v, ok := defined[name]; ok {
					b.WriteString(v)
					i += end
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ResourceFieldValue is the kubelet's value of a resourceFieldRef: the
// quantity divided by the divisor, rounded up.
func ResourceFieldValue(t *testing.T, spec corev1.PodSpec, c corev1.Container, ref *corev1.ResourceFieldSelector) string {
	t.Helper()
	if ref.ContainerName != "" && ref.ContainerName != c.Name {
		for _, cc := range spec.Containers {
			if cc.Name == ref.ContainerName {
				c = cc
			}
		}
	}
	kind, name, _ := strings.Cut(ref.Resource, ".")
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		t.Fatalf("resourceFieldRef %s: the container sets no %s (the kubelet would give the node's allocatable)", ref.Resource, ref.Resource)
	}
	div := ref.Divisor
	if div.IsZero() {
		div = resource.MustParse("1")
	}
	if name == "cpu" {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(div.MilliValue()))), 10)
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(div.Value()))), 10)
}

// MapPaths replaces every mounted path in s by its folder, the longest
// mount first (/etc/redis-secret before /etc/redis).
func MapPaths(s string, mounts map[string]string) string {
	paths := make([]string, 0, len(mounts))
	for mp := range mounts {
		paths = append(paths, mp)
	}
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	for _, mp := range paths {
		re := regexp.MustCompile(`(^|[\s"'=:<>(|;&])` + regexp.QuoteMeta(mp) + `(/|$|[\s"');&|])`)
		s = re.ReplaceAllString(s, "${1}"+mounts[mp]+"${2}")
	}
	return s
}

// podListen maps a listen address on every interface (an empty host,
// 0.0.0.0 or ::) onto the pod's address; the port stays. Anything else,
// an address of one interface or no address at all, stays as it is.
func podListen(v, ip string) string {
	host, port, err := net.SplitHostPort(v)
	if err != nil || port == "" || host != "" && host != "0.0.0.0" && host != "::" {
		return v
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return v
	}
	return net.JoinHostPort(ip, port)
}
