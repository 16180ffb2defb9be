package main

// Runs the pods of the rendered manifests the way a kubelet would, without
// a cluster: every container of every workload an overlay describes (the
// service, and the Redis StatefulSets with their start scripts, Sentinels
// and cluster Job), as real processes.
//
// What each container gets, as a kubelet and a cluster's network give it:
//   - an address of its pod's own: each pod gets one of a 127.x.y.0/24 (Linux
//     answers on all of 127.0.0.0/8), so that containers listen on the ports
//     their manifests name; a bind to every interface (0.0.0.0, redis.conf's
//     "bind * -::*") becomes a bind to the pod's address;
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
// address.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

// Modes the kubelet uses (k8s.io/kubernetes pkg/volume: volume_linux.go,
// util/atomic_writer.go, emptydir).
const (
	secretDefaultMode = 0o644 // corev1.SecretVolumeSourceDefaultMode, ConfigMap's too
	roMask            = 0o440 // added for fsGroup on a read-only volume (Secret, ConfigMap)
	rwMask            = 0o660 // added for fsGroup on a writable one (emptyDir, a claim)
	execMask          = 0o110 // added to directories, with setgid
)

// namespace is the namespace the emulated pods run in.
const namespace = "default"

// requireRoot skips (fails, under SESSIONCACHE_TEST_REQUIRE_REAL=1) where
// the emulation cannot run: it mounts file systems and runs processes as
// the pods' users.
func requireRoot(t *testing.T) {
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

// network is the pod network and the cluster's DNS.
//
// The hosts file is bind-mounted into every container, so it must stay the
// same inode, and processes read it at any moment: it is never rewritten.
// A name's line is appended (one write, which readers see whole: the file's
// size grows after its bytes are in place), and removed by turning its
// first byte into '#' (one byte). No reader ever sees a half-written file.
type network struct {
	t      *testing.T
	prefix string // "127.x.y."
	file   string // the hosts file every container sees as /etc/hosts
	mu     sync.Mutex
	f      *os.File
	size   int64
	last   int
	lines  []hostsLine
}

// hostsLine is a line of the hosts file.
type hostsLine struct {
	ip, name string
	offset   int64
	removed  bool
}

func newNetwork(t *testing.T) *network {
	t.Helper()
	n := &network{t: t}
	// A /24 no one else uses: another run of this test on the same machine
	// would have a process on its first addresses.
	for tries := 0; ; tries++ {
		n.prefix = fmt.Sprintf("127.%d.%d.", 1+mrand.IntN(254), mrand.IntN(256))
		free := true
		for _, hostPort := range []string{"1:6379", "1:8080", "2:6379", "2:26379"} {
			l, err := net.Listen("tcp", n.prefix+hostPort)
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			break
		}
		if tries == 20 {
			t.Fatal("no free 127.x.y.0/24 for the pods")
		}
	}
	dir, err := os.MkdirTemp("", "sessioncache-net-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n.file = filepath.Join(dir, "hosts")
	if n.f, err = os.OpenFile(n.file, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.f.Close() })
	if err := n.f.Chmod(0o644); err != nil {
		t.Fatal(err)
	}
	n.append("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
	return n
}

func (n *network) append(text string) int64 {
	off := n.size
	if _, err := n.f.WriteAt([]byte(text), off); err != nil {
		n.t.Fatal(err)
	}
	n.size += int64(len(text))
	return off
}

// allocate returns a pod address never given before.
func (n *network) allocate() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.last++
	if n.last > 254 {
		n.t.Fatal("the pod network ran out of addresses")
	}
	return n.prefix + strconv.Itoa(n.last)
}

// publish makes names (and their cluster domain forms) resolve to ip.
func (n *network) publish(ip string, names ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, name := range names {
		for _, fqdn := range []string{name, name + "." + namespace + ".svc.cluster.local"} {
			if slices.ContainsFunc(n.lines, func(l hostsLine) bool { return l.ip == ip && l.name == fqdn && !l.removed }) {
				continue
			}
			off := n.append(ip + "\t" + fqdn + "\n")
			n.lines = append(n.lines, hostsLine{ip: ip, name: fqdn, offset: off})
		}
	}
}

// unpublish removes ip from every name: its pod is gone.
func (n *network) unpublish(ip string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, l := range n.lines {
		if l.ip != ip || l.removed {
			continue
		}
		if _, err := n.f.WriteAt([]byte("#"), l.offset); err != nil {
			n.t.Fatal(err)
		}
		n.lines[i].removed = true
	}
}

// resolve returns the first address of a name, or the name itself.
func (n *network) resolve(host string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range n.lines {
		if l.name == host && !l.removed {
			return l.ip
		}
	}
	return host
}

// dial connects the test's own clients through the cluster's DNS.
func (n *network) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, net.JoinHostPort(n.resolve(host), port))
}

// sandbox is how a container's processes run.
type sandbox struct {
	hosts        string // mounted on /etc/hosts
	uid, gid     uint32
	groups       []uint32
	noNewPrivs   bool
	dropAllCaps  bool
	readOnlyRoot bool
	writable     []string // volume folders, writable under a read-only root
	readOnly     []string // volume folders mounted read-only
	dir          string   // the working directory
}

// command returns argv run in the sandbox: unshare gives it a mount
// namespace, where the hosts file and the volumes are bind-mounted and the
// root made read-only; setpriv drops to the container's ids, capabilities
// and privileges, and kills it if the test dies.
func (s *sandbox) command(ctx context.Context, argv, env []string) *exec.Cmd {
	bins := map[string]string{}
	for _, b := range []string{"unshare", "setpriv", "mount", "sh"} {
		p, err := exec.LookPath(b)
		if err != nil {
			panic(err) // requireRoot checked
		}
		bins[b] = p
	}
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	mount := bins["mount"]
	var sc strings.Builder
	sc.WriteString("set -eu\n")
	fmt.Fprintf(&sc, "%s --bind %s /etc/hosts\n", mount, q(s.hosts))
	for _, d := range s.writable {
		fmt.Fprintf(&sc, "%s --bind %s %s\n", mount, q(d), q(d))
	}
	for _, d := range s.readOnly {
		fmt.Fprintf(&sc, "%s --bind %s %s\n%s -o remount,bind,ro %s\n", mount, q(d), q(d), mount, q(d))
	}
	if s.readOnlyRoot {
		fmt.Fprintf(&sc, "%s -o remount,bind,ro /\n", mount)
		if isMountPoint("/dev/shm") {
			fmt.Fprintf(&sc, "%s -o remount,bind,ro /dev/shm\n", mount)
		}
	}
	priv := []string{bins["setpriv"], fmt.Sprintf("--reuid=%d", s.uid), fmt.Sprintf("--regid=%d", s.gid)}
	if len(s.groups) == 0 {
		priv = append(priv, "--clear-groups")
	} else {
		var gs []string
		for _, g := range s.groups {
			gs = append(gs, strconv.Itoa(int(g)))
		}
		priv = append(priv, "--groups="+strings.Join(gs, ","))
	}
	if s.noNewPrivs {
		priv = append(priv, "--no-new-privs")
	}
	if s.dropAllCaps {
		priv = append(priv, "--bounding-set=-all", "--inh-caps=-all")
	}
	priv = append(priv, "--pdeathsig=KILL", "--")
	fmt.Fprintf(&sc, "exec %s \"$@\"\n", strings.Join(priv, " "))
	args := append([]string{"--mount", "--propagation", "private", "--", bins["sh"], "-c", sc.String(), "sh"}, argv...)
	cmd := exec.CommandContext(ctx, bins["unshare"], args...)
	cmd.Env = env
	cmd.Dir = s.dir
	// The container's processes in a group of their own, which stands for
	// its cgroup: when it stops, whatever its main process left running
	// (a script's redis-cli) is killed with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func isMountPoint(path string) bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == path {
			return true
		}
	}
	return false
}

// kubelet holds what the API server would (the rendered objects, the
// Secrets the operator created, ConfigMaps) and what the node keeps (the
// claims' volumes).
type kubelet struct {
	t          *testing.T
	m          *manifests
	net        *network
	secrets    map[string]map[string]string
	configMaps map[string]map[string]string
	claims     map[string]string // <claim>-<pod> -> folder
	claimsDir  string
}

func newKubelet(t *testing.T, m *manifests, secrets map[string]map[string]string) *kubelet {
	k := &kubelet{t: t, m: m, net: newNetwork(t), secrets: secrets, configMaps: map[string]map[string]string{}, claims: map[string]string{}}
	for _, c := range m.configMaps {
		k.configMaps[c.Name] = c.Data
	}
	k.claimsDir = podRoot(t)
	return k
}

// podSpec is a pod to run: a workload's template under a name.
type podSpec struct {
	name      string // the pod's name (StatefulSet: <name>-<ordinal>)
	template  corev1.PodTemplateSpec
	claims    []corev1.PersistentVolumeClaim // a StatefulSet's volumeClaimTemplates
	subdomain string                         // a StatefulSet pod's governing Service
	image     *dockerImage                   // the image of its containers (the service's); nil: the machine's binaries stand in
	ip        string                         // the address prepare gave it (status.podIP)
}

func deploymentPod(d *appsv1.Deployment, img *dockerImage) podSpec {
	return podSpec{name: d.Name + "-0", template: d.Spec.Template, image: img}
}

func statefulSetPod(s *appsv1.StatefulSet, ordinal int) podSpec {
	return podSpec{name: s.Name + "-" + strconv.Itoa(ordinal), template: s.Spec.Template, claims: s.Spec.VolumeClaimTemplates, subdomain: s.Spec.ServiceName}
}

// pod is a pod on the node.
type pod struct {
	name       string
	ip         string
	spec       podSpec
	root       string
	containers []*container
}

// container is one container's process.
type container struct {
	pod      *pod
	c        corev1.Container
	name     string
	argv     []string
	env      map[string]string // the resolved environment
	envOrder []string
	mounts   map[string]string // mountPath -> folder
	box      sandbox
	logs     *syncBuffer
	cmd      *exec.Cmd
	done     chan struct{}
	err      error
}

// container returns the pod's container of that name.
func (p *pod) container(t *testing.T, name string) *container {
	t.Helper()
	for _, c := range p.containers {
		if c.name == name {
			return c
		}
	}
	t.Fatalf("pod %s has no container %s", p.name, name)
	return nil
}

// podRoot makes a folder that unprivileged users can traverse but not
// list, as the kubelet's pod folders are invisible to the container.
func podRoot(t *testing.T) string {
	dir, err := os.MkdirTemp("", "sessioncache-pod-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	return dir
}

// ids are the ids a container's process runs with.
func ids(t *testing.T, spec corev1.PodSpec, c corev1.Container, img *dockerImage) (uid, gid uint32, groups []uint32) {
	t.Helper()
	var u, g int64 = -1, -1
	if img != nil {
		u, g = int64(img.uid), int64(img.gid)
	}
	if sc := spec.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			u = *sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			g = *sc.RunAsGroup
		}
		if sc.FSGroup != nil {
			groups = append(groups, uint32(*sc.FSGroup))
		}
		for _, sg := range sc.SupplementalGroups {
			groups = append(groups, uint32(sg))
		}
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			u = *sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			g = *sc.RunAsGroup
		}
	}
	if u < 0 {
		t.Fatalf("container %s: no runAsUser and no image USER: it would run as the image's default user", c.Name)
	}
	if u == 0 {
		t.Fatalf("container %s runs as root", c.Name)
	}
	if g < 0 {
		g = 0
	}
	return uint32(u), uint32(g), groups
}

// testSecrets are the Secrets an operator creates, as the README says.
func testSecrets() map[string]map[string]string {
	return map[string]map[string]string{"sessioncache": {
		"api-keys":       "0123456789abcdef0123456789abcdef\n",
		"secret":         "fedcba9876543210fedcba9876543210",
		"redis-password": "5ecret-redis-password-0123456789",
	}}
}

// run creates a pod and starts its containers.
func (k *kubelet) run(ps podSpec) *pod {
	k.t.Helper()
	p := k.prepare(ps)
	k.start(p)
	return p
}

// bindLine is a Redis or Sentinel configuration's bind directive (in a
// file, or in a script's here-document).
var bindLine = regexp.MustCompile(`(?m)^(\s*)bind .*$`)

// prepare gives the pod an address, sets up its volumes and resolves each
// container's environment and command, without starting anything.
func (k *kubelet) prepare(ps podSpec) *pod {
	t := k.t
	t.Helper()
	spec := ps.template.Spec
	ps.ip = k.net.allocate()
	p := &pod{name: ps.name, ip: ps.ip, spec: ps, root: podRoot(t)}
	var fsGroup *int64
	if spec.SecurityContext != nil {
		fsGroup = spec.SecurityContext.FSGroup
	}

	// Volumes, once for the pod, before any container starts. ConfigMap
	// files name mounted paths (dir /data): they see the mapped folders.
	// A bind to every interface binds the pod's address, and Redis's own
	// connections leave from it (bind-source-addr), as from a pod's
	// interface: a cluster node learns its peers' addresses from them.
	mkdir(t, filepath.Join(p.root, "volumes"), 0o711)
	folders := map[string]string{} // volume -> folder
	podMounts := map[string]string{}
	for _, c := range spec.Containers {
		for _, vm := range c.VolumeMounts {
			if _, ok := folders[vm.Name]; !ok {
				folders[vm.Name] = k.volumeFolder(ps, p, vm.Name)
			}
			if f, ok := podMounts[vm.MountPath]; ok && f != folders[vm.Name] {
				t.Fatalf("pod %s mounts two volumes on %s: not emulated", ps.name, vm.MountPath)
			}
			podMounts[vm.MountPath] = folders[vm.Name]
		}
	}
	rewrite := func(s string) string {
		return mapPaths(bindLine.ReplaceAllString(s, "${1}bind "+p.ip+"\n${1}bind-source-addr "+p.ip), podMounts)
	}
	names := make([]string, 0, len(folders))
	for name := range folders {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		k.setUpVolume(ps, name, folders[name], fsGroup, rewrite)
	}

	for _, c := range spec.Containers {
		p.containers = append(p.containers, k.prepareContainer(p, c, folders))
	}
	return p
}

// volumeFolder is where a volume of the pod lives: a claim's folder
// outlives the pod, for the next pod of the same name.
func (k *kubelet) volumeFolder(ps podSpec, p *pod, volume string) string {
	if _, claim := ps.volume(volume); claim != nil {
		key := claim.Name + "-" + ps.name
		if _, ok := k.claims[key]; !ok {
			k.claims[key] = filepath.Join(k.claimsDir, key)
		}
		return k.claims[key]
	}
	return filepath.Join(p.root, "volumes", volume)
}

func (k *kubelet) prepareContainer(p *pod, c corev1.Container, folders map[string]string) *container {
	t := k.t
	ps := p.spec
	ct := &container{pod: p, c: c, name: c.Name, env: map[string]string{}, mounts: map[string]string{}, logs: &syncBuffer{}}
	uid, gid, groups := ids(t, ps.template.Spec, c, ps.image)
	ct.box = sandbox{hosts: k.net.file, uid: uid, gid: gid, groups: groups}
	if sc := c.SecurityContext; sc != nil {
		ct.box.noNewPrivs = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
		ct.box.readOnlyRoot = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
		ct.box.dropAllCaps = sc.Capabilities != nil && slices.Contains(sc.Capabilities.Drop, "ALL")
	}
	for _, vm := range c.VolumeMounts {
		dir := folders[vm.Name]
		ct.mounts[vm.MountPath] = dir
		v, _ := ps.volume(vm.Name)
		// The kubelet mounts Secrets and ConfigMaps read-only, whatever
		// the volumeMount says.
		if vm.ReadOnly || v != nil && (v.Secret != nil || v.ConfigMap != nil) {
			ct.box.readOnly = append(ct.box.readOnly, dir)
		} else {
			ct.box.writable = append(ct.box.writable, dir)
		}
	}

	// The machine's redis-server stands in for the image's: it must be the
	// same minor version, whose configuration directives these are.
	if tag, ok := strings.CutPrefix(c.Image, "redis:"); ok && ps.image == nil {
		if host := hostRedisVersion(t); majorMinor(host) != majorMinor(tag) {
			t.Errorf("container %s runs %s; the machine's redis-server, which stands in for it, is %s", c.Name, c.Image, host)
		}
	}

	// The environment: the image's, then the container's, in order.
	var imageEnv []string
	if ps.image != nil {
		imageEnv = ps.image.env
	} else {
		imageEnv = []string{"PATH=" + os.Getenv("PATH")}
	}
	for _, kv := range imageEnv {
		name, v, _ := strings.Cut(kv, "=")
		ct.setEnv(name, v)
	}
	for _, e := range c.Env {
		ct.setEnv(e.Name, k.envValue(ps, c, e, ct.env))
	}
	for name, v := range ct.env {
		ct.env[name] = mapPaths(v, ct.mounts)
	}
	if v, ok := ct.env[envListen]; ok {
		ct.env[envListen] = podListen(t, v, p.ip)
	}

	// The process: the container's command, or the image's entrypoint.
	argv := append([]string{}, c.Command...)
	if len(argv) == 0 && ps.image != nil {
		argv = append(argv, ps.image.entrypoint...)
	}
	argv = append(argv, c.Args...)
	for i := range argv {
		argv[i] = mapPaths(argv[i], ct.mounts)
	}
	if ps.image != nil && len(argv) > 0 {
		argv[0] = ps.image.hostPath(argv[0])
	}
	ct.argv = argv

	// The image's working directory: / for the service's (distroless),
	// /data for Redis's.
	ct.box.dir = "/"
	if d, ok := ct.mounts["/data"]; ok && ps.image == nil {
		ct.box.dir = d
	}
	return ct
}

var hostRedis struct {
	once    sync.Once
	version string
}

// hostRedisVersion is the version of the machine's redis-server.
func hostRedisVersion(t *testing.T) string {
	hostRedis.once.Do(func() {
		out, _ := exec.Command("redis-server", "--version").Output()
		if m := regexp.MustCompile(`v=(\d+\.\d+\.\d+)`).FindSubmatch(out); m != nil {
			hostRedis.version = string(m[1])
		}
	})
	if hostRedis.version == "" {
		t.Fatal("redis-server --version names no version")
	}
	return hostRedis.version
}

// majorMinor returns "7.0" of "7.0.15".
func majorMinor(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

// podListen maps a listen address onto the pod's: a wildcard host becomes
// the pod's address; the port stays.
func podListen(t *testing.T, addr, ip string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s=%q: %v", envListen, addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = ip
	}
	return net.JoinHostPort(host, port)
}

// start starts the pod's containers, then publishes its names that need
// no readiness: in a cluster the endpoints controller adds them after the
// pod has its address, so a container's first moments may find its own
// name, and its peers', unresolved.
func (k *kubelet) start(p *pod) {
	k.t.Helper()
	for _, c := range p.containers {
		k.startContainer(c)
	}
	k.net.publish(p.ip, k.dnsNames(p, false)...)
}

// dnsNames are the names that resolve to the pod: the Services that
// select it and, for a StatefulSet's pod, <pod>.<service>; before the pod
// is ready only where the Service publishes not-ready addresses.
func (k *kubelet) dnsNames(p *pod, ready bool) []string {
	var out []string
	for _, s := range k.m.services {
		if !selects(s.Spec.Selector, p.spec.template.Labels) || !(ready || s.Spec.PublishNotReadyAddresses) {
			continue
		}
		out = append(out, s.Name)
		if p.spec.subdomain == s.Name && s.Spec.ClusterIP == corev1.ClusterIPNone {
			out = append(out, p.name+"."+s.Name)
		}
	}
	return out
}

func (k *kubelet) startContainer(c *container) {
	t := k.t
	t.Helper()
	if len(c.argv) == 0 {
		t.Fatalf("container %s has no command, and no image entrypoint is given", c.name)
	}
	c.cmd = c.box.command(context.Background(), c.argv, c.environ())
	c.cmd.Stdout, c.cmd.Stderr = c.logs, c.logs
	c.done = make(chan struct{})
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start %s/%s: %v", c.pod.name, c.name, err)
	}
	cmd, done := c.cmd, c.done
	go func() {
		c.err = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("%s/%s logs:\n%s", c.pod.name, c.name, c.logs)
		}
	})
}

func (c *container) setEnv(name, v string) {
	if _, ok := c.env[name]; !ok {
		c.envOrder = append(c.envOrder, name)
	}
	c.env[name] = v
}

func (c *container) environ() []string {
	var out []string
	for _, name := range c.envOrder {
		out = append(out, name+"="+c.env[name])
	}
	return out
}

// stop kills the container's processes, as the runtime does when a
// container stops.
func (c *container) stop() {
	syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	<-c.done
}

// exited returns the exit code if the process has ended.
func (c *container) exited() (int, bool) {
	select {
	case <-c.done:
		if ee, ok := c.err.(*exec.ExitError); ok {
			return ee.ExitCode(), true
		}
		return 0, true
	default:
		return 0, false
	}
}

// terminate sends SIGTERM, as the kubelet does, and waits for the process
// within the grace period; it kills it after. It reports whether the
// process left in time.
func (c *container) terminate(grace time.Duration) bool {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		c.stop()
		return true
	case <-time.After(grace):
		c.stop()
		return false
	}
}

// delete stops the pod as the kubelet does (SIGTERM, the grace period,
// SIGKILL) and its names stop resolving to it. Its claims stay.
func (k *kubelet) delete(p *pod) {
	k.t.Helper()
	grace := 30 * time.Second
	if g := p.spec.template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	var wg sync.WaitGroup
	for _, c := range p.containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !c.terminate(grace) {
				k.t.Errorf("%s/%s did not exit within the grace period %v of SIGTERM", p.name, c.name, grace)
			}
		}()
	}
	wg.Wait()
	k.net.unpublish(p.ip)
}

// mapPaths replaces every mounted path in s by its folder, the longest
// mount first (/etc/redis-secret before /etc/redis).
func mapPaths(s string, mounts map[string]string) string {
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

// podLoopback gives each redis-cli in an exec probe that names no host
// (it would reach the pod's own 127.0.0.1) the pod's address.
func podLoopback(argv []string, ip string) []string {
	var out []string
	hasHost := slices.Contains(argv, "-h")
	for _, a := range argv {
		if a == "redis-cli" {
			out = append(out, a)
			if !hasHost {
				out = append(out, "-h", ip)
			}
			continue
		}
		var b strings.Builder
		for {
			i := strings.Index(a, "redis-cli")
			if i < 0 {
				b.WriteString(a)
				break
			}
			end := i + len("redis-cli")
			b.WriteString(a[:end])
			a = a[end:]
			segment := a
			if j := strings.IndexAny(a, "|;&\n"); j >= 0 {
				segment = a[:j]
			}
			if !regexp.MustCompile(`(^|\s)-h(\s|$)`).MatchString(segment) {
				b.WriteString(" -h " + ip)
			}
		}
		out = append(out, b.String())
	}
	return out
}

// probe runs one probe of a container once.
func (k *kubelet) probe(c *container, pr *corev1.Probe) error {
	timeout := time.Second
	if pr.TimeoutSeconds > 0 {
		timeout = time.Duration(pr.TimeoutSeconds) * time.Second
	}
	ip := c.pod.ip
	switch {
	case pr.Exec != nil:
		argv := make([]string, len(pr.Exec.Command))
		for i, a := range pr.Exec.Command {
			argv[i] = mapPaths(a, c.mounts)
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := c.box.command(ctx, podLoopback(argv, ip), c.environ())
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("exec %q: %v: %s", pr.Exec.Command, err, out)
		}
		return nil
	case pr.HTTPGet != nil:
		port, err := containerPort(c.c, pr.HTTPGet.Port.String())
		if err != nil {
			return err
		}
		cl := http.Client{Timeout: timeout}
		r, err := cl.Get("http://" + net.JoinHostPort(ip, strconv.Itoa(port)) + pr.HTTPGet.Path)
		if err != nil {
			return err
		}
		r.Body.Close()
		if r.StatusCode < 200 || r.StatusCode >= 400 {
			return fmt.Errorf("GET %s: %d", pr.HTTPGet.Path, r.StatusCode)
		}
		return nil
	case pr.TCPSocket != nil:
		port, err := containerPort(c.c, pr.TCPSocket.Port.String())
		if err != nil {
			return err
		}
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(port)), timeout)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	return fmt.Errorf("probe kind not emulated")
}

// containerPort resolves a probe's port: a number, or the name of a port
// of the container.
func containerPort(c corev1.Container, port string) (int, error) {
	for _, p := range c.Ports {
		if p.Name == port {
			return int(p.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(port); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("container %s has no port %q", c.Name, port)
}

// pollEvery calls cond every interval until it holds, or fails the test
// after d.
func pollEvery(t *testing.T, d, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(interval)
	}
}

// waitFor calls cond every interval until it returns nil, or fails the
// test after d with its last error.
func waitFor(t *testing.T, d, interval time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", d, what, err)
		}
		time.Sleep(interval)
	}
}

// waitReady waits until every container of the pod passes its readiness
// probe (a container without one is ready once started), publishes the
// pod's names, and checks that the liveness probes pass too.
func (k *kubelet) waitReady(p *pod, d time.Duration) {
	t := k.t
	t.Helper()
	waitFor(t, d, 100*time.Millisecond, "pod "+p.name+" to be ready", func() error {
		for _, c := range p.containers {
			if code, ok := c.exited(); ok {
				t.Fatalf("%s/%s exited with code %d:\n%s", p.name, c.name, code, c.logs)
			}
			if c.c.ReadinessProbe == nil {
				continue
			}
			if err := k.probe(c, c.c.ReadinessProbe); err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
		}
		return nil
	})
	k.net.publish(p.ip, k.dnsNames(p, true)...)
	for _, c := range p.containers {
		if c.c.LivenessProbe != nil {
			if err := k.probe(c, c.c.LivenessProbe); err != nil {
				t.Errorf("%s/%s is ready but fails its liveness probe: %v", p.name, c.name, err)
			}
		}
	}
}

// runStatefulSet creates the pods of a StatefulSet as its controller
// does: with OrderedReady (the default) each one ready before the next,
// with Parallel all at once.
func (k *kubelet) runStatefulSet(s *appsv1.StatefulSet) []*pod {
	k.t.Helper()
	pods := make([]*pod, *s.Spec.Replicas)
	for i := range pods {
		pods[i] = k.run(statefulSetPod(s, i))
		if s.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
			k.waitReady(pods[i], time.Minute)
		}
	}
	for _, p := range pods {
		k.waitReady(p, time.Minute)
	}
	return pods
}

// runJob runs a Job's pod to completion, restarting its container after a
// failure (restartPolicy OnFailure) up to the backoff limit.
func (k *kubelet) runJob(j *batchv1.Job) {
	t := k.t
	t.Helper()
	p := k.run(podSpec{name: j.Name + "-0", template: j.Spec.Template})
	if len(p.containers) != 1 {
		t.Fatalf("Job %s: want one container", j.Name)
	}
	c := p.containers[0]
	limit := 6
	if j.Spec.BackoffLimit != nil {
		limit = int(*j.Spec.BackoffLimit)
	}
	for failures := 0; ; failures++ {
		pollEvery(t, 2*time.Minute, 50*time.Millisecond, "Job "+j.Name+" to finish", func() bool {
			_, ok := c.exited()
			return ok
		})
		code, _ := c.exited()
		if code == 0 {
			return
		}
		if j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyOnFailure || failures == limit {
			t.Fatalf("Job %s failed (exit code %d, %d failures):\n%s", j.Name, code, failures+1, c.logs)
		}
		k.startContainer(c)
	}
}

// envValue resolves one variable as the kubelet does.
func (k *kubelet) envValue(ps podSpec, c corev1.Container, e corev1.EnvVar, defined map[string]string) string {
	t := k.t
	if e.ValueFrom == nil {
		return expandEnv(e.Value, defined)
	}
	switch f := e.ValueFrom; {
	case f.SecretKeyRef != nil:
		v, ok := k.secrets[f.SecretKeyRef.Name][f.SecretKeyRef.Key]
		if !ok {
			t.Fatalf("env %s: no key %s in Secret %s", e.Name, f.SecretKeyRef.Key, f.SecretKeyRef.Name)
		}
		return v
	case f.ConfigMapKeyRef != nil:
		v, ok := k.configMaps[f.ConfigMapKeyRef.Name][f.ConfigMapKeyRef.Key]
		if !ok {
			t.Fatalf("env %s: no key %s in ConfigMap %s", e.Name, f.ConfigMapKeyRef.Key, f.ConfigMapKeyRef.Name)
		}
		return v
	case f.FieldRef != nil:
		switch f.FieldRef.FieldPath {
		case "metadata.name":
			return ps.name
		case "metadata.namespace":
			return namespace
		case "status.podIP":
			return ps.ip
		}
		t.Fatalf("env %s: fieldRef %s is not emulated", e.Name, f.FieldRef.FieldPath)
	case f.ResourceFieldRef != nil:
		return resourceFieldValue(t, ps.template.Spec, c, f.ResourceFieldRef)
	}
	t.Fatalf("env %s: valueFrom not emulated", e.Name)
	return ""
}

// expandEnv is Kubernetes's $(VAR) expansion: a variable defined before
// is replaced, $$ is a $, anything else stays as written.
func expandEnv(s string, defined map[string]string) string {
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

// resourceFieldValue is the kubelet's value of a resourceFieldRef: the
// quantity divided by the divisor, rounded up.
func resourceFieldValue(t *testing.T, spec corev1.PodSpec, c corev1.Container, ref *corev1.ResourceFieldSelector) string {
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

// volume finds a volume of the pod, or a claim of its StatefulSet.
func (ps podSpec) volume(name string) (*corev1.Volume, *corev1.PersistentVolumeClaim) {
	for i := range ps.template.Spec.Volumes {
		if ps.template.Spec.Volumes[i].Name == name {
			return &ps.template.Spec.Volumes[i], nil
		}
	}
	for i := range ps.claims {
		if ps.claims[i].Name == name {
			return nil, &ps.claims[i]
		}
	}
	return nil, nil
}

// setUpVolume writes one volume into dir as the kubelet would.
func (k *kubelet) setUpVolume(ps podSpec, name, dir string, fsGroup *int64, rewrite func(string) string) {
	t := k.t
	v, claim := ps.volume(name)
	switch {
	case claim != nil:
		// A fresh file system's root: root's, 0755; the next pod of the
		// same name finds it as the last one left it.
		if _, err := os.Stat(dir); err != nil {
			mkdir(t, dir, 0o755)
		}
		setOwnership(t, dir, fsGroup, false)
	case v == nil:
		t.Fatalf("pod %s mounts %s, which is no volume of it", ps.name, name)
	case v.Secret != nil:
		data, ok := k.secrets[v.Secret.SecretName]
		if !ok {
			t.Fatalf("volume %s: no Secret %s", name, v.Secret.SecretName)
		}
		writeAtomic(t, dir, data, v.Secret.Items, v.Secret.DefaultMode, name)
		setOwnership(t, dir, fsGroup, true)
	case v.ConfigMap != nil:
		data, ok := k.configMaps[v.ConfigMap.Name]
		if !ok {
			t.Fatalf("volume %s: no ConfigMap %s", name, v.ConfigMap.Name)
		}
		rewritten := map[string]string{}
		for key, val := range data {
			rewritten[key] = rewrite(val)
		}
		writeAtomic(t, dir, rewritten, v.ConfigMap.Items, v.ConfigMap.DefaultMode, name)
		setOwnership(t, dir, fsGroup, true)
	case v.EmptyDir != nil:
		mode := os.FileMode(0o777)
		if v.EmptyDir.Medium == corev1.StorageMediumMemory {
			mode |= os.ModeSticky // a tmpfs root
		}
		mkdir(t, dir, mode)
		setOwnership(t, dir, fsGroup, false)
	default:
		t.Fatalf("volume %s: its kind is not emulated", name)
	}
}

func mkdir(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
}

// writeAtomic lays out a Secret or ConfigMap volume as the kubelet's
// AtomicWriter does: the files in a timestamped folder (0755) with their
// mode, ..data pointing at it, and a symlink per file; the volume's root
// is a tmpfs (1777). The process that writes them is root.
func writeAtomic(t *testing.T, dir string, data map[string]string, items []corev1.KeyToPath, defaultMode *int32, volume string) {
	t.Helper()
	mkdir(t, dir, 0o777|os.ModeSticky)
	mode := int32(secretDefaultMode)
	if defaultMode != nil {
		mode = *defaultMode
	}
	type file struct {
		content string
		mode    int32
	}
	files := map[string]file{}
	if len(items) == 0 {
		for key, v := range data {
			files[key] = file{v, mode}
		}
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			t.Fatalf("volume %s: no key %s", volume, it.Key)
		}
		m := mode
		if it.Mode != nil {
			m = *it.Mode
		}
		files[it.Path] = file{v, m}
	}
	ts := time.Now().UTC().Format("..2006_01_02_15_04_05.000000000")
	tsDir := filepath.Join(dir, ts)
	mkdir(t, tsDir, 0o755)
	top := map[string]bool{}
	for path, f := range files {
		full := filepath.Join(tsDir, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(f.content), os.FileMode(f.mode)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, os.FileMode(f.mode)); err != nil {
			t.Fatal(err)
		}
		top[strings.Split(path, "/")[0]] = true
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range top {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// setOwnership is the kubelet's SetVolumeOwnership for fsGroup: every file
// and folder (not the symlinks) group-owned by fsGroup, with group read (and
// write, on a writable volume) added; folders also get setgid and group
// execute.
func setOwnership(t *testing.T, dir string, fsGroup *int64, readOnly bool) {
	t.Helper()
	if fsGroup == nil {
		return
	}
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode()&os.ModeSymlink != 0 {
			return os.Lchown(path, -1, int(*fsGroup))
		}
		if err := os.Lchown(path, -1, int(*fsGroup)); err != nil {
			return err
		}
		mask := os.FileMode(rwMask)
		if readOnly {
			mask = roMask
		}
		if info.IsDir() {
			mask |= os.ModeSetgid | execMask
		}
		return os.Chmod(path, info.Mode()|mask)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// scanLines returns the lines of s that contain sub.
func scanLines(s, sub string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// describe says how a file is owned, for failure messages.
func describe(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return err.Error()
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%s %d:%d", fi.Mode(), st.Uid, st.Gid)
}

func status(u string) int {
	r, err := http.Get(u)
	if err != nil {
		return 0
	}
	r.Body.Close()
	return r.StatusCode
}

// The emulation enforces what it claims: the pod's ids and fsGroup, a
// read-only root, read-only Secret volumes, a writable emptyDir, no
// capabilities, no privilege escalation, and the cluster's names.
func TestKubeletSandbox(t *testing.T) {
	requireRoot(t)
	no := false
	uid, gid, fsGroup := int64(1234), int64(2345), int64(3456)
	tpl := corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		SecurityContext: &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &gid, FSGroup: &fsGroup},
		Containers: []corev1.Container{{
			Name: "check",
			Command: []string{"sh", "-c", `
				echo "ids $(id -u) $(id -g) $(id -G)"
				echo "secret $(cat /etc/secret/secret)"
				touch /tmp/x 2>/dev/null && echo "root writable" || echo "root read-only"
				touch /etc/secret/x 2>/dev/null && echo "secret writable" || echo "secret read-only"
				touch /scratch/x && echo "emptyDir writable"
				grep -E '^(NoNewPrivs|CapBnd|CapEff):' /proc/self/status | tr -s '\t ' ' '
				echo "dns $(getent hosts peer.sandbox | tr -s ' ' ' ')"
			`},
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: &no,
				ReadOnlyRootFilesystem:   func() *bool { b := true; return &b }(),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
			VolumeMounts: []corev1.VolumeMount{{Name: "secret", MountPath: "/etc/secret"}, {Name: "scratch", MountPath: "/scratch"}},
		}},
		Volumes: []corev1.Volume{
			{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sessioncache", DefaultMode: func() *int32 { m := int32(0o440); return &m }(),
				Items: []corev1.KeyToPath{{Key: "secret", Path: "secret"}}}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		},
	}}
	k := newKubelet(t, &manifests{}, testSecrets())
	peer := k.net.allocate()
	k.net.publish(peer, "peer.sandbox")
	p := k.run(podSpec{name: "sandbox", template: tpl})
	c := p.containers[0]
	pollEvery(t, 20*time.Second, 10*time.Millisecond, "the check to finish", func() bool { _, ok := c.exited(); return ok })
	got := strings.Split(strings.TrimSpace(c.logs.String()), "\n")
	for i := range got {
		got[i] = strings.TrimSpace(got[i])
	}
	want := []string{
		"ids 1234 2345 2345 3456",
		"secret " + testSecrets()["sessioncache"]["secret"],
		"root read-only",
		"secret read-only",
		"emptyDir writable",
		"CapEff: 0000000000000000",
		"CapBnd: 0000000000000000",
		"NoNewPrivs: 1",
		"dns " + peer + " peer.sandbox",
	}
	if !slices.Equal(got, want) {
		t.Errorf("inside the pod:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Every overlay run as its manifests describe, Redis included: the Redis
// StatefulSets with their own configuration and start scripts, the
// cluster's Job, and the service's pod, which must read its secrets, reach
// Redis by the names the overlay gives it, pass its probes, serve the API
// with the key of the Secret, and report the image's version and the
// GOMEMLIMIT and GOMAXPROCS its resources give. Then each overlay's Redis
// is disrupted the way it is built to survive: the in-namespace Redis pod
// replaced (sessions kept on its volume), the Sentinel master's pod
// deleted (failover, and the old master back as a replica), every cluster
// node replaced at once at new addresses. Last, SIGTERM: the service drains
// and exits 0 within its grace period.
func TestKubeletRunsEveryOverlay(t *testing.T) {
	requireRoot(t)
	img := buildImage(t)
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			t.Parallel()
			m := renderDir(t, filepath.Join(kubernetesDir, "overlays", overlay))
			k := newKubelet(t, m, testSecrets())
			switch overlay {
			case "in-namespace":
				runInNamespace(t, k, img)
			case "external":
				runExternal(t, k, img)
			case "sentinel":
				runSentinel(t, k, img)
			case "cluster":
				runCluster(t, k, img)
			default:
				t.Fatalf("overlay %s: add it to this test", overlay)
			}
		})
	}
}

// service is the service's pod, serving.
type service struct {
	k    *kubelet
	pod  *pod
	c    *container
	base string
	api  *apiClient
}

// runService runs the Deployment's pod and checks it serves: its probes,
// a login and a rotation, with a revocation where revoke is set, and its
// metrics.
func runService(t *testing.T, k *kubelet, img *dockerImage, revoke bool) *service {
	t.Helper()
	if len(k.m.deployments) != 1 {
		t.Fatalf("want one Deployment, got %d", len(k.m.deployments))
	}
	d := k.m.deployments[0]
	p := k.run(deploymentPod(d, img))
	k.waitReady(p, time.Minute)
	c := p.containers[0]
	port, err := containerPort(c.c, c.c.ReadinessProbe.HTTPGet.Port.String())
	if err != nil {
		t.Fatal(err)
	}
	s := &service{k: k, pod: p, c: c, base: "http://" + net.JoinHostPort(p.ip, strconv.Itoa(port))}
	if code := status(s.base + c.c.ReadinessProbe.HTTPGet.Path); code != http.StatusOK {
		t.Fatalf("%s answers %d once ready, want 200", c.c.ReadinessProbe.HTTPGet.Path, code)
	}
	key, _, _ := strings.Cut(k.secrets["sessioncache"]["api-keys"], "\n")
	s.api = newAPIClient(t, s.base, key)
	tok := s.api.login(alice, "laptop")
	s.api.must(200, "POST", "/v1/tokens/rotate", refreshBody(tok.str("refresh_token")))
	if revoke {
		// The overlay waits for a replica on revocations: its topology
		// must have one. On a loaded machine the acknowledgement can take
		// longer than the replication timeout: the service then answers
		// 503 not_replicated (applied, retry), and the retry waits again.
		waitFor(t, 30*time.Second, 50*time.Millisecond, "a revocation acknowledged by a replica", func() error {
			r := s.api.do("DELETE", "/v1/users/"+alice+"/sessions/"+tok.str("session_id"), "")
			switch {
			case r.status == http.StatusOK:
				return nil
			case r.status == http.StatusServiceUnavailable && strings.Contains(r.raw, "acknowledged"):
				return fmt.Errorf("%d %s", r.status, r.raw)
			}
			t.Fatalf("revocation: %d %s", r.status, r.raw)
			return nil
		})
	}
	metrics := s.api.send("GET", "/metrics", "", nil).raw
	wantVersion := `version="` + img.version + `"`
	if lines := scanLines(metrics, "sessioncache_build_info{"); len(lines) != 1 || !strings.Contains(lines[0], wantVersion) || !strings.HasSuffix(lines[0], " 1") {
		t.Errorf("build info %q, want %s: the image's version", lines, wantVersion)
	}
	memLimit, err := parseGoMemLimit(c.env["GOMEMLIMIT"])
	if err != nil {
		t.Fatalf("GOMEMLIMIT=%q: %v", c.env["GOMEMLIMIT"], err)
	}
	for name, want := range map[string]string{
		"go_gc_gomemlimit_bytes":      strconv.FormatInt(memLimit, 10),
		"go_sched_gomaxprocs_threads": c.env["GOMAXPROCS"],
	} {
		lines := scanLines(metrics, name+" ")
		if len(lines) != 1 {
			// The Go collector shows them only with its runtime/metrics
			// option; the runtime took the values anyway (a malformed
			// GOMEMLIMIT stops it at start).
			t.Logf("/metrics has no %s to compare with %s", name, want)
			continue
		}
		f, _ := strconv.ParseFloat(strings.Fields(lines[0])[1], 64)
		if strconv.FormatFloat(f, 'f', -1, 64) != want {
			t.Errorf("%s = %s, want %s (from the pod's resources)", name, strings.Fields(lines[0])[1], want)
		}
	}
	return s
}

// untilServes retries a login and a rotation (and a revocation, which
// waits for a replica, where revoke is set) until they succeed: the
// service has found its Redis again.
func (s *service) untilServes(t *testing.T, d time.Duration, revoke bool) {
	t.Helper()
	waitFor(t, d, 100*time.Millisecond, "the service to serve again", func() error {
		r := s.api.do("POST", "/v1/sessions", `{"user_id":"`+bob+`","device_id":"phone"}`)
		if r.status != http.StatusCreated {
			return fmt.Errorf("login: %d %s", r.status, r.raw)
		}
		r2 := s.api.do("POST", "/v1/tokens/rotate", refreshBody(r.str("refresh_token")))
		if r2.status != http.StatusOK {
			return fmt.Errorf("rotation: %d %s", r2.status, r2.raw)
		}
		if revoke {
			if r3 := s.api.do("DELETE", "/v1/users/"+bob+"/sessions/"+r.str("session_id"), ""); r3.status != http.StatusOK {
				return fmt.Errorf("revocation: %d %s", r3.status, r3.raw)
			}
		}
		return nil
	})
}

// rotates waits until a token issued before a disruption rotates: the
// session survived it.
func (s *service) rotates(t *testing.T, d time.Duration, tok string) string {
	t.Helper()
	var next string
	pollEvery(t, d, 100*time.Millisecond, "the session from before to rotate", func() bool {
		r := s.api.do("POST", "/v1/tokens/rotate", refreshBody(tok))
		switch r.status {
		case http.StatusOK:
			next = r.str("refresh_token")
			return true
		case http.StatusServiceUnavailable:
			return false
		}
		t.Fatalf("rotating the token from before: %d %s: the session was lost", r.status, r.raw)
		return false
	})
	return next
}

// stop sends SIGTERM, as the kubelet does: the service drains and exits
// 0 within the grace period.
func (s *service) stop(t *testing.T) {
	t.Helper()
	grace := time.Duration(*s.pod.spec.template.Spec.TerminationGracePeriodSeconds) * time.Second
	if !s.c.terminate(grace) {
		t.Fatalf("the service did not exit within %v of SIGTERM", grace)
	}
	if code, _ := s.c.exited(); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
}

// redisClient connects the test to a Redis pod with the Secret's password.
func (k *kubelet) redisClient(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, Password: k.secrets["sessioncache"]["redis-password"], Dialer: k.net.dial, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

// checkRedisPod checks a running Redis pod is the token store its
// redis.conf describes: a password, noeviction, an append-only file on its
// data volume, bound to its pod's address only.
func checkRedisPod(t *testing.T, k *kubelet, p *pod) {
	t.Helper()
	c := k.redisClient(t, net.JoinHostPort(p.ip, "6379"))
	cfg, err := c.ConfigGet(t.Context(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if cfg["maxmemory-policy"] != "noeviction" || cfg["appendonly"] != "yes" || cfg["bind"] != p.ip {
		t.Errorf("%s: maxmemory-policy %q, appendonly %q, bind %q", p.name, cfg["maxmemory-policy"], cfg["appendonly"], cfg["bind"])
	}
	anon := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(p.ip, "6379"), MaxRetries: -1})
	defer anon.Close()
	if err := anon.Ping(t.Context()).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("%s answers without the password: %v", p.name, err)
	}
	// The append-only file is on the data volume: Redis (user 999) can
	// write the claim the kubelet gave to fsGroup.
	data := p.container(t, "redis").mounts["/data"]
	pollEvery(t, 10*time.Second, 10*time.Millisecond, "the append-only file on the data volume of "+p.name, func() bool {
		_, err := os.Stat(filepath.Join(data, "appendonlydir"))
		return err == nil
	})
}

// in-namespace: the StatefulSet's Redis; then its pod replaced, at a new
// address: the service finds it by its Service's name, and the session is
// still there (append-only file on the claim).
func runInNamespace(t *testing.T, k *kubelet, img *dockerImage) {
	if len(k.m.statefulSets) != 1 {
		t.Fatalf("want one Redis StatefulSet, got %d", len(k.m.statefulSets))
	}
	sts := k.m.statefulSets[0]
	redisPods := k.runStatefulSet(sts)
	checkRedisPod(t, k, redisPods[0])
	s := runService(t, k, img, false)
	tok := s.api.login(alice, "tablet").str("refresh_token")
	tok = s.api.must(200, "POST", "/v1/tokens/rotate", refreshBody(tok)).str("refresh_token")

	old := redisPods[0].ip
	k.delete(redisPods[0])
	pollEvery(t, 30*time.Second, 50*time.Millisecond, "/readyz 503 without Redis", func() bool { return status(s.base+"/readyz") == http.StatusServiceUnavailable })
	p := k.run(statefulSetPod(sts, 0))
	if p.ip == old {
		t.Fatal("the new Redis pod has the old address")
	}
	k.waitReady(p, time.Minute)
	s.rotates(t, time.Minute, tok)
	s.stop(t)
}

// external: a managed Redis outside the cluster, at the address of
// redis-endpoint.env, with TLS (a certificate for that name, from the CA
// of the ConfigMap the overlay mounts) and a password.
func runExternal(t *testing.T, k *kubelet, img *dockerImage) {
	env := readEnvFile(t, filepath.Join(kubernetesDir, "overlays", "external", "redis-endpoint.env"))
	host, port := env["REDIS_HOST"], env["REDIS_PORT"]
	ip := k.net.allocate()
	k.net.publish(ip, host)
	ca := newTestCA(t, "managed-redis")
	dir := t.TempDir()
	l := ca.issue(t, dir, "server", host)
	cert, key := l.certFile, l.keyFile
	password := k.secrets["sessioncache"]["redis-password"]
	srv := exec.Command("redis-server", "--port", "0", "--bind", ip, "--tls-port", port,
		"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca.file, "--tls-auth-clients", "no",
		"--requirepass", password, "--maxmemory-policy", "noeviction", "--save", "", "--appendonly", "no", "--dir", dir)
	logs := &syncBuffer{}
	srv.Stdout, srv.Stderr = logs, logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Kill()
		srv.Wait()
		if t.Failed() {
			t.Logf("external Redis logs:\n%s", logs)
		}
	})
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	tlsConfig := &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
	c := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(host, port), Password: password, MaxRetries: -1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := k.net.dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return tls.Client(conn, tlsConfig), nil
		}})
	defer c.Close()
	pollEvery(t, 20*time.Second, 20*time.Millisecond, "the external Redis to answer over TLS", func() bool { return c.Ping(t.Context()).Err() == nil })
	k.configMaps["sessioncache-redis-ca"] = map[string]string{"ca.crt": string(ca.certPEM)}
	s := runService(t, k, img, false)
	s.stop(t)
}

// sentinel: three pods of a Redis and a Sentinel each, started one after
// the other by their own scripts; the service on the failover client.
// Then the master's pod is deleted: the Sentinels promote a replica, the
// service follows (revocations still reach a replica), and the pod, back
// at a new address, joins as a replica of the new master.
func runSentinel(t *testing.T, k *kubelet, img *dockerImage) {
	if len(k.m.statefulSets) != 1 {
		t.Fatalf("want one Redis StatefulSet, got %d", len(k.m.statefulSets))
	}
	sts := k.m.statefulSets[0]
	pods := k.runStatefulSet(sts)
	for _, p := range pods {
		checkRedisPod(t, k, p)
	}
	_, c := k.m.api(t)
	master, _ := envVar(c, envRedisMaster)
	self := func(p *pod) string { return p.name + "." + sts.Spec.ServiceName }
	masterOf := func(p *pod) string {
		sc := redis.NewSentinelClient(&redis.Options{Addr: net.JoinHostPort(p.ip, "26379"), Dialer: k.net.dial, MaxRetries: -1})
		defer sc.Close()
		addr, err := sc.GetMasterAddrByName(t.Context(), master.Value).Result()
		if err != nil || len(addr) != 2 {
			return ""
		}
		return addr[0]
	}
	for _, p := range pods {
		pollEvery(t, 30*time.Second, 50*time.Millisecond, "Sentinel "+p.name+" to know the master and two replicas", func() bool {
			sc := redis.NewSentinelClient(&redis.Options{Addr: net.JoinHostPort(p.ip, "26379"), Dialer: k.net.dial, MaxRetries: -1})
			defer sc.Close()
			replicas, err := sc.Replicas(t.Context(), master.Value).Result()
			return err == nil && len(replicas) == 2 && masterOf(p) == self(pods[0])
		})
	}
	s := runService(t, k, img, true)
	tok := s.api.login(alice, "tablet").str("refresh_token")
	tok = s.api.must(200, "POST", "/v1/tokens/rotate", refreshBody(tok)).str("refresh_token")
	// The rotation reached a replica before the master goes.
	if err := k.redisClient(t, net.JoinHostPort(pods[0].ip, "6379")).Do(t.Context(), "WAIT", 2, 5000).Err(); err != nil {
		t.Fatal(err)
	}

	k.delete(pods[0])
	var promoted string
	pollEvery(t, time.Minute, 100*time.Millisecond, "the Sentinels to promote a replica", func() bool {
		promoted = masterOf(pods[1])
		return promoted != "" && promoted != self(pods[0])
	})
	s.untilServes(t, time.Minute, true)
	tok = s.rotates(t, time.Minute, tok)

	pods[0] = k.run(statefulSetPod(sts, 0))
	k.waitReady(pods[0], time.Minute)
	back := k.redisClient(t, net.JoinHostPort(pods[0].ip, "6379"))
	pollEvery(t, time.Minute, 100*time.Millisecond, pods[0].name+" to replicate the new master", func() bool {
		info, err := back.Info(t.Context(), "replication").Result()
		return err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_host:"+promoted) && strings.Contains(info, "master_link_status:up")
	})
	pollEvery(t, time.Minute, 100*time.Millisecond, "the restarted Sentinel to follow the new master", func() bool { return masterOf(pods[0]) == promoted })
	s.rotates(t, time.Minute, tok)
	s.untilServes(t, time.Minute, true)
	s.stop(t)
}

// cluster: six nodes started at once by their own script, joined by the
// Job; the service on the cluster client, through the nodes' names. Then
// every node is replaced at once, each at a new address: start-redis.sh
// rewrites the addresses nodes.conf kept, the cluster finds itself again,
// and the sessions are still there.
func runCluster(t *testing.T, k *kubelet, img *dockerImage) {
	if len(k.m.statefulSets) != 1 || len(k.m.jobs) != 1 {
		t.Fatalf("want one Redis StatefulSet and one Job, got %d and %d", len(k.m.statefulSets), len(k.m.jobs))
	}
	sts := k.m.statefulSets[0]
	pods := k.runStatefulSet(sts)
	for _, p := range pods {
		checkRedisPod(t, k, p)
	}
	k.runJob(k.m.jobs[0])
	// Every node knows the six at their current addresses, with the slots
	// covered and its replication link up, and sends clients to the nodes'
	// names, which survive a new address.
	name := regexp.MustCompile(`^` + regexp.QuoteMeta(sts.Name) + `-[0-9]+\.` + regexp.QuoteMeta(sts.Spec.ServiceName) + `:6379$`)
	clusterOK := func(pods []*pod) func() error {
		var clients []*redis.Client
		for _, p := range pods {
			clients = append(clients, k.redisClient(t, net.JoinHostPort(p.ip, "6379")))
		}
		return func() error {
			for i, c := range clients {
				info, err := c.ClusterInfo(t.Context()).Result()
				if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:6") {
					return fmt.Errorf("%s: %v %q", pods[i].name, err, info)
				}
				nodes, err := c.ClusterNodes(t.Context()).Result()
				if err != nil {
					return err
				}
				for _, p := range pods {
					if !strings.Contains(nodes, " "+p.ip+":6379@") {
						return fmt.Errorf("%s does not know %s at its address %s:\n%s", pods[i].name, p.name, p.ip, nodes)
					}
				}
				// Replication is up: revocations wait for a replica.
				repl, err := c.Info(t.Context(), "replication").Result()
				if err != nil || !strings.Contains(repl, "master_link_status:up") && !regexp.MustCompile(`slave0:.*state=online`).MatchString(repl) {
					return fmt.Errorf("%s: replication %v %q", pods[i].name, err, repl)
				}
				// CLUSTER SLOTS, deprecated for CLUSTER SHARDS, is still what
				// go-redis reads its topology from: the addresses clients get.
				//lint:ignore SA1019 the reply go-redis routes by
				slots, err := c.ClusterSlots(t.Context()).Result()
				if err != nil || len(slots) != 3 {
					return fmt.Errorf("%s: CLUSTER SLOTS %v %v", pods[i].name, slots, err)
				}
				for _, sl := range slots {
					for _, n := range sl.Nodes {
						if !name.MatchString(n.Addr) {
							return fmt.Errorf("%s: CLUSTER SLOTS sends clients to %s, not to a node's name", pods[i].name, n.Addr)
						}
					}
				}
			}
			return nil
		}
	}
	waitFor(t, time.Minute, 100*time.Millisecond, "the cluster to be ok on every node", clusterOK(pods))
	s := runService(t, k, img, true)
	tok := s.api.login(alice, "tablet").str("refresh_token")
	tok = s.api.must(200, "POST", "/v1/tokens/rotate", refreshBody(tok)).str("refresh_token")
	// The rotation reached a replica before the nodes go.
	for _, p := range pods {
		c := k.redisClient(t, net.JoinHostPort(p.ip, "6379"))
		if repl, err := c.Info(t.Context(), "replication").Result(); err != nil || !strings.Contains(repl, "role:master") {
			continue
		}
		if err := c.Do(t.Context(), "WAIT", 1, 5000).Err(); err != nil {
			t.Fatal(err)
		}
	}

	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Add(1)
		go func() { defer wg.Done(); k.delete(p) }()
	}
	wg.Wait()
	old := map[string]bool{}
	for _, p := range pods {
		old[p.ip] = true
	}
	pods = k.runStatefulSet(sts)
	for _, p := range pods {
		if old[p.ip] {
			t.Fatalf("pod %s came back at its old address", p.name)
		}
	}
	waitFor(t, 2*time.Minute, 100*time.Millisecond, "the cluster to find itself at its new addresses", clusterOK(pods))
	s.rotates(t, time.Minute, tok)
	s.untilServes(t, time.Minute, true)
	s.stop(t)
}

// Without fsGroup the kubelet leaves the Secret's files root's, whatever
// their mode: the service (user 65532) cannot read them and exits 2. This
// is the bug of the manifest before this test: it must stay caught.
func TestKubeletSecretsNeedFSGroup(t *testing.T) {
	requireRoot(t)
	img := buildImage(t)
	m := renderDir(t, filepath.Join(kubernetesDir, "overlays", "in-namespace"))
	d := m.deployments[0].DeepCopy()
	if d.Spec.Template.Spec.SecurityContext.FSGroup == nil {
		t.Fatal("the Deployment sets no fsGroup")
	}
	d.Spec.Template.Spec.SecurityContext.FSGroup = nil
	k := newKubelet(t, m, testSecrets())
	c := k.run(deploymentPod(d, img)).containers[0]
	pollEvery(t, 20*time.Second, 10*time.Millisecond, "the service to exit", func() bool {
		_, ok := c.exited()
		return ok
	})
	if code, _ := c.exited(); code != exitConfig || !strings.Contains(c.logs.String(), "permission denied") {
		t.Errorf("without fsGroup: exit code %d, logs %s; want %d and permission denied", code, c.logs, exitConfig)
	}
	var secretFile string
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if strings.HasSuffix(e.Name, "_FILE") {
			secretFile = c.env[e.Name]
			break
		}
	}
	if got := describe(secretFile); !strings.HasSuffix(got, " 0:0") {
		t.Errorf("a Secret file without fsGroup is %s, want root's", got)
	}
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
