package kubelet

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/sessioncache/sessioncache/internal/servicetest"
)

// Pod is a pod on the node.
type Pod struct {
	Name       string
	IP         string
	Spec       PodSpec // zero for a pod the kubelet did not make (Compose's)
	Root       string  // the pod's folder, which its containers cannot list
	Containers []*Container
}

// Container is one container's process.
type Container struct {
	Pod    *Pod
	Spec   corev1.Container // zero for a container the kubelet did not make
	Name   string
	Argv   []string
	Env    map[string]string // the resolved environment
	Mounts map[string]string // mountPath -> folder
	Box    Sandbox
	Logs   *servicetest.Buffer

	envOrder []string
	cmd      *exec.Cmd
	done     chan struct{}
	err      error
}

// NewPod gives a pod an address and a folder, with no container yet: for
// a runtime other than the kubelet, which adds containers itself.
func (k *Kubelet) NewPod(name string) *Pod {
	return &Pod{Name: name, IP: k.Net.Allocate(), Root: podRoot(k.t)}
}

// NewContainer returns a container of the pod, not started, with an empty
// environment and no mounts.
func (p *Pod) NewContainer(name string) *Container {
	return &Container{Pod: p, Name: name, Env: map[string]string{}, Mounts: map[string]string{}, Logs: &servicetest.Buffer{}}
}

// Container returns the pod's container of that name.
func (p *Pod) Container(t *testing.T, name string) *Container {
	t.Helper()
	for _, c := range p.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("pod %s has no container %s", p.Name, name)
	return nil
}

// Folder makes a folder in the pod's own, with mode: a volume that a
// runtime other than the kubelet sets up.
func (p *Pod) Folder(t *testing.T, name string, mode os.FileMode) string {
	t.Helper()
	dir := filepath.Join(p.Root, name)
	mkdir(t, dir, mode)
	return dir
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
func ids(t *testing.T, spec corev1.PodSpec, c corev1.Container, img *Image) (uid, gid uint32, groups []uint32) {
	t.Helper()
	var u, g int64 = -1, -1
	if img != nil {
		u, g = int64(img.UID), int64(img.GID)
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

// Run creates a pod and starts its containers.
func (k *Kubelet) Run(ps PodSpec) *Pod {
	k.t.Helper()
	p := k.Prepare(ps)
	k.Start(p)
	return p
}

// bindLine is a Redis or Sentinel configuration's bind directive (in a
// file, or in a script's here-document).
var bindLine = regexp.MustCompile(`(?m)^(\s*)bind .*$`)

// Prepare gives the pod an address, sets up its volumes and resolves each
// container's environment and command, without starting anything.
func (k *Kubelet) Prepare(ps PodSpec) *Pod {
	t := k.t
	t.Helper()
	spec := ps.Template.Spec
	p := k.NewPod(ps.Name)
	ps.ip = p.IP
	p.Spec = ps
	var fsGroup *int64
	if spec.SecurityContext != nil {
		fsGroup = spec.SecurityContext.FSGroup
	}

	// Volumes, once for the pod, before any container starts. ConfigMap
	// files name mounted paths (dir /data): they see the mapped folders.
	// A bind to every interface binds the pod's address, and Redis's own
	// connections leave from it (bind-source-addr), as from a pod's
	// interface: a cluster node learns its peers' addresses from them.
	mkdir(t, filepath.Join(p.Root, "volumes"), 0o711)
	folders := map[string]string{} // volume -> folder
	podMounts := map[string]string{}
	for _, c := range spec.Containers {
		for _, vm := range c.VolumeMounts {
			if _, ok := folders[vm.Name]; !ok {
				folders[vm.Name] = k.volumeFolder(ps, p, vm.Name)
			}
			if f, ok := podMounts[vm.MountPath]; ok && f != folders[vm.Name] {
				t.Fatalf("pod %s mounts two volumes on %s: not emulated", ps.Name, vm.MountPath)
			}
			podMounts[vm.MountPath] = folders[vm.Name]
		}
	}
	rewrite := func(s string) string {
		return MapPaths(bindLine.ReplaceAllString(s, "${1}bind "+p.IP+"\n${1}bind-source-addr "+p.IP), podMounts)
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
		p.Containers = append(p.Containers, k.prepareContainer(p, c, folders))
	}
	return p
}

// volumeFolder is where a volume of the pod lives: a claim's folder
// outlives the pod, for the next pod of the same name.
func (k *Kubelet) volumeFolder(ps PodSpec, p *Pod, volume string) string {
	if _, claim := ps.volume(volume); claim != nil {
		key := claim.Name + "-" + ps.Name
		if _, ok := k.claims[key]; !ok {
			k.claims[key] = filepath.Join(k.claimsDir, key)
		}
		return k.claims[key]
	}
	return filepath.Join(p.Root, "volumes", volume)
}

func (k *Kubelet) prepareContainer(p *Pod, c corev1.Container, folders map[string]string) *Container {
	t := k.t
	ps := p.Spec
	ct := p.NewContainer(c.Name)
	ct.Spec = c
	uid, gid, groups := ids(t, ps.Template.Spec, c, ps.Image)
	ct.Box = Sandbox{Hosts: k.Net.HostsFile(), UID: uid, GID: gid, Groups: groups}
	if sc := c.SecurityContext; sc != nil {
		ct.Box.NoNewPrivs = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
		ct.Box.ReadOnlyRoot = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
		ct.Box.DropAllCaps = sc.Capabilities != nil && slices.Contains(sc.Capabilities.Drop, "ALL")
	}
	for _, vm := range c.VolumeMounts {
		dir := folders[vm.Name]
		ct.Mounts[vm.MountPath] = dir
		v, _ := ps.volume(vm.Name)
		// The kubelet mounts Secrets and ConfigMaps read-only, whatever
		// the volumeMount says.
		if vm.ReadOnly || v != nil && (v.Secret != nil || v.ConfigMap != nil) {
			ct.Box.ReadOnly = append(ct.Box.ReadOnly, dir)
		} else {
			ct.Box.Writable = append(ct.Box.Writable, dir)
		}
	}

	// The machine's redis-server stands in for the image's: it must be the
	// same minor version, whose configuration directives these are.
	if tag, ok := strings.CutPrefix(c.Image, "redis:"); ok && ps.Image == nil {
		if host := hostRedisVersion(t); majorMinor(host) != majorMinor(tag) {
			t.Errorf("container %s runs %s; the machine's redis-server, which stands in for it, is %s", c.Name, c.Image, host)
		}
	}

	// The environment: the image's, then the container's, in order.
	var imageEnv []string
	if ps.Image != nil {
		imageEnv = ps.Image.Env
	} else {
		imageEnv = []string{"PATH=" + os.Getenv("PATH")}
	}
	for _, kv := range imageEnv {
		name, v, _ := strings.Cut(kv, "=")
		ct.SetEnv(name, v)
	}
	for _, e := range c.Env {
		ct.SetEnv(e.Name, k.envValue(ps, c, e, ct.Env))
	}
	ct.Localize()

	// The process: the container's command, or the image's entrypoint.
	argv := append([]string{}, c.Command...)
	if len(argv) == 0 && ps.Image != nil {
		argv = append(argv, ps.Image.Entrypoint...)
	}
	argv = append(argv, c.Args...)
	for i := range argv {
		argv[i] = MapPaths(argv[i], ct.Mounts)
	}
	if ps.Image != nil && len(argv) > 0 {
		argv[0] = ps.Image.HostPath(argv[0])
	}
	ct.Argv = argv

	// The image's working directory: / for the service's (distroless),
	// /data for Redis's.
	ct.Box.Dir = "/"
	if d, ok := ct.Mounts["/data"]; ok && ps.Image == nil {
		ct.Box.Dir = d
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

// Start starts the pod's containers, then publishes its names that need
// no readiness: in a cluster the endpoints controller adds them after the
// pod has its address, so a container's first moments may find its own
// name, and its peers', unresolved.
func (k *Kubelet) Start(p *Pod) {
	k.t.Helper()
	for _, c := range p.Containers {
		k.StartContainer(c)
	}
	k.Net.Publish(p.IP, k.dnsNames(p, false)...)
}

// StartContainer starts (or restarts) one container. It is killed when
// the test ends, and its logs shown if the test failed.
func (k *Kubelet) StartContainer(c *Container) {
	t := k.t
	t.Helper()
	if len(c.Argv) == 0 {
		t.Fatalf("container %s has no command, and no image entrypoint is given", c.Name)
	}
	c.cmd = c.Box.Command(context.Background(), c.Argv, c.environ())
	c.cmd.Stdout, c.cmd.Stderr = c.Logs, c.Logs
	c.done = make(chan struct{})
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start %s/%s: %v", c.Pod.Name, c.Name, err)
	}
	cmd, done := c.cmd, c.done
	go func() {
		c.err = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("%s/%s logs:\n%s", c.Pod.Name, c.Name, c.Logs)
		}
	})
}

// SetEnv sets a variable of the container's environment, after those set
// before (or in its place).
func (c *Container) SetEnv(name, v string) {
	if _, ok := c.Env[name]; !ok {
		c.envOrder = append(c.envOrder, name)
	}
	c.Env[name] = v
}

// Localize maps the container's environment onto this machine: mounted
// paths onto their folders, and a listen address on every interface
// (0.0.0.0:8080, :8080, [::]:8080) onto the pod's address.
func (c *Container) Localize() {
	for name, v := range c.Env {
		c.Env[name] = podListen(MapPaths(v, c.Mounts), c.Pod.IP)
	}
}

func (c *Container) environ() []string {
	var out []string
	for _, name := range c.envOrder {
		out = append(out, name+"="+c.Env[name])
	}
	return out
}

// Exec returns argv run in the container's sandbox with its environment,
// as an exec probe or a health check runs: mounted paths mapped, and
// redis-cli sent to the pod's address.
func (c *Container) Exec(ctx context.Context, argv []string) *exec.Cmd {
	mapped := make([]string, len(argv))
	for i, a := range argv {
		mapped[i] = MapPaths(a, c.Mounts)
	}
	return c.Box.Command(ctx, podLoopback(mapped, c.Pod.IP), c.environ())
}

// stop kills the container's processes, as the runtime does when a
// container stops.
func (c *Container) stop() {
	syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	<-c.done
}

// Exited returns the exit code if the process has ended.
func (c *Container) Exited() (int, bool) {
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

// Terminate sends SIGTERM, as the kubelet does, and waits for the process
// within the grace period; it kills it after. It reports whether the
// process left in time.
func (c *Container) Terminate(grace time.Duration) bool {
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

// Delete stops the pod as the kubelet does (SIGTERM, the grace period,
// SIGKILL) and its names stop resolving to it. Its claims stay.
func (k *Kubelet) Delete(p *Pod) {
	k.t.Helper()
	grace := 30 * time.Second
	if g := p.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	var wg sync.WaitGroup
	for _, c := range p.Containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !c.Terminate(grace) {
				k.t.Errorf("%s/%s did not exit within the grace period %v of SIGTERM", p.Name, c.Name, grace)
			}
		}()
	}
	wg.Wait()
	k.Net.Unpublish(p.IP)
}
