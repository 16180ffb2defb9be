package redistest

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Faulty returns a client of b's server (or cluster) whose every connection
// runs through a fault proxy that asks rule about each command (see Proxy).
// The client has go-redis's defaults, MaxRetries 3 included, so a dropped
// reply is retried on a new connection, as in production. On a cluster,
// every node gets a proxy of its own, through the client's Dialer.
func (b *Backend) Faulty(tb testing.TB, rule func(args []string) Fault) redis.UniversalClient {
	tb.Helper()
	var c redis.UniversalClient
	switch b.Kind {
	case Mini:
		c = redis.NewClient(&redis.Options{Addr: proxied(tb, b.Mini.Addr(), rule).Addr})
	case Real:
		c = redis.NewClient(&redis.Options{Addr: proxied(tb, b.Client.(*redis.Client).Options().Addr, rule).Addr})
	case Cluster:
		var mu sync.Mutex
		proxies := map[string]*Proxy{}
		var d net.Dialer
		c = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: b.Client.(*redis.ClusterClient).Options().Addrs,
			Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
				mu.Lock()
				p, ok := proxies[addr]
				if !ok {
					p = proxied(tb, addr, rule)
					proxies[addr] = p
				}
				mu.Unlock()
				return d.DialContext(ctx, network, p.Addr)
			},
		})
	default:
		tb.Fatalf("Faulty: unknown backend %q", b.Kind)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func proxied(tb testing.TB, addr string, rule func(args []string) Fault) *Proxy {
	p := StartProxy(tb, addr, ProxyConfig{})
	p.SetRule(rule)
	return p
}
