// Package kubelet runs the pods of Kubernetes manifests the way a kubelet
// would, without a cluster: every container of a workload as real
// processes on this machine, as root.
//
// What each container gets, as a kubelet and a cluster's network give it:
//   - an address of its pod's own: each pod gets one of a 127.x.y.0/24 (Linux
//     answers on all of 127.0.0.0/8), so that containers listen on the ports
//     their manifests name; a bind to every interface (0.0.0.0, redis.conf's
//     "bind * -::*", a listen address such as 0.0.0.0:8080 in the
//     environment) becomes a bind to the pod's address;
//   - cluster DNS: Services and StatefulSet pods (<pod>.<service>), with
//     their .default.svc.cluster.local forms, resolve through a hosts file
//     mounted on the container's /etc/hosts (in a mount namespace of its
//     own), following publishNotReadyAddresses: a name appears when its pod
//     is ready, or when it starts;
//   - its securityContext: runAsUser, runAsGroup and fsGroup (setpriv),
//     allowPrivilegeEscalation: false (no_new_privs), capabilities drop ALL
//     (an empty bounding set), readOnlyRootFilesystem (the root file system
//     and /dev/shm remounted read-only in its mount namespace);
//   - its volumes as the kubelet writes them: a Secret's or ConfigMap's files
//     through ..data symlinks, with their defaultMode, root-owned, with
//     fsGroup group-owned by it and group read added, mounted read-only;
//     emptyDirs fresh for each pod; a StatefulSet's claims kept for the next
//     pod of the same name;
//   - its environment resolved as the kubelet resolves it ($(VAR) expansion,
//     secretKeyRef, configMapKeyRef, resourceFieldRef with its divisor,
//     fieldRef);
//   - its probes: exec (in the container's sandbox, with its environment),
//     httpGet and tcpSocket on the pod's address.
//
// What is mapped, because a process here shares the machine's file system
// and loopback: each volume's mountPath onto the folder that holds it (in
// the environment, the command and the files of ConfigMaps), and in exec
// probes a redis-cli without -h (the pod's own 127.0.0.1) gets the pod's
// address. A container of a redis image runs the machine's redis-server,
// which must be the same minor version.
//
// The pieces are exported for runtimes that are not a kubelet (the Compose
// test builds its containers itself): Network, Sandbox, Pod and Container.
package kubelet

import (
	"os"
	"os/exec"
	"strconv"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

// Namespace is the namespace the emulated pods run in.
const Namespace = "default"

// RequireRoot skips (fails, under SESSIONCACHE_TEST_REQUIRE_REAL=1) where
// the emulation cannot run: it mounts file systems and runs processes as
// the pods' users, and Redis images run the machine's Redis.
func RequireRoot(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "the kubelet emulation needs root (it mounts volumes and runs processes as the pods' users)"
	}
	for _, bin := range []string{"unshare", "setpriv", "mount", "sh", "redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil && why == "" {
			why = "the kubelet emulation needs " + bin + " on PATH"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv(redistest.EnvRequireReal) == "1" {
		t.Fatalf("%s (%s=1)", why, redistest.EnvRequireReal)
	}
	t.Skip(why)
}

// Kubelet holds what the API server would (the Services, the Secrets the
// operator created, the ConfigMaps) and what the node keeps (the claims'
// volumes).
type Kubelet struct {
	// Net is the pod network and the cluster's DNS.
	Net *Network
	// Secrets and ConfigMaps, by name: their data. A test may add one
	// before the pod that mounts it starts.
	Secrets    map[string]map[string]string
	ConfigMaps map[string]map[string]string

	t         *testing.T
	services  []*corev1.Service
	claims    map[string]string // <claim>-<pod> -> folder
	claimsDir string
}

// New returns a node whose cluster holds services, configMaps and secrets
// (by name, their data).
func New(t *testing.T, services []*corev1.Service, configMaps []*corev1.ConfigMap, secrets map[string]map[string]string) *Kubelet {
	k := &Kubelet{t: t, Net: newNetwork(t), Secrets: secrets, ConfigMaps: map[string]map[string]string{}, services: services, claims: map[string]string{}}
	for _, c := range configMaps {
		k.ConfigMaps[c.Name] = c.Data
	}
	k.claimsDir = podRoot(t)
	return k
}

// Image is what a container image gives a container here: its user, its
// environment and its entrypoint, a binary of this machine. Its other
// files are the machine's.
type Image struct {
	Binary     string   // the entrypoint's binary, readable and executable by anyone
	Entrypoint []string // in the image: ["/sessioncache"]
	UID, GID   int      // USER, numeric
	Env        []string // ENV, KEY=VALUE in order
}

// HostPath maps a path of the image (the entrypoint, a health check's
// binary) onto this machine's files.
func (img *Image) HostPath(p string) string {
	if p == img.Entrypoint[0] {
		return img.Binary
	}
	return p
}

// PodSpec is a pod to run: a workload's template under a name.
type PodSpec struct {
	Name      string // the pod's name (StatefulSet: <name>-<ordinal>)
	Template  corev1.PodTemplateSpec
	Claims    []corev1.PersistentVolumeClaim // a StatefulSet's volumeClaimTemplates
	Subdomain string                         // a StatefulSet pod's governing Service
	Image     *Image                         // the image of its containers; nil: the machine's binaries stand in

	ip string // the address Prepare gave it (status.podIP)
}

// DeploymentPod is a pod of the Deployment, its containers of img.
func DeploymentPod(d *appsv1.Deployment, img *Image) PodSpec {
	return PodSpec{Name: d.Name + "-0", Template: d.Spec.Template, Image: img}
}

// StatefulSetPod is the StatefulSet's pod of that ordinal.
func StatefulSetPod(s *appsv1.StatefulSet, ordinal int) PodSpec {
	return PodSpec{Name: s.Name + "-" + strconv.Itoa(ordinal), Template: s.Spec.Template, Claims: s.Spec.VolumeClaimTemplates, Subdomain: s.Spec.ServiceName}
}

// volume finds a volume of the pod, or a claim of its StatefulSet.
func (ps PodSpec) volume(name string) (*corev1.Volume, *corev1.PersistentVolumeClaim) {
	for i := range ps.Template.Spec.Volumes {
		if ps.Template.Spec.Volumes[i].Name == name {
			return &ps.Template.Spec.Volumes[i], nil
		}
	}
	for i := range ps.Claims {
		if ps.Claims[i].Name == name {
			return nil, &ps.Claims[i]
		}
	}
	return nil, nil
}

// Selects says whether a label selector (matchLabels) selects labels; an
// empty one selects nothing here.
func Selects(sel, labels map[string]string) bool {
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

// dnsNames are the names that resolve to the pod: the Services that
// select it and, for a StatefulSet's pod, <pod>.<service>; before the pod
// is ready only where the Service publishes not-ready addresses.
func (k *Kubelet) dnsNames(p *Pod, ready bool) []string {
	var out []string
	for _, s := range k.services {
		if !Selects(s.Spec.Selector, p.Spec.Template.Labels) || !(ready || s.Spec.PublishNotReadyAddresses) {
			continue
		}
		out = append(out, s.Name)
		if p.Spec.Subdomain == s.Name && s.Spec.ClusterIP == corev1.ClusterIPNone {
			out = append(out, p.Name+"."+s.Name)
		}
	}
	return out
}
