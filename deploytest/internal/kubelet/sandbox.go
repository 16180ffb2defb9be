package kubelet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sandbox is how a container's processes run.
type Sandbox struct {
	Hosts        string // mounted on /etc/hosts: Network.HostsFile
	UID, GID     uint32
	Groups       []uint32
	NoNewPrivs   bool
	DropAllCaps  bool
	ReadOnlyRoot bool
	Writable     []string // volume folders, writable under a read-only root
	ReadOnly     []string // volume folders mounted read-only
	Dir          string   // the working directory
}

// Command returns argv run in the sandbox: unshare gives it a mount
// namespace, where the hosts file and the volumes are bind-mounted and the
// root made read-only; setpriv drops to the container's ids, capabilities
// and privileges, and kills it if the test dies. Cancelling ctx kills the
// process and whatever it started.
func (s *Sandbox) Command(ctx context.Context, argv, env []string) *exec.Cmd {
	bins := map[string]string{}
	for _, b := range []string{"unshare", "setpriv", "mount", "sh"} {
		p, err := exec.LookPath(b)
		if err != nil {
			panic(err) // RequireRoot checked
		}
		bins[b] = p
	}
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	mount := bins["mount"]
	var sc strings.Builder
	sc.WriteString("set -eu\n")
	fmt.Fprintf(&sc, "%s --bind %s /etc/hosts\n", mount, q(s.Hosts))
	for _, d := range s.Writable {
		fmt.Fprintf(&sc, "%s --bind %s %s\n", mount, q(d), q(d))
	}
	for _, d := range s.ReadOnly {
		fmt.Fprintf(&sc, "%s --bind %s %s\n%s -o remount,bind,ro %s\n", mount, q(d), q(d), mount, q(d))
	}
	if s.ReadOnlyRoot {
		fmt.Fprintf(&sc, "%s -o remount,bind,ro /\n", mount)
		if isMountPoint("/dev/shm") {
			fmt.Fprintf(&sc, "%s -o remount,bind,ro /dev/shm\n", mount)
		}
	}
	priv := []string{bins["setpriv"], fmt.Sprintf("--reuid=%d", s.UID), fmt.Sprintf("--regid=%d", s.GID)}
	if len(s.Groups) == 0 {
		priv = append(priv, "--clear-groups")
	} else {
		var gs []string
		for _, g := range s.Groups {
			gs = append(gs, strconv.Itoa(int(g)))
		}
		priv = append(priv, "--groups="+strings.Join(gs, ","))
	}
	if s.NoNewPrivs {
		priv = append(priv, "--no-new-privs")
	}
	if s.DropAllCaps {
		priv = append(priv, "--bounding-set=-all", "--inh-caps=-all")
	}
	priv = append(priv, "--pdeathsig=KILL", "--")
	fmt.Fprintf(&sc, "exec %s \"$@\"\n", strings.Join(priv, " "))
	args := append([]string{"--mount", "--propagation", "private", "--", bins["sh"], "-c", sc.String(), "sh"}, argv...)
	cmd := exec.CommandContext(ctx, bins["unshare"], args...)
	cmd.Env = env
	cmd.Dir = s.Dir
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
