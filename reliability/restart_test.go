package reliability_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// TestScriptCacheLoss restarts Redis under load (SIGKILL, start again on
// the same append-only file), which empties its script cache too. The store
// must heal by itself (EVALSHA gets NOSCRIPT, go-redis falls back to EVAL):
// a restart may fail only the calls in flight while the server is down,
// each with an error, and loses no session. (SCRIPT FLUSH alone is a case
// of the contract suite, on every backend: TestContract/*/ScriptCacheLoss.)
func TestScriptCacheLoss(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--appendonly", "yes", "--appendfsync", "always", "--enable-debug-command", "yes")
	c := redis.NewClient(&redis.Options{Addr: srv.Addr}) // go-redis defaults
	t.Cleanup(func() { c.Close() })
	st := wrap(t, c, redisstore.Options{KeyPrefix: redistest.NewPrefix()})
	ctx := bg(t)
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	admin := srv.Client(t)
	// Unrelated data in the append-only file, so that a restart takes as
	// long to load as a real dataset's would.
	filler := pick(100_000, 2_000_000)
	if err := admin.Do(ctx, "debug", "populate", filler, strings.TrimSuffix(fillerPrefix, ":"), 32).Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.BgRewriteAOF(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "AOF rewrite", time.Minute, func() bool {
		info, _ := admin.Info(ctx, "persistence").Result()
		return strings.Contains(info, "aof_rewrite_in_progress:0") && strings.Contains(info, "aof_rewrite_scheduled:0")
	})
	w := startWorkload(t, st, 8, 5*time.Second)
	w.waitOK(t, 300, 30*time.Second)

	restarts := pick(1, 5)
	for i := 0; i < restarts; i++ {
		t1 := time.Now()
		srv.Restart(t)
		up := time.Now()
		w.waitOK(t, 500, 30*time.Second)
		r := w.around(t1, up)
		figure(t, "restart", "filler_keys", filler, "restart_took", ms(up.Sub(t1)), "calls_after_kill", r.calls, "errors", r.errors,
			"errors_started_after_up", r.errorsStarted, "first_ok", ms(r.firstOK), "last_error", ms(r.lastError),
			"max_latency", ms(r.maxLatency))
		t.Logf("errors by call: %v; started after up: %v", &r.classes, &r.errorsByStartOp)
		if r.errorsStarted != 0 {
			t.Errorf("%d calls that started after the server was back failed: %v", r.errorsStarted, &r.errorsByStartOp)
		}
	}
	alive, lost := w.finish(t, 10*time.Second)
	figure(t, "restart_sessions", "sessions", w.n.get("sessions"), "alive_at_end", alive,
		"lost", lost+w.n.get("sessions_lost"), "revoked", w.n.get("sessions_revoked"))
	if lost+w.n.get("sessions_lost")+w.n.get("sessions_revoked") != 0 {
		t.Errorf("sessions lost %d (at the end %d), revoked %d; outcomes %v",
			w.n.get("sessions_lost"), lost, w.n.get("sessions_revoked"), &w.n)
	}
}

// TestRestartPersistence: with the append-only file on, a redis-server
// killed with SIGKILL and started again keeps every session, every
// revocation and every TTL (Redis writes absolute expiry times to the
// AOF). Run with appendfsync always and with the default everysec: a
// process crash loses nothing either way (the kernel holds what Redis
// wrote); only a machine crash can lose up to a second with everysec.
func TestRestartPersistence(t *testing.T) {
	t.Parallel()
	for _, fsync := range []string{"always", "everysec"} {
		t.Run("appendfsync="+fsync, func(t *testing.T) {
			srv := startServer(t, "--appendonly", "yes", "--appendfsync", fsync)
			c := srv.Client(t)
			b := &redistest.Backend{Kind: redistest.Real, Client: c, Prefix: redistest.NewPrefix()}
			st := wrap(t, c, redisstore.Options{KeyPrefix: b.Prefix, IdleTTL: time.Hour, AbsoluteTTL: 2 * time.Hour})
			ctx := bg(t)
			n := pick(200, 2000)
			toks := make([]string, n)
			for i := range toks {
				g, err := st.Issue(ctx, fmt.Sprintf("user-%d", i%50), redisstore.Client{DeviceID: fmt.Sprint(i)})
				if err != nil {
					t.Fatal(err)
				}
				for r := 0; r < i%4; r++ {
					if g, err = st.Rotate(ctx, g.Token, redisstore.Client{}); err != nil {
						t.Fatal(err)
					}
				}
				toks[i] = g.Token
				if i%7 == 0 {
					if _, err := st.RevokeToken(ctx, g.Token); err != nil {
						t.Fatal(err)
					}
				}
			}
			if _, err := st.RevokeAll(ctx, "user-3", ""); err != nil {
				t.Fatal(err)
			}
			outcome := func() []string {
				out := make([]string, n)
				for i, tok := range toks {
					_, err := st.Validate(ctx, tok)
					out[i] = fmt.Sprint(err)
				}
				return out
			}
			wantOut, wantDump, wantTTL := outcome(), b.Snapshot(t), ttls(t, b)
			t0 := time.Now()
			srv.Restart(t)
			down := time.Since(t0)
			gotOut, gotDump, gotTTL := outcome(), b.Snapshot(t), ttls(t, b)
			elapsed := time.Since(t0)

			if d := cmp.Diff(wantOut, gotOut); d != "" {
				t.Errorf("Validate after restart (-before +after):\n%s", d)
			}
			if d := cmp.Diff(wantDump, gotDump); d != "" {
				t.Errorf("keyspace after restart (-before +after):\n%s", d)
			}
			changed, lostTTL := 0, 0
			for k, before := range wantTTL {
				switch after, ok := gotTTL[k]; {
				case !ok || after <= 0:
					lostTTL++
				case after != before:
					changed++
				}
			}
			valid := 0
			for _, o := range gotOut {
				if o == "<nil>" {
					valid++
				}
			}
			figure(t, "aof_restart/"+fsync, "sessions", n, "valid", valid, "revoked", n-valid, "keys", len(wantDump),
				"keys_lost", len(wantDump)-len(gotDump), "ttl_lost", lostTTL, "expiry_changed", changed,
				"elapsed", ms(elapsed), "restart", ms(down))
			if lostTTL != 0 || changed != 0 {
				t.Errorf("of %d keys, %d lost their TTL and %d changed their expiry time", len(wantTTL), lostTTL, changed)
			}
		})
	}
}

// ttls reads the absolute expiry time (PEXPIRETIME, unix ms) of every key.
func ttls(t testing.TB, b *redistest.Backend) map[string]time.Duration {
	t.Helper()
	ctx := context.Background()
	keys, err := b.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]time.Duration, len(keys))
	for _, k := range keys {
		d, err := b.Client.PExpireTime(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		out[k] = d
	}
	return out
}
