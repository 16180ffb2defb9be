package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/keymove"
	"github.com/sessioncache/sessioncache/redisstore"
)

// runMove is "sessioncache move": it moves every session of the Redis that
// SESSIONCACHE_MOVE_FROM_URL names onto the Redis the service's settings
// name (the same variables and flags: Redis, the secret, the key prefix),
// while the service runs with the same settings, moving each user it
// touches (see keymove and deploy/README.md, "Moving a live Redis or
// Sentinel group onto a cluster"). It logs its progress and its final count
// as JSON lines on out, and stops at the first signal: a second run moves
// what is left. It exits 0 once the old Redis holds none of the store's
// keys.
func runMove(args []string, getenv func(string) string, out io.Writer, sig <-chan os.Signal) int {
	var cfg keymove.Config
	sub := subcommand{name: "move", flags: func(fs *flag.FlagSet) {
		fs.Float64Var(&cfg.Rate, "rate", 2000, "keys moved per second at most, bounding the load on both Redises; 0: no bound")
		fs.IntVar(&cfg.Workers, "workers", 8, "keys moved at once")
		fs.DurationVar(&cfg.Progress, "progress", 10*time.Second, "how often to log the progress")
	}}
	c, err := loadConfig(args, getenv, out, sub)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	log := slog.New(slog.NewJSONHandler(out, nil))
	if err == nil {
		err = checkMove(c)
	}
	if err != nil {
		log.Error("refusing to move: " + err.Error())
		return exitConfig
	}
	cfg.Prefix, cfg.Log = c.KeyPrefix, log

	ctx, cancel := untilSignal(sig, log)
	defer cancel()
	from, err := openRedis(c.MoveFrom)
	if err != nil {
		log.Error("cannot move: " + err.Error())
		return exitFailed
	}
	defer from.Close()
	to, store, code := openStore(ctx, c, log, "move", func(o *redisstore.Options) { o.MoveFrom = from.client })
	if code != exitOK {
		return code
	}
	defer to.Close()
	if err := from.client.Ping(ctx).Err(); err != nil {
		log.Error("cannot move: the old Redis: " + err.Error())
		return exitFailed
	}
	log.Info("moving", "from", redactURL(c.MoveFromURL), "to", redactURL(c.RedisURL), "key_prefix", c.KeyPrefix, "rate", cfg.Rate)
	start := time.Now()
	st, err := keymove.Run(ctx, store, from.client, cfg)
	done := append(st.Attrs(), "seconds", time.Since(start).Seconds())
	switch {
	case err == nil && st.Left == 0:
		log.Info("move done: the old Redis holds none of the store's keys; unset "+envMoveFrom+" on every instance", done...)
		return exitOK
	case err == nil:
		log.Warn("move incomplete: keys were written on the old Redis meanwhile (an instance still on it?); run it again", done...)
	case errors.Is(err, context.Canceled):
		log.Warn("move interrupted: run it again to resume", done...)
	default:
		log.Error("move failed: "+err.Error()+"; run it again to resume", done...)
	}
	return exitFailed
}

// checkMove checks what a move needs of the service's settings.
func checkMove(c *config) error {
	switch {
	case c.MoveFromURL == "":
		return errors.New(envMoveFrom + " is required: the Redis the data moves from")
	case c.Secret == nil:
		return errors.New(envSecret + " or " + envSecretFile + " is required: the service's own, which places the sessions")
	}
	return nil
}
