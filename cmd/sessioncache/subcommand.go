package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/sessioncache/sessioncache/redisstore"
)

// untilSignal returns a context that ends at the first signal on sig, which
// it logs: a subcommand then stops where it is, and resumes when run again.
func untilSignal(sig <-chan os.Signal, log *slog.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case got := <-sig:
			log.Info("received " + got.String() + ": stopping")
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// openStore opens the configured Redis and a store on it with the
// service's options, edited by edit if not nil, and pings it. what names
// the subcommand in its messages ("import"); the code is the exit code of
// a failure. The caller closes the backend.
func openStore(ctx context.Context, c *config, log *slog.Logger, what string, edit func(*redisstore.Options)) (*backend, *redisstore.Store, int) {
	be, err := openRedis(c.RedisOptions)
	if err != nil {
		log.Error("cannot " + what + ": " + err.Error())
		return nil, nil, exitFailed
	}
	opt := c.storeOptions(c.Secret)
	opt.Keys = c.SigningKeys
	if edit != nil {
		edit(&opt)
	}
	store, err := redisstore.New(be.client, opt)
	if err != nil {
		be.Close()
		log.Error("refusing to " + what + ": " + err.Error())
		return nil, nil, exitConfig
	}
	if err := store.Ping(ctx); err != nil {
		be.Close()
		log.Error("cannot " + what + ": " + err.Error())
		return nil, nil, exitFailed
	}
	return be, store, exitOK
}
