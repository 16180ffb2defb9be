package main

// Runs a pod of the rendered manifests the way a kubelet would, without a
// cluster: the container's process under the pod's runAsUser, runAsGroup
// and fsGroup (dropping root's privileges), its volumes written as the
// kubelet writes them (a Secret's or ConfigMap's files through ..data
// symlinks, with their defaultMode, root-owned, and with fsGroup
// group-owned by it and group read added), its environment resolved as the
// kubelet resolves it ($(VAR) expansion, secretKeyRef, configMapKeyRef,
// resourceFieldRef with its divisor, fieldRef), in a working directory it
// cannot write.
//
// What a pod has that a process here has not is mapped: each volume's
// mountPath onto the folder that holds it (in the environment, the command
// and the files of ConfigMaps), the pod's own address onto a free loopback
// port, and Services' DNS names onto the addresses of the test's Redis
// processes.

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
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

// kubelet holds what the API server would: Secrets the operator created,
// ConfigMaps (the rendered ones and those the operator creates), and the
// mapping of DNS names onto the test's addresses.
type kubelet struct {
	t          *testing.T
	m          *manifests
	secrets    map[string]map[string]string
	configMaps map[string]map[string]string
	// hosts maps "name:port" (a Service's or a pod's DNS name) onto a
	// loopback address, for the Redis URL.
	hosts map[string]string
	// configRewrite changes a ConfigMap file's content for the pod's
	// network (port and bind address): a container binds its pod's address.
	configRewrite func(string) string
}

func newKubelet(t *testing.T, m *manifests, secrets map[string]map[string]string) *kubelet {
	k := &kubelet{t: t, m: m, secrets: secrets, configMaps: map[string]map[string]string{}, hosts: map[string]string{}}
	for _, c := range m.configMaps {
		k.configMaps[c.Name] = c.Data
	}
	return k
}

// pod is a container's process, started by run.
type pod struct {
	name      string
	container string
	argv      []string
	cmd       *exec.Cmd
	logs      *syncBuffer
	done      chan struct{}
	err       error
	root      string            // the pod's folder
	mounts    map[string]string // mountPath -> folder
	env       map[string]string // the resolved environment
	envOrder  []string
	creds     *syscall.Credential
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

// podSpec names a container of a workload's pod template to run.
type podSpec struct {
	name      string // the pod's name (StatefulSet: <name>-<ordinal>)
	template  corev1.PodTemplateSpec
	claims    []corev1.PersistentVolumeClaim // a StatefulSet's volumeClaimTemplates
	container string
	image     *dockerImage // for the service's container; nil for others (the host's binaries stand in)
}

func deploymentPod(d *appsv1.Deployment, img *dockerImage) podSpec {
	return podSpec{name: d.Name + "-0", template: d.Spec.Template, container: d.Spec.Template.Spec.Containers[0].Name, image: img}
}

func statefulSetPod(s *appsv1.StatefulSet, container string) podSpec {
	return podSpec{name: s.Name + "-0", template: s.Spec.Template, claims: s.Spec.VolumeClaimTemplates, container: container}
}

// credentials are the ids the container's process runs with.
func credentials(t *testing.T, spec corev1.PodSpec, c corev1.Container, img *dockerImage) *syscall.Credential {
	t.Helper()
	var uid, gid int64 = -1, -1
	if img != nil {
		uid, gid = int64(img.uid), int64(img.gid)
	}
	groups := []uint32{}
	if sc := spec.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = *sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = *sc.RunAsGroup
		}
		if sc.FSGroup != nil {
			groups = append(groups, uint32(*sc.FSGroup))
		}
		for _, g := range sc.SupplementalGroups {
			groups = append(groups, uint32(g))
		}
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = *sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = *sc.RunAsGroup
		}
	}
	if uid < 0 {
		t.Fatalf("container %s: no runAsUser and no image USER: it would run as the image's default user", c.Name)
	}
	if gid < 0 {
		gid = 0
	}
	if uid == 0 {
		t.Fatalf("container %s runs as root", c.Name)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}
}

// testSecrets are the Secrets an operator creates, as the README says.
func testSecrets() map[string]map[string]string {
	return map[string]map[string]string{"sessioncache": {
		"api-keys":       "0123456789abcdef0123456789abcdef\n",
		"secret":         "fedcba9876543210fedcba9876543210",
		"redis-password": "5ecret-redis-password-0123456789",
	}}
}

// run starts the container and returns at once.
func (k *kubelet) run(ps podSpec) *pod {
	k.t.Helper()
	p := k.prepare(ps)
	k.start(p)
	return p
}

// prepare sets up the container's volumes and resolves its environment
// and command, without starting it.
func (k *kubelet) prepare(ps podSpec) *pod {
	t := k.t
	t.Helper()
	spec := ps.template.Spec
	var c corev1.Container
	found := false
	for _, cc := range spec.Containers {
		if cc.Name == ps.container {
			c, found = cc, true
		}
	}
	if !found {
		t.Fatalf("pod %s has no container %s", ps.name, ps.container)
	}
	p := &pod{name: ps.name, container: c.Name, logs: &syncBuffer{}, done: make(chan struct{}), root: podRoot(t), mounts: map[string]string{}, env: map[string]string{}}
	p.creds = credentials(t, spec, c, ps.image)
	var fsGroup *int64
	if spec.SecurityContext != nil {
		fsGroup = spec.SecurityContext.FSGroup
	}

	// Volumes, as the kubelet sets them up before the container starts.
	// ConfigMap files that name mounted paths (dir /data) see the mapped
	// folders.
	dirs := map[string]string{}
	mkdir(t, filepath.Join(p.root, "volumes"), 0o711)
	for i, vm := range c.VolumeMounts {
		dirs[vm.Name] = filepath.Join(p.root, "volumes", strconv.Itoa(i)+"-"+vm.Name)
		p.mounts[vm.MountPath] = dirs[vm.Name]
	}
	for _, vm := range c.VolumeMounts {
		k.setUpVolume(ps, vm.Name, dirs[vm.Name], fsGroup, p.mapPaths)
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
		p.setEnv(name, v)
	}
	for _, e := range c.Env {
		p.setEnv(e.Name, k.envValue(ps, c, e, p.env))
	}
	for name, v := range p.env {
		p.env[name] = p.mapPaths(v)
	}
	if v, ok := p.env[envListen]; ok {
		p.env[envListen] = freeListen(t, v)
	}
	if v, ok := p.env[envRedisURL]; ok && len(k.hosts) > 0 {
		p.env[envRedisURL] = k.mapRedisURL(v)
	}

	// The process: the image's entrypoint (or the container's command).
	argv := append([]string{}, c.Command...)
	if len(argv) == 0 && ps.image != nil {
		argv = append(argv, ps.image.entrypoint...)
	}
	argv = append(argv, c.Args...)
	for i := range argv {
		argv[i] = p.mapPaths(argv[i])
	}
	if ps.image != nil {
		argv[0] = ps.image.hostPath(argv[0])
	}
	p.argv = argv
	return p
}

// start starts a prepared container.
func (k *kubelet) start(p *pod) {
	t := k.t
	t.Helper()
	if len(p.argv) == 0 {
		t.Fatalf("container %s has no command, and no image entrypoint is given", p.container)
	}
	bin, err := exec.LookPath(p.argv[0])
	if err != nil {
		t.Fatalf("container %s: %v", p.container, err)
	}
	p.cmd = exec.Command(bin, p.argv[1:]...)
	p.cmd.Env = p.environ()
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.creds}
	// The working directory of a distroless image is /: root's, not
	// writable (and readOnlyRootFilesystem besides).
	p.cmd.Dir = filepath.Join(p.root, "workdir")
	if err := os.Mkdir(p.cmd.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s/%s logs:\n%s", p.name, p.container, p.logs)
		}
	})
}

func (p *pod) setEnv(name, v string) {
	if _, ok := p.env[name]; !ok {
		p.envOrder = append(p.envOrder, name)
	}
	p.env[name] = v
}

func (p *pod) environ() []string {
	var out []string
	for _, name := range p.envOrder {
		out = append(out, name+"="+p.env[name])
	}
	return out
}

func (p *pod) stop() {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Kill()
		<-p.done
	}
}

// exited returns the exit code if the process has ended.
func (p *pod) exited() (int, bool) {
	select {
	case <-p.done:
		if ee, ok := p.err.(*exec.ExitError); ok {
			return ee.ExitCode(), true
		}
		return 0, true
	default:
		return 0, false
	}
}

// freeListen maps a listen address onto the pod's own: the same host, a
// free port (the same for the process and its health checks).
func freeListen(t *testing.T, addr string) string {
	t.Helper()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s=%q: %v", envListen, addr, err)
	}
	return net.JoinHostPort(host, strconv.Itoa(redistest.FreePort(t)))
}

// mapPaths replaces every mounted path in s by its folder, the longest
// mount first (/etc/redis-secret before /etc/redis).
func (p *pod) mapPaths(s string) string {
	paths := make([]string, 0, len(p.mounts))
	for mp := range p.mounts {
		paths = append(paths, mp)
	}
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	for _, mp := range paths {
		re := regexp.MustCompile(`(^|[\s"'=:])` + regexp.QuoteMeta(mp) + `(/|$|[\s"'])`)
		s = re.ReplaceAllString(s, "${1}"+p.mounts[mp]+"${2}")
	}
	return s
}

// mapRedisURL replaces each host:port of a Redis URL by its test address.
func (k *kubelet) mapRedisURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		k.t.Fatalf("%s=%q: %v", envRedisURL, raw, err)
	}
	var hosts []string
	for _, h := range strings.Split(u.Host, ",") {
		to, ok := k.hosts[h]
		if !ok {
			k.t.Fatalf("%s names %s, which no Redis of this test answers for (known: %v)", envRedisURL, h, k.hosts)
		}
		hosts = append(hosts, to)
	}
	u.Host = strings.Join(hosts, ",")
	return u.String()
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
			return "default"
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
func (k *kubelet) setUpVolume(ps podSpec, name, dir string, fsGroup *int64, mapPaths func(string) string) {
	t := k.t
	v, claim := ps.volume(name)
	switch {
	case claim != nil:
		// A fresh file system's root: root's, 0755.
		mkdir(t, dir, 0o755)
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
			if k.configRewrite != nil {
				val = k.configRewrite(val)
			}
			rewritten[key] = mapPaths(val)
		}
		data = rewritten
		writeAtomic(t, dir, data, v.ConfigMap.Items, v.ConfigMap.DefaultMode, name)
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
	files := map[string]struct {
		content string
		mode    int32
	}{}
	if len(items) == 0 {
		for key, v := range data {
			files[key] = struct {
				content string
				mode    int32
			}{v, mode}
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
		files[it.Path] = struct {
			content string
			mode    int32
		}{v, m}
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

// listenAddr waits until the service logs where it listens, and returns a
// loopback address to reach it.
func (p *pod) listenAddr(t *testing.T) string {
	t.Helper()
	var addr string
	poll(t, 20*time.Second, p.name+" to listen", func() bool {
		if code, ok := p.exited(); ok {
			t.Fatalf("%s exited with code %d before listening:\n%s", p.name, code, p.logs)
		}
		for _, l := range logLines(p.logs.String()) {
			if l["msg"] == "listening" {
				a, _ := l["addr"].(string)
				_, port, _ := net.SplitHostPort(a)
				addr = net.JoinHostPort("127.0.0.1", port)
				return true
			}
		}
		return false
	})
	return addr
}

// probePath returns the path and the container port of an HTTP probe.
func probePath(t *testing.T, c corev1.Container, pr *corev1.Probe, what string) string {
	t.Helper()
	if pr == nil || pr.HTTPGet == nil {
		t.Fatalf("container %s: no HTTP %s probe", c.Name, what)
	}
	port := pr.HTTPGet.Port.String()
	for _, p := range c.Ports {
		if p.Name == port || strconv.Itoa(int(p.ContainerPort)) == port {
			return pr.HTTPGet.Path
		}
	}
	t.Fatalf("container %s: %s probe on port %s, which it does not expose", c.Name, what, port)
	return ""
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

// Every overlay's service pod, run as its manifest describes against the
// Redis the overlay describes: it must read its secrets, connect, become
// ready on its readiness probe's path, serve the API with the key of the
// Secret, and report the version of the image the base pins and the
// GOMEMLIMIT and GOMAXPROCS its resources give.
func TestKubeletRunsEveryOverlay(t *testing.T) {
	img := buildImage(t)
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			m := renderDir(t, filepath.Join(kubernetesDir, "overlays", overlay))
			k := newKubelet(t, m, testSecrets())
			eps := m.redisEndpoints(t)
			checkRevocation := false
			switch overlay {
			case "in-namespace":
				startInNamespaceRedis(t, k, m, eps)
			case "external":
				startExternalRedis(t, k, eps)
			case "sentinel":
				startSentinelRedis(t, k, m, eps)
				checkRevocation = true
			case "cluster":
				startClusterRedis(t, k, eps)
				checkRevocation = true
			default:
				t.Fatalf("no Redis for overlay %s: add one to this test", overlay)
			}
			runServicePod(t, k, m, img, overlay == "in-namespace", checkRevocation)
		})
	}
}

// runServicePod runs the Deployment's pod and checks it serves.
func runServicePod(t *testing.T, k *kubelet, m *manifests, img *dockerImage, stop, revoke bool) {
	t.Helper()
	d := m.deployments[0]
	c := d.Spec.Template.Spec.Containers[0]
	p := k.run(deploymentPod(d, img))
	base := "http://" + p.listenAddr(t)
	ready := probePath(t, c, c.ReadinessProbe, "readiness")
	poll(t, 30*time.Second, "the readiness probe "+ready+" to answer 200", func() bool {
		if code, ok := p.exited(); ok {
			t.Fatalf("the service exited with code %d", code)
		}
		return status(base+ready) == 200
	})
	if live := probePath(t, c, c.LivenessProbe, "liveness"); status(base+live) != 200 {
		t.Errorf("liveness probe %s: not 200", live)
	}
	// The API with the key of the Secret's file.
	key, _, _ := strings.Cut(k.secrets["sessioncache"]["api-keys"], "\n")
	api := newAPIClient(t, base, key)
	tok := api.login(alice, "laptop")
	api.must(200, "POST", "/v1/tokens/rotate", tokenBody(tok.str("refresh_token")))
	if revoke {
		// The overlay waits for a replica on revocations: its topology
		// must have one.
		api.must(200, "DELETE", "/v1/users/"+alice+"/sessions/"+tok.str("session_id"), "")
	}
	metrics := api.send("GET", "/metrics", "", nil).raw
	wantVersion := `version="` + img.version + `"`
	if lines := scanLines(metrics, "sessioncache_build_info{"); len(lines) != 1 || !strings.Contains(lines[0], wantVersion) || !strings.HasSuffix(lines[0], " 1") {
		t.Errorf("build info %q, want %s: the image's version", lines, wantVersion)
	}
	memLimit, err := parseGoMemLimit(p.env["GOMEMLIMIT"])
	if err != nil {
		t.Fatalf("GOMEMLIMIT=%q: %v", p.env["GOMEMLIMIT"], err)
	}
	for name, want := range map[string]string{
		"go_gc_gomemlimit_bytes":      strconv.FormatInt(memLimit, 10),
		"go_sched_gomaxprocs_threads": p.env["GOMAXPROCS"],
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
	if !stop {
		return
	}
	// SIGTERM, as the kubelet sends it: drained and gone within the grace
	// period.
	grace := time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	p.cmd.Process.Signal(syscall.SIGTERM)
	poll(t, grace, "the service to exit after SIGTERM", func() bool {
		_, ok := p.exited()
		return ok
	})
	if code, _ := p.exited(); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
}

func status(u string) int {
	r, err := http.Get(u)
	if err != nil {
		return 0
	}
	r.Body.Close()
	return r.StatusCode
}

// portRewrite maps a Redis configuration's port and bind address onto the
// pod's: a free loopback port.
func portRewrite(from, to int) func(string) string {
	return func(s string) string {
		s = regexp.MustCompile(`(?m)^port `+strconv.Itoa(from)+`$`).ReplaceAllString(s, "port "+strconv.Itoa(to))
		return regexp.MustCompile(`(?m)^bind .*$`).ReplaceAllString(s, "bind 127.0.0.1")
	}
}

// pingRedis waits until a Redis answers PING with the password, and checks
// it refuses a client without it.
func pingRedis(t *testing.T, addr, password string, p *pod) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, MaxRetries: -1})
	defer c.Close()
	poll(t, 20*time.Second, "Redis on "+addr+" to answer", func() bool {
		if p != nil {
			if code, ok := p.exited(); ok {
				t.Fatalf("Redis exited with code %d", code)
			}
		}
		return c.Ping(context.Background()).Err() == nil
	})
	anon := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer anon.Close()
	if err := anon.Ping(context.Background()).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("Redis on %s answers without the password: %v", addr, err)
	}
}

// startInNamespaceRedis runs the overlay's Redis pod itself: its start
// command, its configuration, its secret and its data volume, as the
// StatefulSet describes them.
func startInNamespaceRedis(t *testing.T, k *kubelet, m *manifests, eps []endpoint) {
	t.Helper()
	if len(m.statefulSets) != 1 || len(eps) != 1 {
		t.Fatalf("want one Redis StatefulSet and one Redis address, got %d and %v", len(m.statefulSets), eps)
	}
	port := redistest.FreePort(t)
	k.configRewrite = portRewrite(eps[0].port, port)
	p := k.run(statefulSetPod(m.statefulSets[0], "redis"))
	k.configRewrite = nil
	addr := "127.0.0.1:" + strconv.Itoa(port)
	pingRedis(t, addr, k.secrets["sessioncache"]["redis-password"], p)
	k.hosts[net.JoinHostPort(eps[0].host, strconv.Itoa(eps[0].port))] = addr
	c := redis.NewClient(&redis.Options{Addr: addr, Password: k.secrets["sessioncache"]["redis-password"]})
	defer c.Close()
	info, err := c.ConfigGet(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if info["maxmemory-policy"] != "noeviction" || info["appendonly"] != "yes" {
		t.Errorf("Redis runs with maxmemory-policy %q, appendonly %q", info["maxmemory-policy"], info["appendonly"])
	}
	// The append-only file is on the data volume: Redis (user 999) can
	// write the claim the kubelet gave to fsGroup.
	data := p.mounts["/data"]
	poll(t, 10*time.Second, "the append-only file on the data volume", func() bool {
		_, err := os.Stat(filepath.Join(data, "appendonlydir"))
		return err == nil
	})
}

// startExternalRedis starts a Redis with TLS and a password, the CA that
// signed its certificate in the ConfigMap the overlay mounts.
func startExternalRedis(t *testing.T, k *kubelet, eps []endpoint) {
	t.Helper()
	ca := newTestCA(t, "redis")
	srv, addr := tlsRedis(t, ca, "no")
	if err := srv.Client(t).ConfigSet(context.Background(), "requirepass", k.secrets["sessioncache"]["redis-password"]).Err(); err != nil {
		t.Fatal(err)
	}
	k.configMaps["sessioncache-redis-ca"] = map[string]string{"ca.crt": string(ca.certPEM)}
	k.hosts[net.JoinHostPort(eps[0].host, strconv.Itoa(eps[0].port))] = addr
}

// startSentinelRedis starts a master with the overlay's Redis settings, a
// replica and a Sentinel for each address of the service's URL, all
// guarded by the Secret's password.
func startSentinelRedis(t *testing.T, k *kubelet, m *manifests, eps []endpoint) {
	t.Helper()
	password := k.secrets["sessioncache"]["redis-password"]
	args := redisArgs(t, m)
	master := redistest.StartServer(t, args...)
	replica := redistest.StartServer(t, append(args, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))...)
	_, c := m.api(t)
	name, _ := envVar(c, envRedisMaster)
	sen := redistest.StartSentinels(t, master.Addr, 1, redistest.SentinelConfig{Name: name.Value, Count: len(eps)})
	ctx := context.Background()
	for _, a := range sen.Addrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: a})
		if err := sc.Set(ctx, name.Value, "auth-pass", password).Err(); err != nil {
			t.Fatal(err)
		}
		sc.Close()
	}
	for _, s := range []*redistest.Server{replica, master} {
		for _, kv := range [][2]string{{"masterauth", password}, {"requirepass", password}} {
			if err := s.Client(t).ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, ep := range eps {
		k.hosts[net.JoinHostPort(ep.host, strconv.Itoa(ep.port))] = sen.Addrs[i]
	}
}

// startClusterRedis starts a cluster of three masters with a replica each,
// guarded by the Secret's password, one seed for each address of the
// service's URL.
func startClusterRedis(t *testing.T, k *kubelet, eps []endpoint) {
	t.Helper()
	password := k.secrets["sessioncache"]["redis-password"]
	tc := redistest.StartCluster(t, 3, 1, 5*time.Second)
	ctx := context.Background()
	for _, n := range tc.Nodes {
		for _, kv := range [][2]string{{"masterauth", password}, {"requirepass", password}} {
			if err := n.Client(t).ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, ep := range eps {
		k.hosts[net.JoinHostPort(ep.host, strconv.Itoa(ep.port))] = tc.Nodes[i%len(tc.Nodes)].Addr
	}
}

// redisArgs are the directives of the overlay's redis.conf as redis-server
// arguments, less those naming the pod's network and files (port, bind,
// dir), which the test's servers set.
func redisArgs(t *testing.T, m *manifests) []string {
	t.Helper()
	conf, ok := redisConfOf(m)
	if !ok {
		t.Fatal("the overlay has no redis.conf")
	}
	return confArgs(conf, "cluster-enabled", "cluster-config-file", "cluster-node-timeout", "cluster-preferred-endpoint-type")
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

// Without fsGroup the kubelet leaves the Secret's files root's, whatever
// their mode: the service (user 65532) cannot read them and exits 2. This
// is the bug of the manifest before this test: it must stay caught.
func TestKubeletSecretsNeedFSGroup(t *testing.T) {
	img := buildImage(t)
	m := renderDir(t, filepath.Join(kubernetesDir, "overlays", "in-namespace"))
	d := m.deployments[0].DeepCopy()
	if d.Spec.Template.Spec.SecurityContext.FSGroup == nil {
		t.Fatal("the Deployment sets no fsGroup")
	}
	d.Spec.Template.Spec.SecurityContext.FSGroup = nil
	k := newKubelet(t, m, testSecrets())
	p := k.run(deploymentPod(d, img))
	poll(t, 20*time.Second, "the service to exit", func() bool {
		_, ok := p.exited()
		return ok
	})
	if code, _ := p.exited(); code != exitConfig || !strings.Contains(p.logs.String(), "permission denied") {
		t.Errorf("without fsGroup: exit code %d, logs %s; want %d and permission denied", code, p.logs, exitConfig)
	}
	var secretFile string
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if strings.HasSuffix(e.Name, "_FILE") {
			secretFile = p.env[e.Name]
			break
		}
	}
	if got := describe(secretFile); !strings.HasSuffix(got, " 0:0") {
		t.Errorf("a Secret file without fsGroup is %s, want root's", got)
	}
}
