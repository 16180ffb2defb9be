package sqlimport

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// The system being replaced, for the tests: a refresh_tokens table of the
// common shape (issue 21) on the machine's PostgreSQL, and the operations
// of its repository (create, rotate, revoke_family, revoke all of a user).

// EnvPostgresURL names the PostgreSQL of the tests; unset, the machine's.
const EnvPostgresURL = "SESSIONCACHE_TEST_POSTGRES_URL"

const defaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// pgPool connects to the tests' PostgreSQL, or skips (fails under
// SESSIONCACHE_TEST_REQUIRE_REAL=1) when it does not answer.
func pgPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	url := os.Getenv(EnvPostgresURL)
	if url == "" {
		url = defaultPostgresURL
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("%s: %v", EnvPostgresURL, err)
	}
	cfg.MaxConns = 16
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		if pool != nil {
			pool.Close()
		}
		msg := fmt.Sprintf("PostgreSQL unreachable (%s; set %s): %v", cfg.ConnConfig.Host, EnvPostgresURL, err)
		if os.Getenv(redistest.EnvRequireReal) == "1" {
			t.Fatalf("%s (%s=1)", msg, redistest.EnvRequireReal)
		}
		t.Skip(msg)
	}
	t.Cleanup(pool.Close)
	return pool
}

// oldSystem is a refresh_tokens table of its own and the old repository's
// operations on it. Tokens are "pgt_" and 32 random bytes, stored as the
// hex SHA-256.
type oldSystem struct {
	pool  *pgxpool.Pool
	table string
}

// newOldSystem creates the table (a unique name), dropped when t ends.
func newOldSystem(t testing.TB, pool *pgxpool.Pool) *oldSystem {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	o := &oldSystem{pool: pool, table: "sc_legacy_refresh_tokens_" + hex.EncodeToString(b[:])}
	ddl := fmt.Sprintf(`CREATE TABLE %[1]s (
	id          bigserial PRIMARY KEY,
	user_id     uuid NOT NULL,
	token_hash  text NOT NULL UNIQUE,
	family_id   uuid NOT NULL,
	expires_at  timestamptz NOT NULL,
	is_revoked  boolean NOT NULL DEFAULT false,
	revoked_at  timestamptz,
	device_id   text,
	device_name text,
	ip_address  text,
	created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON %[1]s (family_id);
CREATE INDEX ON %[1]s (user_id);`, o.table)
	if _, err := pool.Exec(context.Background(), ddl); err != nil {
		t.Fatalf("create %s: %v", o.table, err)
	}
	t.Cleanup(func() { pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+o.table) })
	return o
}

func newOldToken() (string, string) {
	var b [32]byte
	rand.Read(b[:])
	tok := "pgt_" + base64.RawURLEncoding.EncodeToString(b[:])
	h := sha256.Sum256([]byte(tok))
	return tok, hex.EncodeToString(h[:])
}

func hashOf(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// oldFamily is what a test knows of a family: its tokens, oldest first.
type oldFamily struct {
	id     uuid.UUID
	user   uuid.UUID
	tokens []string
}

func (f *oldFamily) current() string { return f.tokens[len(f.tokens)-1] }

// login creates a family of one row, as create_token at a login.
func (o *oldSystem) login(ctx context.Context, user uuid.UUID, ttl time.Duration) (*oldFamily, error) {
	f := &oldFamily{id: uuid.New(), user: user}
	tok, h := newOldToken()
	_, err := o.pool.Exec(ctx, `INSERT INTO `+o.table+` (user_id, token_hash, family_id, expires_at, device_id, device_name, ip_address)
VALUES ($1, $2, $3, now() + $4::interval, 'dev-1', 'Firefox on Linux', '192.0.2.7')`, user, h, f.id, fmt.Sprintf("%d milliseconds", ttl.Milliseconds()))
	if err != nil {
		return nil, err
	}
	f.tokens = append(f.tokens, tok)
	return f, nil
}

// errOldReuse is the old system's answer to a rotated token.
var errOldReuse = errors.New("old system: token reused, family revoked")

// rotate is the old system's rotation of f's current token: in one
// transaction, the row is locked, revoked, and its successor inserted.
func (o *oldSystem) rotate(ctx context.Context, f *oldFamily, ttl time.Duration) error {
	tok, h := newOldToken()
	err := pgx.BeginFunc(ctx, o.pool, func(tx pgx.Tx) error {
		var id int64
		var revoked bool
		err := tx.QueryRow(ctx, `SELECT id, is_revoked FROM `+o.table+` WHERE token_hash = $1 FOR UPDATE`, hashOf(f.current())).Scan(&id, &revoked)
		if err != nil {
			return err
		}
		if revoked {
			return errOldReuse
		}
		if _, err := tx.Exec(ctx, `UPDATE `+o.table+` SET is_revoked = true, revoked_at = now() WHERE id = $1`, id); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO `+o.table+` (user_id, token_hash, family_id, expires_at, device_id, device_name, ip_address)
VALUES ($1, $2, $3, now() + $4::interval, 'dev-1', 'Firefox on Linux', '192.0.2.7')`, f.user, h, f.id, fmt.Sprintf("%d milliseconds", ttl.Milliseconds()))
		return err
	})
	if err != nil {
		return err
	}
	f.tokens = append(f.tokens, tok)
	return nil
}

// revokeFamily is the old system's revoke_family (a logout).
func (o *oldSystem) revokeFamily(ctx context.Context, family uuid.UUID) error {
	_, err := o.pool.Exec(ctx, `UPDATE `+o.table+` SET is_revoked = true, revoked_at = now() WHERE family_id = $1 AND NOT is_revoked`, family)
	return err
}

// revokeUser revokes every family of a user (a password reset).
func (o *oldSystem) revokeUser(ctx context.Context, user uuid.UUID) error {
	_, err := o.pool.Exec(ctx, `UPDATE `+o.table+` SET is_revoked = true, revoked_at = now() WHERE user_id = $1 AND NOT is_revoked`, user)
	return err
}

// familyRevoked reports whether every row of a family is revoked in the
// table.
func (o *oldSystem) familyRevoked(ctx context.Context, family uuid.UUID) (bool, error) {
	var live int
	err := o.pool.QueryRow(ctx, `SELECT count(*) FROM `+o.table+` WHERE family_id = $1 AND NOT is_revoked`, family).Scan(&live)
	return live == 0, err
}

// config is an import's configuration for this table.
func (o *oldSystem) config() Config {
	return Config{Table: o.table, Columns: DefaultColumns(), Hash: HashSHA256, Batch: 100, Workers: 8}
}

// legacyStore returns a store on b that takes this table's tokens.
func legacyStore(t testing.TB, b *redistest.Backend, opt redisstore.Options) *redistest.Store {
	t.Helper()
	h, err := HashFunc(HashSHA256, nil)
	if err != nil {
		t.Fatal(err)
	}
	opt.LegacyHash = h
	return b.NewStore(t, opt)
}

// newImporter returns an Importer of o's table into st.
func newImporter(t testing.TB, o *oldSystem, st *redistest.Store, b *redistest.Backend, cfg Config) *Importer {
	t.Helper()
	im, err := New(context.Background(), o.pool, st.Store, b.Client, b.Prefix, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return im
}
