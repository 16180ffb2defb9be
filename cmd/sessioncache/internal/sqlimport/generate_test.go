package sqlimport

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Kinds of generated family.
type famKind int

const (
	famLive famKind = iota
	famRevoked
	famExpired
)

// genFamily is a generated family of the old table.
type genFamily struct {
	oldFamily
	kind famKind
}

// generate fills the table with n families of 1 to 5 rows each (every
// rotation revoked its predecessor), over n/3 users: one in ten revoked
// (all rows), one in ten expired (its newest row expired an hour ago), the
// rest live (the newest row created within the last rows hours, valid for
// a week). It writes with COPY and returns the families in table order
// of nothing in particular.
func (o *oldSystem) generate(ctx context.Context, n int) ([]*genFamily, error) {
	var now time.Time
	if err := o.pool.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		return nil, err
	}
	users := make([]uuid.UUID, max(1, n/3))
	for i := range users {
		users[i] = uuid.New()
	}
	fams := make([]*genFamily, n)
	var rows [][]any
	for i := range fams {
		f := &genFamily{oldFamily: oldFamily{id: uuid.New(), user: users[i%len(users)]}}
		switch i % 10 {
		case 3:
			f.kind = famRevoked
		case 7:
			f.kind = famExpired
		}
		nrows := 1 + i%5
		last := now.Add(-time.Duration(1+i%50) * time.Minute)
		for j := 0; j < nrows; j++ {
			created := last.Add(-time.Duration(nrows-1-j) * time.Hour)
			expires := created.Add(7 * 24 * time.Hour)
			if f.kind == famExpired {
				expires = now.Add(-time.Hour - time.Duration(nrows-1-j)*time.Hour)
			}
			newest := j == nrows-1
			revoked := !newest || f.kind == famRevoked
			var revokedAt any
			if revoked {
				revokedAt = created.Add(time.Hour)
				if newest {
					revokedAt = now.Add(-time.Minute)
				}
			}
			tok, h := newOldToken()
			f.tokens = append(f.tokens, tok)
			rows = append(rows, []any{f.user, h, f.id, expires, revoked, revokedAt, "dev-" + fmt.Sprint(i%7), "Firefox on Linux", "192.0.2.7", created})
		}
		fams[i] = f
	}
	_, err := o.pool.CopyFrom(ctx, pgx.Identifier{o.table},
		[]string{"user_id", "token_hash", "family_id", "expires_at", "is_revoked", "revoked_at", "device_id", "device_name", "ip_address", "created_at"},
		pgx.CopyFromRows(rows))
	if err != nil {
		return nil, fmt.Errorf("copy into %s: %w", o.table, err)
	}
	if _, err := o.pool.Exec(ctx, "ANALYZE "+o.table); err != nil {
		return nil, err
	}
	return fams, nil
}

// count returns how many of fams are of kind k.
func count(fams []*genFamily, k famKind) int {
	n := 0
	for _, f := range fams {
		if f.kind == k {
			n++
		}
	}
	return n
}
