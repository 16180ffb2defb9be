package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/redisstore"
)

// newExampleStore returns a store on an in-process miniredis. In production
// rdb is a redis.NewClient, redis.NewFailoverClient or redis.NewClusterClient.
func newExampleStore(opt redisstore.Options) (*redisstore.Store, func()) {
	store, _, done := newExampleStoreOn(opt)
	return store, done
}

// newExampleStoreOn also returns the miniredis, whose clock is the store's.
func newExampleStoreOn(opt redisstore.Options) (*redisstore.Store, *miniredis.Miniredis, func()) {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	opt.Secret = []byte("an example secret of at least 32 bytes!")
	store, err := redisstore.New(rdb, opt)
	if err != nil {
		panic(err)
	}
	return store, mr, func() { rdb.Close(); mr.Close() }
}

func Example() {
	store, done := newExampleStore(redisstore.Options{})
	defer done()
	ctx := context.Background()

	// Login: the store mints the token; hand it to the client once.
	login, err := store.Issue(ctx, "user-42", redisstore.Client{DeviceName: "Firefox on Linux", IPAddress: "192.0.2.1"})
	if err != nil {
		panic(err)
	}
	// Refresh: the old token in, its successor out, atomically.
	next, err := store.Rotate(ctx, login.Token, redisstore.Client{IPAddress: "192.0.2.1"})
	if err != nil {
		panic(err)
	}
	info, err := store.Validate(ctx, next.Token)
	fmt.Println(info.UserID, info.SessionID == login.SessionID, err)

	page, _ := store.ListSessions(ctx, "user-42", redisstore.ListOptions{})
	fmt.Println(len(page.Sessions), page.Sessions[0].DeviceName)

	// Log out everywhere.
	n, _ := store.RevokeAll(ctx, "user-42", "")
	_, err = store.Validate(ctx, next.Token)
	fmt.Println(n, errors.Is(err, redisstore.ErrRevoked))
	// Output:
	// user-42 true <nil>
	// 1 Firefox on Linux
	// 1 true
}

func ExampleStore_Rotate() {
	store, done := newExampleStore(redisstore.Options{Grace: 10 * time.Second})
	defer done()
	ctx := context.Background()
	login, _ := store.Issue(ctx, "user-42", redisstore.Client{})

	first, _ := store.Rotate(ctx, login.Token, redisstore.Client{})
	// A second tab presents the same token within the grace window: it gets the same successor, nobody is logged out.
	again, err := store.Rotate(ctx, login.Token, redisstore.Client{})
	fmt.Println(err, again.Token == first.Token, again.Replayed)

	// Two rotations later the first token is a grandparent: never in grace.
	// Presenting it is a replay, and the whole session is revoked.
	second, _ := store.Rotate(ctx, first.Token, redisstore.Client{})
	_, err = store.Rotate(ctx, login.Token, redisstore.Client{})
	fmt.Println(errors.Is(err, redisstore.ErrReused))
	_, err = store.Rotate(ctx, second.Token, redisstore.Client{})
	var revoked *redisstore.RevokedError
	fmt.Println(errors.As(err, &revoked), revoked.Reason)
	// Output:
	// <nil> true true
	// true
	// true reuse
}

func ExampleStore_Validate() {
	store, done := newExampleStore(redisstore.Options{})
	defer done()
	ctx := context.Background()

	_, err := store.Validate(ctx, "not a token")
	fmt.Println(err)
	_, err = store.Validate(ctx, "sct_AQelpaWlpaWlpaWlpaU8PDw8PDw8PDw8PDw8PDw8AAAAKQGjGFxQewG6YNM5yBfOdWIvOCBlbcnUrqjzT6oq367xg53tTndYQ-bfahbZxjBEJnUhTF4LrnladD_xHhByZEI")
	fmt.Println(err)
	// Output:
	// redisstore: malformed token
	// redisstore: unknown token
}

func ExampleOptions_maxSessions() {
	var evicted []string
	store, mr, done := newExampleStoreOn(redisstore.Options{
		MaxSessions: 2,
		OnEvent: func(_ context.Context, e redisstore.Event) {
			if e.Kind == redisstore.EventSessionEvicted {
				evicted = append(evicted, e.SessionID)
			}
		},
	})
	defer done()
	ctx := context.Background()
	// Redis's clock decides; here it ticks a minute per login, so that each
	// login is used later than the one before.
	now := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	login := func(device string) redisstore.Grant {
		now = now.Add(time.Minute)
		mr.SetTime(now)
		g, _ := store.Issue(ctx, "user-42", redisstore.Client{DeviceName: device})
		return g
	}
	first := login("old phone")
	login("laptop")
	login("new phone")

	page, _ := store.ListSessions(ctx, "user-42", redisstore.ListOptions{})
	fmt.Println(len(page.Sessions), len(evicted), evicted[0] == first.SessionID)
	// Output:
	// 2 1 true
}

// A session bound to a client is rotated only by that client.
func ExampleClient_clientID() {
	store, done := newExampleStore(redisstore.Options{})
	defer done()
	ctx := context.Background()
	login, _ := store.Issue(ctx, "user-42", redisstore.Client{ClientID: "web-app"})
	_, err := store.Rotate(ctx, login.Token, redisstore.Client{ClientID: "mobile-app"})
	fmt.Println(errors.Is(err, redisstore.ErrWrongClient))
	next, err := store.Rotate(ctx, login.Token, redisstore.Client{ClientID: "web-app"})
	fmt.Println(next.ClientID, err)
	// Output:
	// true
	// web-app <nil>
}

// Every instance of a service hears of every revocation, as it happens, and
// can answer from memory in between; CheckSession answers what memory does
// not know.
func ExampleStore_WatchRevocations() {
	store, done := newExampleStore(redisstore.Options{})
	defer done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	notices := make(chan redisstore.Notice, 16)
	go store.WatchRevocations(ctx, 0, func(n redisstore.Notice) {
		if n.Kind != redisstore.NoticeSynced {
			notices <- n
		}
	})
	fmt.Println((<-notices).Kind)

	login, _ := store.Issue(ctx, "user-42", redisstore.Client{})
	fmt.Println(store.CheckSession(ctx, "user-42", login.SessionID))
	store.RevokeSession(ctx, "user-42", login.SessionID)
	n := <-notices
	fmt.Println(n.Kind, n.Reason, n.SessionIDs[0] == login.SessionID)
	fmt.Println(store.CheckSession(ctx, "user-42", login.SessionID))
	// Output:
	// subscribed
	// <nil>
	// revoked logout true
	// redisstore: token revoked (logout)
}
