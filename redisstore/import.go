package redisstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// LegacyFamily is one family of refresh tokens of the system the store
// replaces (rows of a SQL table that share a family id, one row per token,
// each rotation adding a row), as ImportLegacy takes it.
type LegacyFamily struct {
	// SessionID is the id the family's session gets: a UUID, the same at
	// every import of the family (the family id if it is one).
	SessionID string
	// UserID is the family's user.
	UserID string
	// Client is what the session records of the device (DeviceID,
	// DeviceName, IPAddress, UserAgent: the newest row's), checked as Issue
	// checks it; ClientID, if set, binds the session to that client.
	Client Client
	// CreatedAt is the login: the creation of the family's first row.
	CreatedAt time.Time
	// Rows are the family's tokens, oldest first: the last is the current
	// one, every other one was rotated. At least one, at most
	// MaxLegacyRows.
	Rows []LegacyRow
	// Revoked is true if the old system revoked the family (its current
	// row is revoked).
	Revoked bool
}

// LegacyRow is one token of a LegacyFamily.
type LegacyRow struct {
	// Digest is what the old system stored for the token, as raw bytes
	// (hex or base64 decoded): what Options.LegacyHash returns for it. 1 to
	// MaxLegacyDigestLen bytes.
	Digest []byte
	// CreatedAt orders the family's rows (to the microsecond); the current
	// row's is the session's last use.
	CreatedAt time.Time
	// ExpiresAt is when the old system stops accepting the token: the
	// current row's is the session's idle deadline.
	ExpiresAt time.Time
}

// MaxLegacyRows bounds the rows of one LegacyFamily: the rows of a longer
// family but the newest MaxLegacyRows are not imported (their replay is
// then refused as ErrUnknown, without revoking the session).
const MaxLegacyRows = 64

// ImportOutcome is what ImportLegacy did with a family.
type ImportOutcome int

const (
	// ImportCreated: the family's session was created.
	ImportCreated ImportOutcome = iota + 1
	// ImportAdvanced: the family had a newer current row than its session
	// (the old system rotated it since the last import); the session now
	// takes that row's token and refuses the older ones as replays.
	ImportAdvanced
	// ImportUnchanged: nothing to do: the session is up to date (or its
	// legacy token was converted and the family has no newer row), or the
	// family is revoked and was never imported.
	ImportUnchanged
	// ImportRevoked: the family is revoked in the old system; its session,
	// imported before, is revoked now (ReasonLogout).
	ImportRevoked
	// ImportEnded: the family is live in the old system, but its session,
	// imported before, has ended here (revoked, or expired); nothing
	// written. An ended session is never brought back: revoke the family in
	// the old system.
	ImportEnded
	// ImportForked: the session's legacy token was converted here, and the
	// old system has a newer row: the token was rotated in both systems, a
	// replay. The session is revoked here for reuse (EventReuseDetected);
	// revoke the family in the old system.
	ImportForked
	// ImportExpired: the family's current row is past its deadline by
	// Redis's clock; nothing written.
	ImportExpired
)

func (o ImportOutcome) String() string {
	switch o {
	case ImportCreated:
		return "created"
	case ImportAdvanced:
		return "advanced"
	case ImportUnchanged:
		return "unchanged"
	case ImportRevoked:
		return "revoked"
	case ImportEnded:
		return "ended"
	case ImportForked:
		return "forked"
	case ImportExpired:
		return "expired"
	}
	return "unknown"
}

// ImportResult is ImportLegacy's answer.
type ImportResult struct {
	Outcome ImportOutcome
	// SessionExpiresAt is the session's absolute deadline (Created,
	// Advanced, Unchanged): no token of the family, legacy or not, is
	// accepted after it, and the family's lookup keys expire then.
	SessionExpiresAt time.Time
}

// ImportLegacy makes the tokens of one family of the system the store
// replaces valid here, as one session of f.UserID: the family's current
// token is accepted by Rotate (with Options.LegacyHash set) and converted
// into a token of this store, and every older one is refused as a replay
// that revokes the session. The session is listed, counted for the cap and
// revoked like any other. Memory: the session, and one key per row, named
// by a keyed hash of its digest; all expire at the session's absolute
// deadline, or earlier.
//
// The session's idle deadline is the current row's ExpiresAt, its absolute
// deadline f.CreatedAt plus Options.AbsoluteTTL, or the current row's
// ExpiresAt if later, but at most Options.AbsoluteTTL from now (Redis's
// clock): no legacy token outlives the last import by more than
// AbsoluteTTL. The import evicts nothing at the session cap.
//
// It is idempotent and safe to run again at any time, concurrently with
// Rotate: a family imported before is brought up to date (ImportAdvanced,
// ImportForked), or revoked if the old system revoked it (ImportRevoked),
// and a session that ended here is never brought back (ImportEnded).
// Invalid input returns ErrInvalidArgument and writes nothing. The work
// is a few round trips: a read of the rows' lookup keys, one script on the
// session's slot, the lookup keys written.
func (s *Store) ImportLegacy(ctx context.Context, f LegacyFamily) (ImportResult, error) {
	if s.legacy == nil {
		return ImportResult{}, argError("legacy family", "cannot be imported: Options.LegacyHash is not set")
	}
	if err := validateUserID(f.UserID); err != nil {
		return ImportResult{}, err
	}
	ip, err := f.Client.check()
	if err != nil {
		return ImportResult{}, err
	}
	sid, err := parseSessionID(f.SessionID)
	if err != nil {
		return ImportResult{}, err
	}
	switch {
	case len(f.Rows) == 0:
		return ImportResult{}, argError("legacy rows", "are empty")
	case len(f.Rows) > MaxLegacyRows:
		f.Rows = f.Rows[len(f.Rows)-MaxLegacyRows:]
	}
	for i, r := range f.Rows {
		if len(r.Digest) == 0 || len(r.Digest) > MaxLegacyDigestLen {
			return ImportResult{}, argError("legacy digest", "of row %d is %d bytes, want 1 to %d", i, len(r.Digest), MaxLegacyDigestLen)
		}
	}
	var uh [userHashLen]byte
	s.kr.userHash(uh[:], f.UserID)
	ks := keysFor(s.opt.KeyPrefix, uh[:], sid[:])
	if err := s.moveIn(ctx, ks.index, ks.session); err != nil {
		return ImportResult{}, err
	}
	stored := storedID(f.UserID)

	// Which rows were imported before.
	lookups := make([][2]string, len(f.Rows))
	for i, r := range f.Rows {
		lookups[i][0], lookups[i][1] = s.legacy.lookupAt(s.opt.KeyPrefix, r.Digest)
	}
	known, err := s.existing(ctx, lookups)
	if err != nil {
		return ImportResult{}, err
	}
	anyKnown, allKnown := false, true
	for _, k := range known {
		anyKnown = anyKnown || k
		allKnown = allKnown && k
	}
	if f.Revoked {
		if !anyKnown {
			return ImportResult{Outcome: ImportUnchanged}, nil
		}
		n, err := s.revoke(ctx, ks, stored, ReasonLogout, nil)
		if err != nil || n == 0 {
			return ImportResult{Outcome: ImportUnchanged}, err
		}
		return ImportResult{Outcome: ImportRevoked}, nil
	}

	cur := f.Rows[len(f.Rows)-1]
	var next token
	vh, _ := s.virtual(cur.Digest, &next)
	next = token{}
	h := appendClientBinding(vh[:], f.Client.ClientID)
	var call [callIDLen]byte
	if err := newCallID(call[:]); err != nil {
		return ImportResult{}, fmt.Errorf("redisstore: call id: %w", err)
	}
	st := binary.BigEndian.AppendUint32(append([]byte(nil), call[:]...), clientSum(ip, f.Client.UserAgent))
	st = appendStatePrefix(st, 0, s.kr.signer.id)
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	run := func(commit bool) (reply, error) {
		return parseReply(s.script(ctx, scriptImport, []string{ks.session, ks.index},
			memberOf(ks.session), stored, h, orderText(cur.CreatedAt.UnixMicro()), cur.CreatedAt.UnixMilli(), cur.ExpiresAt.UnixMilli(),
			f.CreatedAt.UnixMilli(), s.opt.AbsoluteTTL.Milliseconds(), s.opt.IdleTTL.Milliseconds(), s.margin(), st,
			storedID(f.Client.DeviceID), f.Client.DeviceName, ip, packUserAgent(f.Client.UserAgent),
			flag(anyKnown), flag(commit), s.channel).Result())
	}
	// The lookup entries of rows not imported before are written before
	// the session moves to a newer row (so that the newest row is accepted
	// from the moment the session takes it), and after the session is
	// created (so that no entry names a session that does not exist).
	r, err := run(allKnown)
	if err != nil {
		return ImportResult{}, err
	}
	if r.code == codeAdvanced && !allKnown {
		if err := s.writeLookups(ctx, f.Rows, lookups, known, uh, sid, r); err != nil {
			return ImportResult{}, err
		}
		if r, err = run(true); err != nil {
			return ImportResult{}, err
		}
	}
	switch r.code {
	case codeOK, codeAdvanced, codeUnchanged:
		if err := s.writeLookups(ctx, f.Rows, lookups, known, uh, sid, r); err != nil {
			return ImportResult{}, err
		}
		x, err := r.int(0)
		if err != nil {
			return ImportResult{}, err
		}
		res := ImportResult{Outcome: ImportUnchanged, SessionExpiresAt: time.UnixMilli(x)}
		switch r.code {
		case codeOK:
			res.Outcome = ImportCreated
		case codeAdvanced:
			res.Outcome = ImportAdvanced
		}
		return res, nil
	case codeReused:
		// The newer rows' lookup entries, so that their tokens are refused
		// as revoked, as the family's older ones are.
		if err := s.writeLookups(ctx, f.Rows, lookups, known, uh, sid, r); err != nil {
			return ImportResult{}, err
		}
		s.emit(ctx, Event{Kind: EventReuseDetected, UserID: f.UserID, SessionID: sid.String(), Reason: ReasonReuse, Time: time.UnixMilli(r.now)})
		return ImportResult{Outcome: ImportForked}, s.awaitReplicas(ctx, ks.session, true)
	case codeRevoked, codeEnded:
		return ImportResult{Outcome: ImportEnded}, nil
	case codeExpired:
		return ImportResult{Outcome: ImportExpired}, nil
	case codeExists:
		return ImportResult{}, fmt.Errorf("%w: session %s holds another user's session", ErrCorrupt, sid)
	default:
		return ImportResult{}, r.unexpected("import.lua")
	}
}

// existing reports which of the lookup entries (bucket, field) exist, in
// one pipeline.
func (s *Store) existing(ctx context.Context, entries [][2]string) ([]bool, error) {
	cmds := make([]*redis.BoolCmd, len(entries))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range entries {
			cmds[i] = p.HExists(ctx, e[0], e[1])
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	out := make([]bool, len(entries))
	for i, c := range cmds {
		out[i] = c.Val()
	}
	return out, nil
}

// writeLookups writes the lookup entries of the rows that had none
// (lookup.lua, which keeps each bucket's TTL at the latest absolute
// deadline of the sessions it names: x, r's first field), in one pipeline.
// An entry is never changed once written: its row's family and order do
// not change.
func (s *Store) writeLookups(ctx context.Context, rows []LegacyRow, entries [][2]string, known []bool, uh [userHashLen]byte, sid [16]byte, r reply) error {
	x, err := r.int(0)
	if err != nil {
		return err
	}
	type write struct {
		bucket string
		args   []any
		cmd    *redis.Cmd
	}
	var writes []write
	for i, row := range rows {
		if !known[i] {
			lk := lookup{userHash: uh, sessionID: sid, order: row.CreatedAt.UnixMicro()}
			writes = append(writes, write{bucket: entries[i][0], args: []any{entries[i][1], lk.encode(), x}})
		}
	}
	// Errors are the commands': read below.
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range writes {
			writes[i].cmd = scriptLookup.EvalSha(ctx, p, []string{writes[i].bucket}, writes[i].args...)
		}
		return nil
	})
	for _, w := range writes {
		err := w.cmd.Err()
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			// The script cache lost it (a restart, a failover): EVAL.
			err = scriptLookup.Run(ctx, s.rdb, []string{w.bucket}, w.args...).Err()
		}
		if err != nil {
			return fmt.Errorf("redisstore: %w", err)
		}
	}
	for i := range known {
		known[i] = true
	}
	return nil
}
