// The contract suite: every operation and outcome of the store, run against
// an in-process miniredis always, a real Redis when
// SESSIONCACHE_TEST_REDIS_URL is set, and a real Redis Cluster when
// SESSIONCACHE_TEST_CLUSTER_ADDRS is set (see internal/redistest). The
// cases live beside this file, one file per topic:
//
//	contract_tokens_test.go    issue, rotate, grace, reuse, forgeries, input
//	contract_lifetime_test.go  expiry, TTLs, memory
//	contract_sessions_test.go  listing, revocation, the session cap
//	contract_race_test.go      concurrent callers, login storms
//	contract_clock_test.go     several service instances with skewed clocks
//	contract_retry_test.go     lost replies and retries of every write
//	hostile_test.go            a user with 100,000 sessions
//	redis_test.go              Redis down, eviction policy, replicas, OOM
package sessioncache_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

var secret = []byte("contract-suite-secret-0123456789abcdef")

// fixture is one store on one backend, with the events it emitted.
type fixture struct {
	*redistest.Backend
	store *redisstore.Store
	opt   redisstore.Options

	mu     sync.Mutex
	events []redisstore.Event
}

func newFixture(t *testing.T, b *redistest.Backend, opt redisstore.Options) *fixture {
	t.Helper()
	f := &fixture{Backend: b}
	if opt.Secret == nil {
		opt.Secret = secret
	}
	if opt.MaxInFlight == 0 {
		opt.MaxInFlight = testMaxInFlight(t)
	}
	opt.KeyPrefix = b.Prefix
	opt.OnEvent = func(_ context.Context, e redisstore.Event) {
		f.mu.Lock()
		f.events = append(f.events, e)
		f.mu.Unlock()
	}
	s, err := redisstore.New(b.Client, opt)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.store, f.opt = s, opt
	return f
}

// testMaxInFlight is Options.MaxInFlight as SESSIONCACHE_TEST_MAX_IN_FLIGHT
// sets it, or 0 (the default).
func testMaxInFlight(t *testing.T) int {
	v := os.Getenv(envMaxInFlight)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n == 0 {
		t.Fatalf("%s=%q: want a non-zero integer", envMaxInFlight, v)
	}
	return n
}

func (f *fixture) takeEvents() []redisstore.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.events
	f.events = nil
	return e
}

func (f *fixture) issue(t *testing.T, user string, c redisstore.Client) redisstore.Grant {
	t.Helper()
	g, err := f.store.Issue(context.Background(), user, c)
	if err != nil {
		t.Fatalf("Issue(%q): %v", user, err)
	}
	return g
}

func (f *fixture) rotate(t *testing.T, tok string) redisstore.Grant {
	t.Helper()
	g, err := f.store.Rotate(context.Background(), tok, redisstore.Client{})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	return g
}

// list returns every live session of user, all pages.
func (f *fixture) list(t *testing.T, user string) []redisstore.Session {
	t.Helper()
	var all []redisstore.Session
	opt := redisstore.ListOptions{}
	for {
		p, err := f.store.ListSessions(context.Background(), user, opt)
		if err != nil {
			t.Fatalf("ListSessions(%q): %v", user, err)
		}
		all = append(all, p.Sessions...)
		if p.Next == "" {
			return all
		}
		opt.Cursor = p.Next
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

func TestContract(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		for _, tc := range contract {
			t.Run(tc.name, func(t *testing.T) {
				// Each case gets its own prefix on the shared backend.
				tc.run(t, b.Isolated(t))
			})
		}
	})
}

var contract = []struct {
	name string
	run  func(t *testing.T, b *redistest.Backend)
}{
	{"IssueValidate", testIssueValidate},
	{"RotateChain", testRotateChain},
	{"GraceReplay", testGraceReplay},
	{"GraceExpired", testGraceExpired},
	{"GrandparentNeverInGrace", testGrandparent},
	{"GraceSameDevice", testGraceSameDevice},
	{"GraceOff", testGraceOff},
	{"ReusedMatchesRevoked", testReusedMatchesRevoked},
	{"UserBoundToToken", testUserBound},
	{"ForgeryRevokesNothing", testForgery},
	{"MalformedChangesNothing", testMalformed},
	{"BadInputChangesNothing", testBadInput},
	{"StoredInputRules", testStoredInput},
	{"IdleExpiry", testIdleExpiry},
	{"AbsoluteExpiry", testAbsoluteExpiry},
	{"ListSessions", testListSessions},
	{"ListSessionsPages", testListPages},
	{"RevokeSession", testRevokeSession},
	{"RevokeToken", testRevokeToken},
	{"RevokeAll", testRevokeAll},
	{"RevokeAllKeepOfAnother", testRevokeAllKeep},
	{"RevokeAllInBatches", testRevokeAllBatches},
	{"MaxSessions", testMaxSessions},
	{"MaxSessionsDefault", testMaxSessionsDefault},
	{"MaxSessionsLowered", testMaxSessionsLowered},
	{"KeyRotation", testKeyRotation},
	{"EveryKeyHasTTL", testEveryKeyHasTTL},
	{"NoRawTokenInRedis", testNoRawToken},
	{"RaceOneWinnerGrace", testRaceGrace},
	{"RaceOneWinnerNoGrace", testRaceNoGrace},
	{"ConcurrentLogins", testConcurrentLogins},
	{"CappedLoginStorm", testCappedLoginStorm},
	{"RevokeAllUnderLoginStorm", testRevokeAllUnderLogins},
	{"ScriptCacheLoss", testScriptCacheLoss},
	{"MemoryFlatInRotations", testMemoryFlat},
	{"NoKeyLeftAfterLifetimes", testNoKeyLeft},
	{"UsersSpreadOverSlots", testSpread},
	{"SkewedInstances", testSkewedInstances},
	{"LostReplies", testLostReplies},
	{"LateRetry", testLateRetry},
	{"ClientBinding", testClientBinding},
	{"ClientUnbound", testClientUnbound},
	{"ClientIDs", testClientIDs},
	{"CheckSession", testCheckSession},
	{"RevocationFeed", testRevocationFeed},
	{"RevocationFeedLost", testRevocationFeedLost},
}

var laptop = redisstore.Client{DeviceID: "dev-laptop", DeviceName: "Firefox on Linux", IPAddress: "192.0.2.10", UserAgent: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}
