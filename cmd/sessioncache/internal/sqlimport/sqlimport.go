// Package sqlimport moves the refresh tokens of a SQL table into
// sessioncache without logging anyone out (sessioncache import, issue 21).
//
// The table is the common shape of a login system's refresh tokens: one row
// per token, holding a hash of it; a family id shared by the rows of one
// login, each rotation adding a row; an expiry and a revoked flag per row.
// Every column name is a setting (Columns). A pass reads the table family
// by family, in the order of the family column (so a checkpoint, the last
// family done, lets an interrupted pass resume), and hands each family to
// redisstore.ImportLegacy, which creates its session (live families only),
// brings it up to date, or revokes it. A second pass finds nothing new.
//
// While both systems run, Follow keeps them in step: the families changed
// in the table since the last pass are passed again every Config.Follow (a
// rotation or a revocation in the old system reaches Redis), and every
// revocation in Redis (the revocation feed) is written to the table, as is
// every session that the import finds ended in Redis.
package sqlimport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/redisstore"
)

// Columns names the columns of the table. Empty optional names mean the
// table has no such column.
type Columns struct {
	ID        string // primary key: orders rows of one family created at the same moment
	User      string // user id (any type; read as text)
	Hash      string // what the old system stored of the token (text or bytea)
	Family    string // family id: a UUID becomes the session id, anything else its MD5
	Created   string // the row's creation (timestamptz, or timestamp read as UTC)
	Expires   string // when the row's token expires
	Revoked   string // boolean: the row's token was revoked (rotated or logged out); optional if RevokedAt is set
	RevokedAt string // when it was revoked; optional, needed to follow revocations without full passes

	DeviceID, DeviceName, IP, UserAgent string // optional
}

// DefaultColumns are the columns of the common shape (a SQLAlchemy
// refresh_tokens table).
func DefaultColumns() Columns {
	return Columns{ID: "id", User: "user_id", Hash: "token_hash", Family: "family_id", Created: "created_at", Expires: "expires_at",
		Revoked: "is_revoked", RevokedAt: "revoked_at", DeviceID: "device_id", DeviceName: "device_name", IP: "ip_address"}
}

// Config configures an Importer.
type Config struct {
	// Table is the table, [schema.]name.
	Table   string
	Columns Columns
	// Hash is how the table's tokens were hashed (HashSHA256 and the
	// others): for HashPlain the column holds the token itself.
	Hash string
	// ClientID, if set, binds every imported session to this OAuth client
	// (redisstore.Client.ClientID), as a login for it would.
	ClientID string
	// HashEncoding is how a text hash column writes the digest:
	// EncodingHex (default), EncodingBase64 or EncodingBase64URL. A bytea
	// column holds it raw.
	HashEncoding string
	// Rate bounds the families imported per second, and so the load on both
	// databases (about one read of the table per Batch families, and 3 to 4
	// Redis round trips per family). 0: no bound.
	Rate float64
	// Batch is how many families one read of the table takes. Default 500.
	Batch int
	// Workers is how many families are imported at once. Default 8.
	Workers int
	// Follow, if positive, makes Run keep the systems in step after its
	// first pass (see the package doc), looking for changes this often,
	// until its context ends.
	Follow time.Duration
	// Overlap is how far back before the previous look a look for changes
	// reads again, so that a transaction that committed after that look
	// with an earlier timestamp is not missed. Default 1m.
	Overlap time.Duration
	// Restart ignores a checkpoint left by an interrupted pass.
	Restart bool
	// Progress is how often a pass logs its progress. Default 5s.
	Progress time.Duration
	// Log receives progress and outcomes; never a token or a digest.
	Log *slog.Logger
}

// Stats counts what passes did, family by family.
type Stats struct {
	Families       int // families read
	Created        int // new sessions
	Advanced       int // sessions moved to a newer row of their family
	Unchanged      int // nothing to do
	Revoked        int // revoked in the table: their sessions revoked in Redis now
	Ended          int // live in the table, ended in Redis: revoked in the table now
	Forked         int // rotated in both systems: revoked in both now
	Expired        int // past their deadline by Redis's clock: not imported
	SkippedRevoked int // revoked in the table and never imported: nothing to do
	SkippedExpired int // expired in the table (and not revoked): nothing to do
	Invalid        int // rows the store cannot take (a bad user id or hash): not imported
	FieldsDropped  int // device, IP or user agent values the store refused: left out
	// Mirrored counts the families that revocations in Redis revoked in
	// the table (the feed, Ended and Forked).
	Mirrored int64
	// LegacyUntil is the latest absolute deadline of an imported session:
	// no legacy token is accepted after it (see the README, "When legacy
	// support ends").
	LegacyUntil time.Time
}

// New counts the sessions a pass created: 0 on a second run.
func (s Stats) New() int { return s.Created }

func (s *Stats) add(o Stats) {
	s.Families += o.Families
	s.Created += o.Created
	s.Advanced += o.Advanced
	s.Unchanged += o.Unchanged
	s.Revoked += o.Revoked
	s.Ended += o.Ended
	s.Forked += o.Forked
	s.Expired += o.Expired
	s.SkippedRevoked += o.SkippedRevoked
	s.SkippedExpired += o.SkippedExpired
	s.Invalid += o.Invalid
	s.FieldsDropped += o.FieldsDropped
	s.Mirrored += o.Mirrored
	if o.LegacyUntil.After(s.LegacyUntil) {
		s.LegacyUntil = o.LegacyUntil
	}
}

// Attrs returns the counts as log attributes.
func (s Stats) Attrs() []any {
	a := []any{"families", s.Families, "new", s.Created, "advanced", s.Advanced, "unchanged", s.Unchanged,
		"revoked_in_redis", s.Revoked, "revoked_in_table", s.Mirrored, "ended_in_redis", s.Ended, "forked", s.Forked,
		"expired", s.Expired, "skipped_revoked", s.SkippedRevoked, "skipped_expired", s.SkippedExpired,
		"invalid", s.Invalid, "fields_dropped", s.FieldsDropped}
	if !s.LegacyUntil.IsZero() {
		a = append(a, "legacy_tokens_until", s.LegacyUntil.UTC().Format(time.RFC3339))
	}
	return a
}

// Importer imports one table into one store.
type Importer struct {
	cfg        Config
	pool       *pgxpool.Pool
	store      *redisstore.Store
	rdb        redis.UniversalClient
	checkpoint string // the Redis key of an interrupted pass's checkpoint
	q          queries
	pace       *pacer
	log        *slog.Logger
}

// New checks cfg against the table (its columns and their types) and
// returns an Importer. store must have been made with
// Options.LegacyHash set as cfg.Hash says, on rdb, with key prefix prefix
// (where the checkpoint goes).
func New(ctx context.Context, pool *pgxpool.Pool, store *redisstore.Store, rdb redis.UniversalClient, prefix string, cfg Config) (*Importer, error) {
	if cfg.Table == "" {
		return nil, errors.New("no table")
	}
	if _, err := HashFunc(cfg.Hash, nil); err != nil && cfg.Hash != HashHMACSHA256 {
		return nil, err
	}
	if cfg.Hash == HashOff || cfg.Hash == "" {
		return nil, errors.New("the token hash is off: set how the table hashes its tokens")
	}
	if cfg.HashEncoding == "" {
		cfg.HashEncoding = EncodingHex
	}
	switch cfg.HashEncoding {
	case EncodingHex, EncodingBase64, EncodingBase64URL:
	default:
		return nil, fmt.Errorf("unknown hash encoding %q: want %s, %s or %s", cfg.HashEncoding, EncodingHex, EncodingBase64, EncodingBase64URL)
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.Overlap <= 0 {
		cfg.Overlap = time.Minute
	}
	if cfg.Progress <= 0 {
		cfg.Progress = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	q, err := buildQueries(ctx, pool, cfg.Table, cfg.Columns)
	if err != nil {
		return nil, err
	}
	return &Importer{cfg: cfg, pool: pool, store: store, rdb: rdb, checkpoint: prefix + "import:" + cfg.Table, q: q,
		pace: newPacer(cfg.Rate), log: cfg.Log}, nil
}

// Run makes a full pass over the table, from the checkpoint an interrupted
// pass left (unless Config.Restart), and returns what it did. With
// Config.Follow it then keeps the systems in step until ctx ends, and
// returns the totals with ctx's error. A Redis or database failure stops
// the pass: run again to resume.
func (im *Importer) Run(ctx context.Context) (Stats, error) {
	if im.cfg.Follow > 0 {
		return im.follow(ctx)
	}
	return im.fullPass(ctx)
}

// fullPass passes every family, resuming from the checkpoint, and deletes
// the checkpoint when done.
func (im *Importer) fullPass(ctx context.Context) (Stats, error) {
	from := ""
	if !im.cfg.Restart {
		v, err := im.rdb.Get(ctx, im.checkpoint).Result()
		if err != nil && err != redis.Nil {
			return Stats{}, fmt.Errorf("read the checkpoint: %w", err)
		}
		if v != "" {
			from = v
			im.log.Info("resuming an interrupted import", "after_family", from)
		}
	}
	st, err := im.pass(ctx, from, time.Time{})
	if err != nil {
		return st, err
	}
	if err := im.rdb.Del(ctx, im.checkpoint).Err(); err != nil {
		return st, fmt.Errorf("delete the checkpoint: %w", err)
	}
	return st, nil
}

// checkpointTTL is how long the checkpoint of an interrupted pass is kept.
const checkpointTTL = 7 * 24 * time.Hour

// pass imports the families after from (all if ""), changed since since
// (all if zero), batch by batch. A full pass (since zero) writes its
// checkpoint after each batch.
func (im *Importer) pass(ctx context.Context, from string, since time.Time) (Stats, error) {
	var total Stats
	start, lastLog := time.Now(), time.Now()
	for {
		fams, now, err := im.read(ctx, from, since)
		if err != nil {
			return total, err
		}
		if len(fams) == 0 {
			break
		}
		st, err := im.importBatch(ctx, fams, now)
		total.add(st)
		if err != nil {
			return total, err
		}
		from = fams[len(fams)-1].key
		if since.IsZero() {
			if err := im.rdb.Set(ctx, im.checkpoint, from, checkpointTTL).Err(); err != nil {
				return total, fmt.Errorf("write the checkpoint: %w", err)
			}
		}
		if time.Since(lastLog) >= im.cfg.Progress {
			lastLog = time.Now()
			im.log.Info("import progress", append(total.Attrs(), "families_per_second", rate(total.Families, time.Since(start)))...)
		}
	}
	return total, nil
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(int(float64(n)/d.Seconds()*10)) / 10
}

// family is a family as read from the table.
type family struct {
	key     string // the family column as text: the checkpoint
	f       redisstore.LegacyFamily
	expires time.Time // the current row's
	invalid error     // a row the store cannot take
}

// importBatch imports fams with Workers at once, paced, and writes the
// revocations their outcomes call for to the table.
func (im *Importer) importBatch(ctx context.Context, fams []family, now time.Time) (Stats, error) {
	var (
		mu     sync.Mutex
		st     = Stats{Families: len(fams)}
		mirror []string
		first  error
		wg     sync.WaitGroup
	)
	work := make(chan *family)
	for i := 0; i < im.cfg.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for fam := range work {
				var one Stats
				res, err := im.importFamily(ctx, fam, now, &one)
				mu.Lock()
				st.add(one)
				switch {
				case err != nil && first == nil:
					first = err
				case err == nil:
					switch res.Outcome {
					case redisstore.ImportEnded, redisstore.ImportForked:
						mirror = append(mirror, fam.f.SessionID)
					}
				}
				mu.Unlock()
			}
		}()
	}
	for i := range fams {
		if err := im.pace.wait(ctx); err != nil {
			break
		}
		work <- &fams[i]
	}
	close(work)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	if len(mirror) > 0 {
		n, err := im.mirror(ctx, mirror)
		st.Mirrored += n
		if first == nil {
			first = err
		}
	}
	return st, first
}

// importFamily imports one family and counts the outcome in st. Values of
// the device, IP address or user agent that the store refuses are left
// out; a family the store cannot take at all is counted Invalid and
// logged. Only a Redis failure is an error.
func (im *Importer) importFamily(ctx context.Context, fam *family, now time.Time, st *Stats) (redisstore.ImportResult, error) {
	f := &fam.f
	switch {
	case fam.invalid != nil:
		st.Invalid++
		im.log.Warn("family not imported", "family", fam.key, "user_id", f.UserID, "reason", fam.invalid.Error())
		return redisstore.ImportResult{}, nil
	case !f.Revoked && !fam.expires.After(now):
		st.SkippedExpired++
		return redisstore.ImportResult{}, nil
	}
	for {
		res, err := im.store.ImportLegacy(ctx, *f)
		var arg *redisstore.ArgumentError
		if errors.As(err, &arg) && dropField(&f.Client, arg.Field) {
			st.FieldsDropped++
			continue
		}
		if errors.Is(err, redisstore.ErrInvalidArgument) {
			st.Invalid++
			im.log.Warn("family not imported", "family", fam.key, "user_id", f.UserID, "reason", err.Error())
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("family %s: %w", fam.key, err)
		}
		switch res.Outcome {
		case redisstore.ImportCreated:
			st.Created++
		case redisstore.ImportAdvanced:
			st.Advanced++
		case redisstore.ImportUnchanged:
			if f.Revoked {
				st.SkippedRevoked++
			} else {
				st.Unchanged++
			}
		case redisstore.ImportRevoked:
			st.Revoked++
		case redisstore.ImportEnded:
			st.Ended++
		case redisstore.ImportForked:
			st.Forked++
		case redisstore.ImportExpired:
			st.Expired++
		}
		if res.SessionExpiresAt.After(st.LegacyUntil) {
			st.LegacyUntil = res.SessionExpiresAt
		}
		return res, nil
	}
}

// dropField empties the field of c that the store refused, and reports
// whether there was one to empty.
func dropField(c *redisstore.Client, field string) bool {
	var p *string
	switch field {
	case "device id":
		p = &c.DeviceID
	case "device name":
		p = &c.DeviceName
	case "IP address":
		p = &c.IPAddress
	case "user agent":
		p = &c.UserAgent
	default:
		return false
	}
	if *p == "" {
		return false
	}
	*p = ""
	return true
}

// read reads the next batch of families after from (all if ""), changed
// since since (all if zero), with the database's time.
func (im *Importer) read(ctx context.Context, from string, since time.Time) ([]family, time.Time, error) {
	var now time.Time
	if err := im.pool.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		return nil, now, fmt.Errorf("read %s: %w", im.cfg.Table, err)
	}
	sql, args := im.q.batch(from, since, im.cfg.Batch)
	rows, err := im.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, now, fmt.Errorf("read %s: %w", im.cfg.Table, err)
	}
	defer rows.Close()
	var out []family
	for rows.Next() {
		var (
			key, sid, user, dev, name, ip, ua string
			hash                              any
			created, expires                  time.Time
			revoked                           bool
		)
		if err := rows.Scan(&key, &sid, &user, &hash, &created, &expires, &revoked, &dev, &name, &ip, &ua); err != nil {
			return nil, now, fmt.Errorf("read %s: %w", im.cfg.Table, err)
		}
		if len(out) == 0 || out[len(out)-1].key != key {
			out = append(out, family{key: key, f: redisstore.LegacyFamily{SessionID: sid, UserID: user, CreatedAt: created}})
		}
		fam := &out[len(out)-1]
		d, err := digestOf(im.cfg.Hash, im.cfg.HashEncoding, hash)
		if err != nil && fam.invalid == nil {
			fam.invalid = err
		}
		// The rows come oldest first: the last one read is current.
		fam.f.Rows = append(fam.f.Rows, redisstore.LegacyRow{Digest: d, CreatedAt: created, ExpiresAt: expires})
		fam.f.Revoked, fam.expires = revoked, expires
		fam.f.Client = redisstore.Client{ClientID: im.cfg.ClientID, DeviceID: dev, DeviceName: name, IPAddress: ip, UserAgent: ua}
		if fam.f.UserID != user && fam.invalid == nil {
			fam.invalid = fmt.Errorf("the family's rows name two users")
		}
	}
	if err := rows.Err(); err != nil {
		return nil, now, fmt.Errorf("read %s: %w", im.cfg.Table, err)
	}
	return out, now, nil
}

// mirror revokes in the table the families of the given sessions that are
// not revoked there yet (a session id is its family's UUID, or its MD5),
// and returns how many families that changed.
func (im *Importer) mirror(ctx context.Context, sessionIDs []string) (int64, error) {
	var n int64
	for len(sessionIDs) > 0 {
		chunk := sessionIDs[:min(len(sessionIDs), 1000)]
		sessionIDs = sessionIDs[len(chunk):]
		var fams int64
		if err := im.pool.QueryRow(ctx, im.q.mirror, chunk).Scan(&fams); err != nil {
			return n, fmt.Errorf("revoke in %s: %w", im.cfg.Table, err)
		}
		n += fams
	}
	if n > 0 {
		im.log.Info("revoked in the table what Redis revoked", "families", n)
	}
	return n, nil
}

// queries are the statements an Importer runs, built once from the
// table's columns.
type queries struct {
	// selectFrom selects the columns read, from the table, for the
	// families listed by the subquery that completes it.
	selectFrom, orderBy string
	table               string // quoted
	family              string // the family column, quoted
	familyType          string // its type, for the checkpoint's cast
	changed             string // a condition on $n: the row changed since
	mirror              string // $1: session ids (uuid[])
}

// batch returns the statement and arguments that read the next batch.
func (q queries) batch(from string, since time.Time, n int) (string, []any) {
	var where []string
	args := []any{n}
	if from != "" {
		args = append(args, from)
		where = append(where, fmt.Sprintf("%s > $%d::text::%s", q.family, len(args), q.familyType))
	}
	if !since.IsZero() && q.changed != "" {
		args = append(args, since)
		where = append(where, fmt.Sprintf(q.changed, len(args)))
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	return q.selectFrom + fmt.Sprintf(" WHERE %s IN (SELECT DISTINCT %s FROM %s%s ORDER BY %s LIMIT $1)", q.family, q.family, q.table, cond, q.family) + q.orderBy, args
}

// buildQueries reads the types of the table's columns and builds the
// statements.
func buildQueries(ctx context.Context, pool *pgxpool.Pool, table string, c Columns) (queries, error) {
	var q queries
	tbl := pgx.Identifier(strings.Split(table, ".")).Sanitize()
	rows, err := pool.Query(ctx, `SELECT a.attname, t.typname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`, table)
	if err != nil {
		return q, fmt.Errorf("table %s: %w", table, err)
	}
	typ, format := map[string]string{}, map[string]string{}
	for rows.Next() {
		var name, t, f string
		if err := rows.Scan(&name, &t, &f); err != nil {
			rows.Close()
			return q, err
		}
		typ[name], format[name] = t, f
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return q, fmt.Errorf("table %s: %w", table, err)
	}
	need := map[string]string{"id": c.ID, "user": c.User, "hash": c.Hash, "family": c.Family, "created": c.Created, "expires": c.Expires}
	if c.Revoked == "" && c.RevokedAt == "" {
		return q, errors.New("the table needs a revoked column, a revoked-at column, or both")
	}
	for what, col := range map[string]string{"revoked": c.Revoked, "revoked-at": c.RevokedAt, "device-id": c.DeviceID,
		"device-name": c.DeviceName, "ip": c.IP, "user-agent": c.UserAgent} {
		if col != "" {
			need[what] = col
		}
	}
	for what, col := range need {
		if col == "" {
			return q, fmt.Errorf("the %s column is required", what)
		}
		if _, ok := typ[col]; !ok {
			return q, fmt.Errorf("table %s has no %s column %q", table, what, col)
		}
	}
	id := func(col string) string { return pgx.Identifier{col}.Sanitize() }
	text := func(col string) string {
		switch {
		case col == "":
			return "''"
		case typ[col] == "inet" || typ[col] == "cidr":
			return "coalesce(host(" + id(col) + "), '')"
		}
		return "coalesce(" + id(col) + "::text, '')"
	}
	fam := id(c.Family)
	sid := "md5(" + fam + "::text)::uuid"
	if typ[c.Family] == "uuid" {
		sid = fam
	}
	hash := id(c.Hash)
	if typ[c.Hash] != "bytea" {
		hash += "::text"
	}
	revoked := "coalesce(" + id(c.Revoked) + ", false)"
	setRevoked, notRevoked := id(c.Revoked)+" = true", "NOT "+revoked
	if c.Revoked == "" {
		revoked = id(c.RevokedAt) + " IS NOT NULL"
		setRevoked, notRevoked = id(c.RevokedAt)+" = now()", id(c.RevokedAt)+" IS NULL"
	} else if c.RevokedAt != "" {
		setRevoked += ", " + id(c.RevokedAt) + " = now()"
	}
	q.table, q.family, q.familyType = tbl, fam, format[c.Family]
	q.selectFrom = fmt.Sprintf("SELECT %s::text, (%s)::text, %s::text, %s, %s, %s, %s, %s, %s, %s, %s FROM %s",
		fam, sid, id(c.User), hash, id(c.Created), id(c.Expires), revoked, text(c.DeviceID), text(c.DeviceName), text(c.IP), text(c.UserAgent), tbl)
	q.orderBy = fmt.Sprintf(" ORDER BY %s, %s, %s", fam, id(c.Created), id(c.ID))
	if c.RevokedAt != "" {
		q.changed = "(" + id(c.Created) + " > $%[1]d OR " + id(c.RevokedAt) + " > $%[1]d)"
	}
	q.mirror = fmt.Sprintf("WITH r AS (UPDATE %s SET %s WHERE %s = ANY($1::uuid[]) AND %s RETURNING %s) SELECT count(DISTINCT %s) FROM r",
		tbl, setRevoked, sid, notRevoked, fam, fam)
	return q, nil
}

// pacer spaces out events to at most rate a second (0: no bound).
type pacer struct {
	mu    sync.Mutex
	every time.Duration
	next  time.Time
}

func newPacer(rate float64) *pacer {
	p := &pacer{}
	if rate > 0 {
		p.every = time.Duration(float64(time.Second) / rate)
	}
	return p
}

// wait returns when the next event may happen, or when ctx ends.
func (p *pacer) wait(ctx context.Context) error {
	if p.every == 0 {
		return ctx.Err()
	}
	p.mu.Lock()
	now := time.Now()
	at := p.next
	if at.Before(now) {
		at = now
	}
	p.next = at.Add(p.every)
	p.mu.Unlock()
	if d := at.Sub(now); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return ctx.Err()
}
