package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sessioncache/sessioncache/redisstore"
)

// Postgres is the SQL design sessioncache replaces: one row per refresh
// token in a refresh_tokens table, and a rotation that is done correctly: in
// one transaction, lock the presented token's row (SELECT ... FOR UPDATE),
// revoke it and insert its successor, so that of two racing rotations only
// one succeeds. A rotated token presented again revokes its family. Every
// rotation adds a row: the table grows until a cleanup job deletes old rows.
type Postgres struct {
	pool  *pgxpool.Pool
	table string
	ttl   time.Duration
}

// NewPostgres creates a refresh-token table of its own (a unique name) on
// pool; Drop removes it.
func NewPostgres(ctx context.Context, pool *pgxpool.Pool, ttl time.Duration) (*Postgres, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	p := &Postgres{pool: pool, table: "sc_bench_refresh_tokens_" + hex.EncodeToString(b[:]), ttl: ttl}
	ddl := fmt.Sprintf(`CREATE TABLE %[1]s (
	id          bigserial PRIMARY KEY,
	token_hash  bytea NOT NULL UNIQUE,
	user_id     text NOT NULL,
	family_id   uuid NOT NULL,
	device_id   text NOT NULL,
	device_name text NOT NULL,
	ip_address  text NOT NULL,
	user_agent  text NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now(),
	expires_at  timestamptz NOT NULL,
	is_revoked  boolean NOT NULL DEFAULT false,
	revoked_at  timestamptz
);
CREATE INDEX ON %[1]s (user_id) WHERE NOT is_revoked;
CREATE INDEX ON %[1]s (family_id);`, p.table)
	if _, err := pool.Exec(ctx, ddl); err != nil {
		return nil, fmt.Errorf("bench: create %s: %w", p.table, err)
	}
	return p, nil
}

// Drop removes the store's table.
func (p *Postgres) Drop(ctx context.Context) error {
	_, err := p.pool.Exec(ctx, "DROP TABLE IF EXISTS "+p.table)
	return err
}

func pgToken() (string, [32]byte, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", b, err
	}
	tok := "pgt_" + base64.RawURLEncoding.EncodeToString(b[:])
	return tok, sha256.Sum256([]byte(tok)), nil
}

func pgHash(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

// Issue implements Store: one INSERT.
func (p *Postgres) Issue(ctx context.Context, userID string, c redisstore.Client) (string, error) {
	tok, h, err := pgToken()
	if err != nil {
		return "", err
	}
	_, err = p.pool.Exec(ctx, `INSERT INTO `+p.table+` (token_hash, user_id, family_id, device_id, device_name, ip_address, user_agent, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		h[:], userID, uuid.New(), c.DeviceID, c.DeviceName, c.IPAddress, c.UserAgent, time.Now().Add(p.ttl))
	if err != nil {
		return "", fmt.Errorf("bench: pg issue: %w", err)
	}
	return tok, nil
}

// Rotate implements Store: BEGIN; SELECT ... FOR UPDATE; then UPDATE (revoke
// the old row) and INSERT (the successor) in one batch; COMMIT. Four round
// trips, one of them a commit that waits for the WAL to reach the disk
// (unless synchronous_commit is off).
func (p *Postgres) Rotate(ctx context.Context, tok string, c redisstore.Client) (string, bool, error) {
	next, nh, err := pgToken()
	if err != nil {
		return "", false, err
	}
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return "", false, fmt.Errorf("bench: pg rotate: %w", err)
	}
	defer tx.Rollback(ctx)
	var (
		id                                   int64
		userID, deviceID, deviceName, ip, ua string
		family                               uuid.UUID
		expires                              time.Time
		revoked                              bool
	)
	err = tx.QueryRow(ctx, `SELECT id, user_id, family_id, device_id, device_name, ip_address, user_agent, expires_at, is_revoked
FROM `+p.table+` WHERE token_hash = $1 FOR UPDATE`, pgHash(tok)).
		Scan(&id, &userID, &family, &deviceID, &deviceName, &ip, &ua, &expires, &revoked)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, redisstore.ErrUnknown
	}
	if err != nil {
		return "", false, fmt.Errorf("bench: pg rotate: %w", err)
	}
	if revoked {
		// A rotated token came back: revoke its whole family.
		if _, err := tx.Exec(ctx, `UPDATE `+p.table+` SET is_revoked = true, revoked_at = now()
WHERE family_id = $1 AND NOT is_revoked`, family); err != nil {
			return "", false, fmt.Errorf("bench: pg rotate: %w", err)
		}
		if err := tx.Commit(ctx); err != nil {
			return "", false, fmt.Errorf("bench: pg rotate: %w", err)
		}
		return "", false, redisstore.ErrReused
	}
	now := time.Now()
	if !now.Before(expires) {
		return "", false, redisstore.ErrExpired
	}
	if c.IPAddress != "" {
		ip = c.IPAddress
	}
	if c.UserAgent != "" {
		ua = c.UserAgent
	}
	batch := &pgx.Batch{}
	batch.Queue(`UPDATE `+p.table+` SET is_revoked = true, revoked_at = now() WHERE id = $1`, id)
	batch.Queue(`INSERT INTO `+p.table+` (token_hash, user_id, family_id, device_id, device_name, ip_address, user_agent, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, nh[:], userID, family, deviceID, deviceName, ip, ua, now.Add(p.ttl))
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return "", false, fmt.Errorf("bench: pg rotate: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return "", false, fmt.Errorf("bench: pg rotate: %w", err)
	}
	return next, false, nil
}

// Validate implements Store: one SELECT by the unique token hash.
func (p *Postgres) Validate(ctx context.Context, tok string) error {
	var expires time.Time
	var revoked bool
	err := p.pool.QueryRow(ctx, `SELECT expires_at, is_revoked FROM `+p.table+` WHERE token_hash = $1`, pgHash(tok)).
		Scan(&expires, &revoked)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return redisstore.ErrUnknown
	case err != nil:
		return fmt.Errorf("bench: pg validate: %w", err)
	case revoked:
		return redisstore.ErrRevoked
	case !time.Now().Before(expires):
		return redisstore.ErrExpired
	}
	return nil
}

// ListSessions implements Store: the user's live (unrevoked, unexpired)
// rows, one per family.
func (p *Postgres) ListSessions(ctx context.Context, userID string) (int, error) {
	rows, err := p.pool.Query(ctx, `SELECT family_id, device_id, device_name, ip_address, user_agent, created_at, expires_at
FROM `+p.table+` WHERE user_id = $1 AND NOT is_revoked AND expires_at > now()`, userID)
	if err != nil {
		return 0, fmt.Errorf("bench: pg list: %w", err)
	}
	n := 0
	for rows.Next() {
		var family uuid.UUID
		var d, dn, ip, ua string
		var created, expires time.Time
		if err := rows.Scan(&family, &d, &dn, &ip, &ua, &created, &expires); err != nil {
			rows.Close()
			return 0, fmt.Errorf("bench: pg list: %w", err)
		}
		n++
	}
	return n, rows.Err()
}

// RevokeSession implements Store: one UPDATE of the token's family.
func (p *Postgres) RevokeSession(ctx context.Context, tok string) error {
	_, err := p.pool.Exec(ctx, `UPDATE `+p.table+` SET is_revoked = true, revoked_at = now()
WHERE family_id = (SELECT family_id FROM `+p.table+` WHERE token_hash = $1) AND NOT is_revoked`, pgHash(tok))
	if err != nil {
		return fmt.Errorf("bench: pg revoke: %w", err)
	}
	return nil
}

// RevokeAll implements Store: one UPDATE of the user's rows.
func (p *Postgres) RevokeAll(ctx context.Context, userID string) (int, error) {
	tag, err := p.pool.Exec(ctx, `UPDATE `+p.table+` SET is_revoked = true, revoked_at = now()
WHERE user_id = $1 AND NOT is_revoked`, userID)
	if err != nil {
		return 0, fmt.Errorf("bench: pg revoke all: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
