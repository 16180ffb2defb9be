package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// replicationLag is the one-way delay injected on the links from the
// master to its replicas: the replicas run that far behind, as a replica
// in another zone or under load does. What is in flight when the master
// dies is lost.
const replicationLag = 30 * time.Millisecond

// TestSentinelFailover runs a master with two replicas and three sentinels
// on loopback, revokes sessions and rotates tokens through
// redis.NewFailoverClient, and kills the master with SIGKILL. The store
// must carry on against the promoted replica without a restart. Then every
// revoked token is validated on the new master: one that validates again
// is a lost revocation. With RevocationReplicas=1 (WAIT after every
// revocation) no acknowledged revocation may be lost; without it the
// revocations in flight on the replication links are.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	for _, replicas := range []int{0, 1} {
		t.Run(fmt.Sprintf("RevocationReplicas=%d", replicas), func(t *testing.T) {
			t.Parallel()
			sentinelFailover(t, replicas)
		})
	}
}

func sentinelFailover(t *testing.T, revocationReplicas int) {
	master := startServer(t, "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
	var links []*redistest.Proxy
	for i := 0; i < 2; i++ {
		link := redistest.StartProxy(t, master.Addr, redistest.ProxyConfig{Raw: true, Delay: replicationLag})
		links = append(links, link)
		host, port, _ := net.SplitHostPort(link.Addr)
		startServer(t, "--replicaof", host, port)
	}
	// A failover-timeout long enough that no sentinel "fixes" the replicas
	// to bypass the lagging links before the test kills the master.
	sen := redistest.StartSentinels(t, master.Addr, 2, redistest.SentinelConfig{FailoverTimeout: 20 * time.Second})

	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: sen.Name, SentinelAddrs: sen.Addrs})
	t.Cleanup(func() { c.Close() })
	st := wrap(t, c, redisstore.Options{KeyPrefix: redistest.NewPrefix(), RevocationReplicas: revocationReplicas})
	ctx := bg(t)
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	// Sessions to revoke, on both replicas before the test starts.
	toks := tokensOf(issueMany(t, st, pick(3000, 20000), 16))
	admin := master.Client(t)
	conn := admin.Conn()
	if err := conn.Set(ctx, "sentinel-test-marker", "1", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Do(ctx, "wait", 2, 10000).Int(); err != nil || n != 2 {
		t.Fatalf("WAIT 2: %d, %v", n, err)
	}
	conn.Close()

	w := startWorkload(t, st, 4, 5*time.Second)
	w.waitOK(t, 200, 30*time.Second)

	// Revokers go through toks in order, recording every outcome.
	type result struct {
		class string
		n     int
		end   time.Time
	}
	results := make([]result, len(toks))
	var next, acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := int(next.Add(1) - 1)
				if i >= len(toks) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				n, err := st.RevokeToken(ctx, toks[i])
				cancel()
				results[i] = result{class: errClass(err), n: n, end: time.Now()}
				if err == nil && n == 1 {
					acked.Add(1)
				}
			}
		}()
	}
	waitFor(t, "revocations before the crash", 30*time.Second, func() bool { return acked.Load() >= 100 })

	// The crash: the replication links lose what is in flight, the master dies.
	for _, l := range links {
		l.Cut()
	}
	tKill := time.Now()
	master.Stop()
	var switched time.Duration
	waitFor(t, "a new master", 60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		addr, err := sen.MasterAddr(ctx)
		if err == nil && addr != master.Addr {
			switched = time.Since(tKill)
			return true
		}
		return false
	})
	w.waitOK(t, 500, 60*time.Second)
	close(stop)
	wg.Wait()
	alive, lostAtEnd := w.finish(t, 20*time.Second)
	win := w.around(tKill, time.Time{})

	// Validate every revoked token against the new master.
	var out counter
	attempted := 0
	for i, r := range results {
		if r.end.IsZero() {
			continue
		}
		attempted++
		key := "revoke_" + r.class
		if r.class == "ok" && r.n == 0 {
			key = "revoke_ok_none"
		}
		out.add(key, 1)
		if r.class == "ok" && r.n == 0 {
			continue
		}
		_, err := st.Validate(ctx, toks[i])
		switch {
		case err == nil:
			out.add("lost_"+r.class, 1)
		case !errors.Is(err, redisstore.ErrRevoked):
			t.Errorf("revoked token %d (revocation %s): Validate = %v", i, r.class, err)
		}
		if r.end.Before(tKill) {
			out.add("before_kill", 1)
		}
	}
	name := fmt.Sprintf("sentinel/RevocationReplicas=%d", revocationReplicas)
	figure(t, name, "revocations_acked", out.get("revoke_ok"), "acked_lost", out.get("lost_ok"),
		"not_replicated", out.get("revoke_not_replicated"), "not_replicated_lost", out.get("lost_not_replicated"),
		"revoke_errors", attempted-out.get("revoke_ok")-out.get("revoke_ok_none")-out.get("revoke_not_replicated"),
		"switch_master", ms(switched), "first_ok_after_kill", ms(win.firstOK), "last_error", ms(win.lastError),
		"calls_after_kill", win.calls, "errors_after_kill", win.errors)
	figure(t, name+"/sessions", "sessions", w.n.get("sessions"), "alive", alive,
		"lost", w.n.get("sessions_lost")+lostAtEnd, "revoked", w.n.get("sessions_revoked"))
	t.Logf("revocations: %v; workload errors after the crash: %v", &out, &win.classes)
	if out.get("revoke_ok") < 100 {
		t.Errorf("only %d acknowledged revocations", out.get("revoke_ok"))
	}
	if revocationReplicas == 0 && out.get("lost_ok") == 0 {
		t.Errorf("control: without WAIT no acknowledged revocation was lost; the crash did not hit replication in flight")
	}
	if revocationReplicas > 0 && out.get("lost_ok") != 0 {
		t.Errorf("RevocationReplicas=%d: %d acknowledged revocations lost in the failover", revocationReplicas, out.get("lost_ok"))
	}
	if w.n.get("sessions_revoked") != 0 {
		t.Errorf("%d workload sessions revoked (a retry seen as reuse?)", w.n.get("sessions_revoked"))
	}
}

// issueMany logs in n users with workers goroutines.
func issueMany(t testing.TB, st store, n, workers int) []redisstore.Grant {
	t.Helper()
	grants := make([]redisstore.Grant, n)
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				g, err := st.Issue(ctx, userOf(i), redisstore.Client{})
				if err != nil {
					failed.Add(1)
					continue
				}
				grants[i] = g
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d of %d logins failed", f, n)
	}
	return grants
}

// userOf names the user of the i-th session of issueMany.
func userOf(i int) string { return fmt.Sprintf("many-%d", i) }

func tokensOf(grants []redisstore.Grant) []string {
	out := make([]string, len(grants))
	for i, g := range grants {
		out[i] = g.Token
	}
	return out
}
