package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

// One short round of the whole measurement, at a fixed rate: the three
// programs build, start and answer, and the table has a row per target
// with its ratio.
func TestOneRound(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three programs")
	}
	redistest.For(t, redistest.Real) // skips (or fails) without a real Redis
	var out strings.Builder
	err := run(config{redisURL: os.Getenv(redistest.EnvRedisURL), rounds: 1, workers: 2, sessions: 4, duration: 300 * time.Millisecond, rate: 500}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "2 workers (500 req/s)") {
		t.Errorf("the header does not give the rate:\n%s", out.String())
	}
	for _, row := range []string{"bare", "service rotate", "service auth"} {
		re := regexp.MustCompile(`(?m)^` + row + `\s+[0-9.]+ \([0-9.]+-[0-9.]+\)\s+[0-9]+\s+[0-9.]+ \(`)
		if !re.MatchString(out.String()) {
			t.Errorf("no row %q in:\n%s", row, out.String())
		}
	}
}
