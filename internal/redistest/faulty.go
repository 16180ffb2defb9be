package redistest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/redisstore"
)

// Faulty returns a client of b's server (or cluster) whose every connection
// runs through a fault proxy that asks rule about each command (see Proxy).
// The client has go-redis's defaults, MaxRetries 3 included, so a dropped
// reply is retried on a new connection, as in production. On a cluster,
// every node gets a proxy of its own, through the client's Dialer.
func (b *Backend) Faulty(tb testing.TB, rule func(args []string) Fault) redis.UniversalClient {
	tb.Helper()
	c, _ := b.faulty(tb, rule)
	return c
}

// FaultyStore is the set-up of a lost-reply test: a store (NewStore, under
// b's prefix) whose client reaches b's servers through fault proxies that
// ask rule about each command (Faulty), and those proxies. The client keeps
// go-redis's defaults, MaxRetries 3 included, so that a reply a proxy drops
// is retried on a new connection with the same arguments, as in
// production. The store's scripts are loaded (Ping) before it returns.
func (b *Backend) FaultyStore(tb testing.TB, opt redisstore.Options, rule func(args []string) Fault) (*Store, *Faults) {
	tb.Helper()
	c, faults := b.faulty(tb, rule)
	opt.KeyPrefix = b.Prefix
	s := NewStore(tb, c, opt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		tb.Fatalf("Ping through the fault proxy: %v", err)
	}
	return s, faults
}

// Faults are the fault proxies between one client and a backend's servers,
// one a server.
type Faults struct {
	tb      testing.TB
	rule    func(args []string) Fault
	mu      sync.Mutex
	proxies map[string]*Proxy
}

// Stats sums the counters of every proxy.
func (f *Faults) Stats() ProxyStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	var sum ProxyStats
	for _, p := range f.proxies {
		s := p.Stats()
		sum.Conns += s.Conns
		sum.Commands += s.Commands
		sum.Dropped += s.Dropped
		sum.ResetRequest += s.ResetRequest
	}
	return sum
}

// proxy returns the proxy in front of addr, started on first use.
func (f *Faults) proxy(addr string) *Proxy {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.proxies[addr]
	if !ok {
		p = StartProxy(f.tb, addr, ProxyConfig{})
		p.SetRule(f.rule)
		f.proxies[addr] = p
	}
	return p
}

func (b *Backend) faulty(tb testing.TB, rule func(args []string) Fault) (redis.UniversalClient, *Faults) {
	tb.Helper()
	f := &Faults{tb: tb, rule: rule, proxies: map[string]*Proxy{}}
	var c redis.UniversalClient
	switch b.Kind {
	case Mini:
		c = redis.NewClient(&redis.Options{Addr: f.proxy(b.Mini.Addr()).Addr})
	case Real:
		c = redis.NewClient(&redis.Options{Addr: f.proxy(b.Client.(*redis.Client).Options().Addr).Addr})
	case Cluster:
		var d net.Dialer
		c = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: b.Client.(*redis.ClusterClient).Options().Addrs,
			Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return d.DialContext(ctx, network, f.proxy(addr).Addr)
			},
		})
	default:
		tb.Fatalf("Faulty: unknown backend %q", b.Kind)
	}
	tb.Cleanup(func() { c.Close() })
	return c, f
}
