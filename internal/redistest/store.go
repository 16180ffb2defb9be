package redistest

import (
	"context"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/redisstore"
)

// EnvMaxInFlight sets Options.MaxInFlight for every store NewStore makes
// whose options leave it zero: -1 runs a suite without batching, 1 batches
// any two concurrent calls to a node. Unset: the store's default.
const EnvMaxInFlight = "SESSIONCACHE_TEST_MAX_IN_FLIGHT"

// MaxInFlight returns Options.MaxInFlight as EnvMaxInFlight sets it, or 0
// (the store's default) when it is unset. Any value but a non-zero integer
// fails tb.
func MaxInFlight(tb testing.TB) int {
	tb.Helper()
	v := os.Getenv(EnvMaxInFlight)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n == 0 {
		tb.Fatalf("%s=%q: want a non-zero integer", EnvMaxInFlight, v)
	}
	return n
}

// secret is the secret of the stores NewStore makes without one.
var secret = []byte("redistest-store-secret-0123456789abcdef")

// Store is a store under test, made by NewStore, with the events it
// emitted.
type Store struct {
	*redisstore.Store
	// Options are what the store was made with: the defaults NewStore
	// fills in, and an OnEvent that records. A store made with them
	// reports its events here too.
	Options redisstore.Options

	mu     sync.Mutex
	events []redisstore.Event
}

// NewStore returns a store on c. Where opt leaves them zero, it fills in a
// test secret and MaxInFlight (EnvMaxInFlight). It records every event
// the store emits, after handing it to opt.OnEvent if that is set. An
// error from redisstore.New fails tb.
func NewStore(tb testing.TB, c redis.UniversalClient, opt redisstore.Options) *Store {
	tb.Helper()
	s := &Store{}
	if opt.Secret == nil {
		opt.Secret = secret
	}
	if opt.MaxInFlight == 0 {
		opt.MaxInFlight = MaxInFlight(tb)
	}
	onEvent := opt.OnEvent
	opt.OnEvent = func(ctx context.Context, e redisstore.Event) {
		if onEvent != nil {
			onEvent(ctx, e)
		}
		s.mu.Lock()
		s.events = append(s.events, e)
		s.mu.Unlock()
	}
	st, err := redisstore.New(c, opt)
	if err != nil {
		tb.Fatalf("redisstore.New: %v", err)
	}
	s.Store, s.Options = st, opt
	return s
}

// NewStore returns a store on b's client under b's key prefix (NewStore).
func (b *Backend) NewStore(tb testing.TB, opt redisstore.Options) *Store {
	tb.Helper()
	opt.KeyPrefix = b.Prefix
	return NewStore(tb, b.Client, opt)
}

// TakeEvents returns the events recorded since the last call.
func (s *Store) TakeEvents() []redisstore.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.events
	s.events = nil
	return e
}
