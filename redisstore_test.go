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
	"testing"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// fixture is a store under test (redistest.Store) on one backend, with
// helpers that fail the test on an error.
type fixture struct {
	*redistest.Backend
	*redistest.Store
}

func newFixture(t *testing.T, b *redistest.Backend, opt redisstore.Options) *fixture {
	t.Helper()
	return &fixture{Backend: b, Store: b.NewStore(t, opt)}
}

func (f *fixture) issue(t *testing.T, user string, c redisstore.Client) redisstore.Grant {
	t.Helper()
	g, err := f.Store.Issue(context.Background(), user, c)
	if err != nil {
		t.Fatalf("Issue(%q): %v", user, err)
	}
	return g
}

func (f *fixture) rotate(t *testing.T, tok string) redisstore.Grant {
	t.Helper()
	g, err := f.Store.Rotate(context.Background(), tok, redisstore.Client{})
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
		p, err := f.Store.ListSessions(context.Background(), user, opt)
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
	{"InvisibleText", testInvisibleText},
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
	{"EvictionBound", testEvictionBound},
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
	{"KeyBinding", testKeyBinding},
	{"KeyBindOnRotate", testKeyBindOnRotate},
	{"ClientUnbound", testClientUnbound},
	{"ClientIDs", testClientIDs},
	{"CheckSession", testCheckSession},
	{"RevocationFeed", testRevocationFeed},
	{"RevocationFeedLost", testRevocationFeedLost},
	{"KeyBoundRevocations", testKeyBoundRevocations},
	{"DamagedRecords", testDamagedRecords},
}

var laptop = redisstore.Client{DeviceID: "dev-laptop", DeviceName: "Firefox on Linux", IPAddress: "192.0.2.10", UserAgent: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}
