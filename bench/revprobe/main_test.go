package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

// A short run of the probe on a redis-server (and, without -short, a
// 3-master cluster) of its own: every revocation reaches every instance
// within a generous bound, the revoking instance refuses at once, nothing
// is admitted after a refusal, the background load of live sessions is
// always admitted, and forward auth answered from memory sends Redis no
// data command.
func TestShortRun(t *testing.T) {
	for _, redisKind := range []string{"standalone", "cluster"} {
		t.Run("redis="+redisKind, func(t *testing.T) {
			c := shortConfig
			c.rate = 200
			c.window = 2 * time.Second // a generous bound: CI machines stall
			c.timeout = 10 * time.Second
			if redisKind == "cluster" {
				if testing.Short() {
					t.Skip("a cluster takes seconds to start")
				}
				c.clusterAddrs = strings.Join(redistest.StartCluster(t, 3, 0, 5*time.Second).Addrs(), ",")
			} else {
				c.redisURL = "redis://" + redistest.StartServer(t, "--maxmemory-policy", "noeviction").Addr + "/0"
			}
			var log strings.Builder
			rep, err := run(c, &log)
			if err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			var out strings.Builder
			rep.print(&out)
			t.Log("\n" + out.String())
			checkReport(t, c, rep, out.String())
		})
	}
}

func checkReport(t *testing.T, c config, rep *report, text string) {
	t.Helper()
	s := rep.Summary
	if len(rep.Revocations) != c.revocations {
		t.Fatalf("%d revocations, want %d", len(rep.Revocations), c.revocations)
	}
	turns := map[string]int{}
	for _, r := range rep.Revocations {
		turns[fmt.Sprintf("%s via %d", r.Kind, r.Via)]++
	}
	if len(turns) != len(kinds)*c.instances {
		t.Errorf("kinds and revoking instances do not take turns: %v", turns)
	}
	if s.NeverRefused != 0 || s.All.Max > ms(c.window) {
		t.Errorf("%d instances never refused; the slowest refused after %.1f ms, want ≤ %s", s.NeverRefused, s.All.Max, c.window)
	}
	if s.AdmittedAfterWindow != 0 || s.AdmittedAfterRefusal != 0 {
		t.Errorf("admitted after the window: %d, after a refusal: %d; want 0", s.AdmittedAfterWindow, s.AdmittedAfterRefusal)
	}
	if s.RevokingAdmitted != 0 || s.OtherAnswers != 0 {
		t.Errorf("the revoking instance admitted %d requests after its call returned; %d answers were neither 200 nor 401", s.RevokingAdmitted, s.OtherAnswers)
	}
	b := rep.Background
	if b.Requests == 0 || b.NotOK != 0 {
		t.Errorf("background load: %d requests, %d not 200 (%v %v)", b.Requests, b.NotOK, b.Refused, b.FirstErrors)
	}
	q := rep.Quiet
	if q.Heartbeat == 0 {
		t.Errorf("no heartbeat PING counted in the quiet stretch: is INFO commandstats read? %v", q.Commands)
	}
	// Memory may stop being trusted on a stalled machine (then Redis
	// answers, and is counted): only then may data commands appear.
	fromRedis := int64(0)
	for _, n := range q.FromRedis {
		fromRedis += n
	}
	if fromRedis == 0 && q.Data != 0 {
		t.Errorf("every check of the quiet stretch came from memory, yet Redis ran %d data commands: %v", q.Data, q.Commands)
	}
	headline := regexp.MustCompile(`(?m)^every instance refuses \(the latest of the instances\) +` + strconv.Itoa(c.revocations) + ` +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+$`)
	if !headline.MatchString(text) ||
		!strings.Contains(text, "0 admitted: met") {
		t.Errorf("the table lacks its headline row or verdict:\n%s", text)
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Errorf("-json: %v", err)
	}
}
