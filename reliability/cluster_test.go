package reliability_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// TestClusterFailover starts a cluster of three masters with one replica
// each, rotates tokens of sessions spread over every slot range, and kills
// the master that holds the most of them with SIGKILL. Its replica takes
// over; rotations on its slots must resume through the same ClusterClient,
// and no call may ever see CROSSSLOT. Rotations the dead master
// acknowledged but had not yet replicated are lost: the client logs in
// again (counted, not hidden).
//
// go-redis v9 does not reload a ClusterClient's slot map after connection
// errors, only on MOVED or every ClusterStateReloadInterval (60s by
// default): it keeps sending a dead master's slots to the dead master. The
// default run uses a 1s interval, as a deployment on Cluster must; the long
// run measures the go-redis default too.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		interval time.Duration
		recover  time.Duration
	}{
		{"ClusterStateReloadInterval=1s", time.Second, 30 * time.Second},
	}
	if long() {
		cases = append(cases, struct {
			name     string
			interval time.Duration
			recover  time.Duration
		}{"go-redis defaults", 0, 3 * time.Minute})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { clusterFailover(t, tc.interval, tc.recover) })
	}
}

func clusterFailover(t *testing.T, reloadInterval, recoverWithin time.Duration) {
	tc := redistest.StartCluster(t, 3, 1, time.Second)
	for _, n := range tc.Nodes {
		t.Cleanup(func() { scanServer(t, n) })
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: tc.Addrs(), ClusterStateReloadInterval: reloadInterval})
	t.Cleanup(func() { c.Close() })
	prefix := redistest.NewPrefix()
	st := wrap(t, c, redisstore.Options{KeyPrefix: prefix})
	ctx := bg(t)
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	grants := issueMany(t, st, pick(300, 3000), 8)

	// Which master holds each session.
	home := make(map[string]string) // session id -> master address
	nodes, err := redistest.ClusterNodes(ctx, tc.Nodes[0].Client(t))
	if err != nil {
		t.Fatal(err)
	}
	perMaster := make(map[string]int)
	for _, n := range nodes {
		if !n.Master || len(n.Slots) == 0 {
			continue
		}
		nc := tc.Node(n.Addr).Client(t)
		iter := nc.Scan(ctx, 0, prefix+"*:s:*", 1000).Iterator()
		for iter.Next(ctx) {
			k := iter.Val()
			var id uuid.UUID
			if _, err := base64.RawURLEncoding.Decode(id[:], []byte(k[len(k)-22:])); err == nil {
				home[id.String()] = n.Addr
				perMaster[n.Addr]++
			}
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
	}
	victim := ""
	for addr, n := range perMaster {
		if victim == "" || n > perMaster[victim] {
			victim = addr
		}
	}
	affected := make([]bool, len(grants))
	nAffected := 0
	for i, g := range grants {
		if home[g.SessionID] == "" {
			t.Fatalf("session %d not found on any master", i)
		}
		if home[g.SessionID] == victim {
			affected[i] = true
			nAffected++
		}
	}

	// Rotators: each goroutine owns every workers-th session and rotates
	// them in turn; after an error it presents the same token again.
	type op struct {
		start, end time.Time
		class      string
		affected   bool
	}
	const workers = 16
	var mu sync.Mutex
	var ops []op
	var crossSlot []string
	cur := tokensOf(grants)
	lastOK := make([]time.Time, len(grants))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var out counter
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; ; round++ {
				for i := w; i < len(grants); i += workers {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					start := time.Now()
					var g redisstore.Grant
					var err error
					if cur[i] == "" {
						g, err = st.Issue(ctx, userOf(i), redisstore.Client{})
					} else {
						g, err = st.Rotate(ctx, cur[i], redisstore.Client{})
					}
					cancel()
					o := op{start: start, end: time.Now(), class: errClass(err), affected: affected[i]}
					mu.Lock()
					ops = append(ops, o)
					if err != nil && strings.Contains(err.Error(), "CROSSSLOT") {
						crossSlot = append(crossSlot, err.Error())
					}
					switch {
					case err == nil:
						cur[i], lastOK[i] = g.Token, o.end
					case errors.Is(err, redisstore.ErrUnknown):
						// The promoted replica never saw this token: the
						// rotation that made it was lost. The client logs
						// in again (the same user: the same slot).
						out.add("rotations_lost", 1)
						cur[i] = ""
					case errors.Is(err, redisstore.ErrReused), errors.Is(err, redisstore.ErrRevoked):
						out.add("revoked", 1)
						cur[i] = ""
					}
					mu.Unlock()
				}
			}
		}()
	}
	waitFor(t, "load before the kill", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ops) > 2*len(grants)
	})
	tKill := time.Now()
	tc.Node(victim).Stop()
	// Recovered: every session on the dead master's slots rotated again.
	var allServed time.Duration
	waitFor(t, "every session of the failed master served again", recoverWithin, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i, a := range affected {
			if a && !lastOK[i].After(tKill) {
				return false
			}
		}
		allServed = time.Since(tKill)
		return true
	})
	// Some more load on the new layout, then stop.
	mu.Lock()
	more := len(ops) + len(grants)
	mu.Unlock()
	waitFor(t, "load after the failover", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ops) > more
	})
	close(stop)
	wg.Wait()

	var firstOK time.Duration = -1
	var errsAffected, errsOther, callsAfter counter
	for _, o := range ops {
		if o.end.Before(tKill) {
			continue
		}
		callsAfter.add("calls", 1)
		if o.class == "ok" {
			if o.affected && !o.start.Before(tKill) && (firstOK < 0 || o.end.Sub(tKill) < firstOK) {
				firstOK = o.end.Sub(tKill)
			}
			continue
		}
		if o.affected {
			errsAffected.add(o.class, 1)
		} else {
			errsOther.add(o.class, 1)
		}
	}
	// Every session not lost still validates.
	invalid := 0
	for i, tok := range cur {
		if tok == "" {
			continue
		}
		if _, err := st.Validate(ctx, tok); err != nil {
			// A rotation whose reply was an error may have happened: present
			// the token again, within the grace window.
			if g, err := st.Rotate(ctx, tok, redisstore.Client{}); err == nil {
				if _, err := st.Validate(ctx, g.Token); err == nil {
					continue
				}
			}
			invalid++
			t.Logf("session %d: %v", i, err)
		}
	}
	sum := func(c *counter) int {
		n := 0
		for _, v := range c.m {
			n += v
		}
		return n
	}
	figure(t, "cluster_failover/"+strings.ReplaceAll(t.Name()[len("TestClusterFailover/"):], " ", "_"), "sessions", len(grants), "on_failed_master", nAffected,
		"first_ok_on_failed_slots", ms(firstOK), "all_served", ms(allServed), "calls_after_kill", callsAfter.get("calls"),
		"errors_failed_slots", sum(&errsAffected), "errors_other_slots", sum(&errsOther),
		"rotations_lost", out.get("rotations_lost"), "revoked", out.get("revoked"), "crossslot", len(crossSlot),
		"invalid_at_end", invalid)
	t.Logf("errors on the failed master's slots: %v; on other slots: %v", &errsAffected, &errsOther)
	if len(crossSlot) != 0 {
		t.Errorf("CROSSSLOT: %q", crossSlot[0])
	}
	// A go-redis retry is recognised by its call id; a worker that presents
	// its token again after an error does so within the grace window,
	// unless the outage outlasts it (15s): the go-redis defaults variant may
	// log a client out that way.
	if out.get("revoked") != 0 && reloadInterval > 0 {
		t.Errorf("%d sessions revoked during the failover", out.get("revoked"))
	}
	if invalid != 0 {
		t.Errorf("%d sessions invalid after the failover", invalid)
	}
	if firstOK < 0 {
		t.Error("no rotation on the failed master's slots succeeded after the kill")
	}
}
