package sqlimport

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// TestImport: a pass imports every live family (and no revoked or expired
// one), a second pass reports 0 new and changes nothing, and the tokens of
// the table then behave as the old system would have them: the current one
// rotates, an older one is a replay, a revoked or expired family's are
// refused.
func TestImport(t *testing.T) {
	pool := pgPool(t)
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		ctx := context.Background()
		o := newOldSystem(t, pool)
		fams, err := o.generate(ctx, 300)
		if err != nil {
			t.Fatal(err)
		}
		st := legacyStore(t, b, redisstore.Options{})
		im := newImporter(t, o, st, b, o.config())
		stats, err := im.Run(ctx)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		live, revoked, expired := count(fams, famLive), count(fams, famRevoked), count(fams, famExpired)
		want := Stats{Families: len(fams), Created: live, SkippedRevoked: revoked, SkippedExpired: expired}
		if got := stats; got.Families != want.Families || got.Created != want.Created || got.SkippedRevoked != want.SkippedRevoked ||
			got.SkippedExpired != want.SkippedExpired || got.Invalid != 0 || got.FieldsDropped != 0 {
			t.Fatalf("first pass: %+v, want %+v", got, want)
		}
		before := b.Snapshot(t)
		again, err := newImporter(t, o, st, b, o.config()).Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if again.New() != 0 || again.Unchanged != live {
			t.Fatalf("second pass: %+v, want 0 new and %d unchanged", again, live)
		}
		if len(b.Snapshot(t)) != len(before) {
			t.Fatalf("the second pass changed the keyspace")
		}
		for i, f := range fams {
			_, err := st.Rotate(ctx, f.current(), redisstore.Client{})
			switch f.kind {
			case famLive:
				if err != nil {
					t.Fatalf("family %d (live): %v", i, err)
				}
				if len(f.tokens) > 1 {
					if _, err := st.Rotate(ctx, f.tokens[0], redisstore.Client{}); !errors.Is(err, redisstore.ErrReused) {
						t.Fatalf("family %d: its first row after the conversion: %v, want ErrReused", i, err)
					}
				}
			default:
				if !errors.Is(err, redisstore.ErrUnknown) {
					t.Fatalf("family %d (kind %d): %v, want ErrUnknown", i, f.kind, err)
				}
			}
		}
	})
}

// TestImportResumes: a pass interrupted after its first batch leaves a
// checkpoint; the next run starts after it and imports the rest, and the
// two runs together create every live family once.
func TestImportResumes(t *testing.T) {
	pool := pgPool(t)
	b := redistest.For(t, redistest.Mini)
	ctx := context.Background()
	o := newOldSystem(t, pool)
	fams, err := o.generate(ctx, 200)
	if err != nil {
		t.Fatal(err)
	}
	st := legacyStore(t, b, redisstore.Options{})
	cfg := o.config()
	cfg.Batch, cfg.Progress = 30, time.Nanosecond
	first, cancel := context.WithCancel(ctx)
	defer cancel()
	cfg.Log = slog.New(&onMessage{msg: "import progress", do: cancel})
	s1, err := newImporter(t, o, st, b, cfg).Run(first)
	if !errors.Is(err, context.Canceled) || s1.Families != 30 {
		t.Fatalf("interrupted run: %+v, %v; want 30 families and context.Canceled", s1, err)
	}
	if cp, err := b.Client.Get(ctx, b.Prefix+"import:"+o.table).Result(); err != nil || cp == "" {
		t.Fatalf("no checkpoint after the interruption: %q, %v", cp, err)
	}
	cfg.Log = nil
	s2, err := newImporter(t, o, st, b, cfg).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s1.Families+s2.Families != len(fams) || s1.Created+s2.Created != count(fams, famLive) {
		t.Fatalf("runs read %d+%d families and created %d+%d; want %d and %d", s1.Families, s2.Families, s1.Created, s2.Created,
			len(fams), count(fams, famLive))
	}
	if n, _ := b.Client.Exists(ctx, b.Prefix+"import:"+o.table).Result(); n != 0 {
		t.Errorf("the checkpoint is left after a complete pass")
	}
}

// onMessage is a log handler that calls do at the first record with
// message msg.
type onMessage struct {
	msg string
	do  func()
}

func (h *onMessage) Enabled(context.Context, slog.Level) bool { return true }
func (h *onMessage) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.do()
	}
	return nil
}
func (h *onMessage) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *onMessage) WithGroup(string) slog.Handler      { return h }

// TestTableShapes: columns and the token hash are settings: a table with
// other names, a bigint family, a text user id, a bytea SHA-512, an inet
// address and no revoked flag (only revoked_at); an HMAC in base64; plain
// tokens. Each imports and its token converts.
func TestTableShapes(t *testing.T) {
	pool := pgPool(t)
	ctx := context.Background()
	hmacKey := []byte("the old system's pepper")
	for _, tc := range []struct {
		hash, encoding, hashType string
		stored                   func(tok string) any
	}{
		{HashSHA512, "", "bytea", func(tok string) any { h := sha512.Sum512([]byte(tok)); return h[:] }},
		{HashHMACSHA256, EncodingBase64, "text", func(tok string) any {
			m := hmac.New(sha256.New, hmacKey)
			m.Write([]byte(tok))
			return base64.StdEncoding.EncodeToString(m.Sum(nil))
		}},
		{HashPlain, "", "text", func(tok string) any { return tok }},
	} {
		t.Run(tc.hash, func(t *testing.T) {
			b := redistest.For(t, redistest.Mini)
			table := fmt.Sprintf("sc_legacy_shape_%d", time.Now().UnixNano())
			_, err := pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (
	token_id  bigserial PRIMARY KEY,
	account   text NOT NULL,
	digest    %s NOT NULL,
	session   bigint NOT NULL,
	issued    timestamp NOT NULL,
	not_after timestamp NOT NULL,
	killed_at timestamptz,
	client_ip inet
)`, table, tc.hashType))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { pool.Exec(ctx, "DROP TABLE IF EXISTS "+table) })
			now := time.Now().UTC()
			toks := []string{"old-token-" + uuid.NewString(), "current-token-" + uuid.NewString()}
			for i, tok := range toks {
				var killed any
				if i == 0 {
					killed = now.Add(-time.Minute)
				}
				if _, err := pool.Exec(ctx, `INSERT INTO `+table+` (account, digest, session, issued, not_after, killed_at, client_ip)
VALUES ('user@example.com', $1, 42, $2, $3, $4, '2001:db8::7')`, tc.stored(tok), now.Add(time.Duration(i-2)*time.Hour), now.Add(time.Hour), killed); err != nil {
					t.Fatal(err)
				}
			}
			var key []byte
			if tc.hash == HashHMACSHA256 {
				key = hmacKey
			}
			h, err := HashFunc(tc.hash, key)
			if err != nil {
				t.Fatal(err)
			}
			st := b.NewStore(t, redisstore.Options{LegacyHash: h})
			cfg := Config{Table: table, Hash: tc.hash, HashEncoding: tc.encoding, Columns: Columns{ID: "token_id", User: "account", Hash: "digest",
				Family: "session", Created: "issued", Expires: "not_after", RevokedAt: "killed_at", IP: "client_ip"}}
			im, err := New(ctx, pool, st.Store, b.Client, b.Prefix, cfg)
			if err != nil {
				t.Fatal(err)
			}
			stats, err := im.Run(ctx)
			if err != nil || stats.Created != 1 || stats.FieldsDropped != 0 {
				t.Fatalf("Run = %+v, %v; want 1 created", stats, err)
			}
			g, err := st.Rotate(ctx, toks[1], redisstore.Client{})
			if err != nil || g.UserID != "user@example.com" {
				t.Fatalf("Rotate(current) = %v, %v", g, err)
			}
			var wantSID uuid.UUID
			if err := pool.QueryRow(ctx, "SELECT md5('42')::uuid").Scan(&wantSID); err != nil || g.SessionID != wantSID.String() {
				t.Errorf("session id %s, want md5 of the family id %s (%v)", g.SessionID, wantSID, err)
			}
			page, err := st.ListSessions(ctx, "user@example.com", redisstore.ListOptions{})
			if err != nil || len(page.Sessions) != 1 || page.Sessions[0].IPAddress != "2001:db8::7" {
				t.Errorf("listed: %+v, %v", page.Sessions, err)
			}
			if _, err := st.Rotate(ctx, toks[0], redisstore.Client{}); !errors.Is(err, redisstore.ErrReused) {
				t.Errorf("Rotate(older row) = %v, want ErrReused", err)
			}
		})
	}
}

// TestConfigRefused: a configuration that does not fit the table is
// refused, naming what is wrong.
func TestConfigRefused(t *testing.T) {
	pool := pgPool(t)
	b := redistest.For(t, redistest.Mini)
	o := newOldSystem(t, pool)
	st := legacyStore(t, b, redisstore.Options{})
	for name, mod := range map[string]func(c *Config){
		"no such column":  func(c *Config) { c.Columns.Hash = "token_digest" },
		"no such table":   func(c *Config) { c.Table = "no_such_table" },
		"hash off":        func(c *Config) { c.Hash = HashOff },
		"unknown hash":    func(c *Config) { c.Hash = "md5" },
		"encoding":        func(c *Config) { c.HashEncoding = "base32" },
		"no revoked info": func(c *Config) { c.Columns.Revoked, c.Columns.RevokedAt = "", "" },
		"injection":       func(c *Config) { c.Columns.User = `user_id"; DROP TABLE x; --` },
	} {
		cfg := o.config()
		mod(&cfg)
		if _, err := New(context.Background(), pool, st.Store, b.Client, b.Prefix, cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	var exists bool
	if err := pool.QueryRow(context.Background(), "SELECT to_regclass($1) IS NOT NULL", o.table).Scan(&exists); err != nil || !exists {
		t.Errorf("the table is gone (%v)", err)
	}
}

// TestImportClientID: with Config.ClientID every imported session is bound
// to that client: a refresh naming another is refused.
func TestImportClientID(t *testing.T) {
	pool := pgPool(t)
	b := redistest.For(t, redistest.Mini)
	ctx := context.Background()
	o := newOldSystem(t, pool)
	fams, err := o.generate(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	st := legacyStore(t, b, redisstore.Options{})
	cfg := o.config()
	cfg.ClientID = "web-app"
	if _, err := newImporter(t, o, st, b, cfg).Run(ctx); err != nil {
		t.Fatal(err)
	}
	f := fams[0]
	if _, err := st.Rotate(ctx, f.current(), redisstore.Client{ClientID: "other-app"}); !errors.Is(err, redisstore.ErrWrongClient) {
		t.Fatalf("another client: %v, want ErrWrongClient", err)
	}
	if g, err := st.Rotate(ctx, f.current(), redisstore.Client{ClientID: "web-app"}); err != nil || g.ClientID != "web-app" {
		t.Fatalf("its client: %v, %v", g, err)
	}
}

// TestImportRate: Config.Rate bounds the families imported per second, so
// the load on both databases: 40 families at 100 a second take at least
// 0.39 s (the first goes at once).
func TestImportRate(t *testing.T) {
	pool := pgPool(t)
	b := redistest.For(t, redistest.Mini)
	ctx := context.Background()
	o := newOldSystem(t, pool)
	if _, err := o.generate(ctx, 40); err != nil {
		t.Fatal(err)
	}
	st := legacyStore(t, b, redisstore.Options{})
	cfg := o.config()
	cfg.Rate, cfg.Batch = 100, 7
	start := time.Now()
	stats, err := newImporter(t, o, st, b, cfg).Run(ctx)
	if err != nil || stats.Families != 40 {
		t.Fatalf("Run = %+v, %v", stats, err)
	}
	if took := time.Since(start); took < 390*time.Millisecond {
		t.Fatalf("40 families at 100/s took %v, want at least 390ms", took)
	}
}
