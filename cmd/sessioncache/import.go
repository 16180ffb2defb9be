package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/sqlimport"
)

// runImport is "sessioncache import -postgres URL -table NAME": it imports
// the refresh tokens of a SQL table into the Redis the service's settings
// name (the same variables and flags: Redis, the secret, the key prefix,
// the lifetimes, the legacy token hash), so that the service accepts them
// (see sqlimport and the README, "Migrating from a SQL table"). It logs
// its progress and its final count as JSON lines on out, and stops at the
// first signal: an interrupted import resumes where it stopped.
func runImport(args []string, getenv func(string) string, out io.Writer, sig <-chan os.Signal) int {
	var pgURL string
	cfg := sqlimport.Config{Columns: sqlimport.DefaultColumns()}
	sub := subcommand{name: "import", flags: func(fs *flag.FlagSet) {
		fs.StringVar(&pgURL, "postgres", "", "PostgreSQL URL of the old system's database, postgres://user@host:5432/db (a password goes in PGPASSWORD or ~/.pgpass, not here)")
		fs.StringVar(&cfg.Table, "table", "", "the refresh-token table, [schema.]name")
		for _, c := range []struct {
			p          *string
			name, what string
		}{
			{&cfg.Columns.ID, "id", "primary key"},
			{&cfg.Columns.User, "user", "user id"},
			{&cfg.Columns.Hash, "hash", "hash of the token (text or bytea), as " + envLegacyHash + " says"},
			{&cfg.Columns.Family, "family", "family id (the rows of one login); a UUID becomes the session id, anything else its MD5"},
			{&cfg.Columns.Created, "created", "creation of the row"},
			{&cfg.Columns.Expires, "expires", "expiry of the row's token"},
			{&cfg.Columns.Revoked, "revoked", "boolean: the row's token is revoked (\"\" if the table has only a revoked-at column)"},
			{&cfg.Columns.RevokedAt, "revoked-at", "when the row's token was revoked (\"\" for none: -follow then reads the whole table each time)"},
			{&cfg.Columns.DeviceID, "device-id", "device id (\"\" for none)"},
			{&cfg.Columns.DeviceName, "device-name", "device name (\"\" for none)"},
			{&cfg.Columns.IP, "ip", "IP address (\"\" for none)"},
			{&cfg.Columns.UserAgent, "user-agent", "user agent (\"\" for none)"},
		} {
			fs.StringVar(c.p, c.name+"-column", *c.p, "column of the "+c.what)
		}
		fs.StringVar(&cfg.ClientID, "client-id", "", "bind every imported session to this OAuth client, as a login for it would (its refreshes must then name it); unset: bound to none")
		fs.StringVar(&cfg.HashEncoding, "hash-encoding", sqlimport.EncodingHex, "how a text hash column writes the digest: hex, base64 or base64url (a bytea column is raw)")
		fs.Float64Var(&cfg.Rate, "rate", 1000, "families imported per second at most, bounding the load on both databases; 0: no bound")
		fs.IntVar(&cfg.Batch, "batch", 500, "families per read of the table")
		fs.IntVar(&cfg.Workers, "workers", 8, "families imported at once")
		fs.DurationVar(&cfg.Follow, "follow", 0, "after the first pass, keep both systems in step until a signal: look for changes in the table this often, and revoke in the table what Redis revokes; 0: one pass")
		fs.DurationVar(&cfg.Overlap, "overlap", time.Minute, "with -follow: how far back each look reads again, for transactions that committed late")
		fs.BoolVar(&cfg.Restart, "restart", false, "ignore the checkpoint of an interrupted import and start from the first family")
	}}
	c, err := loadConfig(args, getenv, out, sub)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	log := slog.New(slog.NewJSONHandler(out, nil))
	if err == nil {
		err = checkImport(c, pgURL, cfg.Table)
	}
	if err != nil {
		log.Error("refusing to import: " + err.Error())
		return exitConfig
	}
	if c.LogLevel != slog.LevelInfo {
		log = slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: c.LogLevel}))
	}
	cfg.Hash, cfg.Log = c.LegacyHash, log

	ctx, cancel := untilSignal(sig, log)
	defer cancel()
	be, store, code := openStore(ctx, c, log, "import", nil)
	if code != exitOK {
		return code
	}
	defer be.Close()
	pcfg, err := pgxpool.ParseConfig(pgURL)
	if err != nil {
		log.Error("refusing to import: -postgres: " + err.Error())
		return exitConfig
	}
	pcfg.MaxConns = min(pcfg.MaxConns, 4)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		log.Error("cannot import: " + err.Error())
		return exitFailed
	}
	defer pool.Close()
	im, err := sqlimport.New(ctx, pool, store, be.client, c.KeyPrefix, cfg)
	if err != nil {
		log.Error("refusing to import: " + err.Error())
		return exitConfig
	}
	log.Info("importing", "table", cfg.Table, "redis", redactURL(c.RedisURL), "key_prefix", c.KeyPrefix, "legacy_hash", c.LegacyHash,
		"rate", cfg.Rate, "follow", cfg.Follow.String())
	start := time.Now()
	st, err := im.Run(ctx)
	done := append(st.Attrs(), "seconds", time.Since(start).Seconds())
	switch {
	case err == nil, cfg.Follow > 0 && errors.Is(err, context.Canceled):
		log.Info("import done", done...)
		return exitOK
	case errors.Is(err, context.Canceled):
		log.Warn("import interrupted: run it again to resume", done...)
	default:
		log.Error("import failed: "+err.Error()+"; run it again to resume", done...)
	}
	return exitFailed
}

// checkImport checks what an import needs of the service's settings.
func checkImport(c *config, pgURL, table string) error {
	switch {
	case pgURL == "":
		return errors.New("-postgres is required")
	case table == "":
		return errors.New("-table is required")
	case c.RedisURL == "":
		return errors.New(envRedisURL + " is required: the embedded store would lose what is imported at exit")
	case c.Secret == nil:
		return errors.New(envSecret + " or " + envSecretFile + " is required: the service's own, which places the sessions and hashes their tokens")
	case c.legacyHash == nil:
		return errors.New(envLegacyHash + " is off: set how the table hashes its tokens, as the service will")
	}
	return nil
}
