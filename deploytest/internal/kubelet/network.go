package kubelet

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
)

// Network is the pod network and the cluster's DNS.
//
// The hosts file is bind-mounted into every container, so it must stay the
// same inode, and processes read it at any moment: it is never rewritten.
// A name's line is appended (one write, which readers see whole: the file's
// size grows after its bytes are in place), and removed by turning its
// first byte into '#' (one byte). No reader ever sees a half-written file.
type Network struct {
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

func newNetwork(t *testing.T) *Network {
	t.Helper()
	n := &Network{t: t}
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

// HostsFile is the file every container sees as /etc/hosts.
func (n *Network) HostsFile() string { return n.file }

func (n *Network) append(text string) int64 {
	off := n.size
	if _, err := n.f.WriteAt([]byte(text), off); err != nil {
		n.t.Fatal(err)
	}
	n.size += int64(len(text))
	return off
}

// Allocate returns a pod address never given before.
func (n *Network) Allocate() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.last++
	if n.last > 254 {
		n.t.Fatal("the pod network ran out of addresses")
	}
	return n.prefix + strconv.Itoa(n.last)
}

// Publish makes names (and their cluster domain forms) resolve to ip.
func (n *Network) Publish(ip string, names ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, name := range names {
		for _, fqdn := range []string{name, name + "." + Namespace + ".svc.cluster.local"} {
			if slices.ContainsFunc(n.lines, func(l hostsLine) bool { return l.ip == ip && l.name == fqdn && !l.removed }) {
				continue
			}
			off := n.append(ip + "\t" + fqdn + "\n")
			n.lines = append(n.lines, hostsLine{ip: ip, name: fqdn, offset: off})
		}
	}
}

// Unpublish removes ip from every name: its pod is gone.
func (n *Network) Unpublish(ip string) {
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
func (n *Network) resolve(host string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range n.lines {
		if l.name == host && !l.removed {
			return l.ip
		}
	}
	return host
}

// Dial connects the test's own clients through the cluster's DNS.
func (n *Network) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, net.JoinHostPort(n.resolve(host), port))
}
