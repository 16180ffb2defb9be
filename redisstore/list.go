package redisstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// ListOptions selects a page of ListSessions.
type ListOptions struct {
	// Cursor is SessionPage.Next of the previous page; "" asks for the
	// first page.
	Cursor string
	// Limit is the most sessions a page holds, at most MaxListLimit.
	// Default: DefaultListLimit.
	Limit int
}

// Page sizes of ListSessions.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// SessionPage is one page of a user's sessions.
type SessionPage struct {
	Sessions []Session
	// Next is the cursor of the next page, "" after the last page. A page
	// may hold fewer than Limit sessions (even none) and still have a next
	// one: entries of sessions that ended are skipped.
	Next string
}

// ListSessions returns one page of the live sessions of userID, ordered by
// keep-until, newest first: roughly the most recently used first (to within
// IdleTTL/16). It never returns an expired or revoked session. The work per
// call is bounded by the page size. Pages are read one at a time: a session
// that is rotated while a listing pages through (its keep-until moves up)
// may be skipped, one revoked may leave a neighbour listed twice. A damaged
// session (a field of its hash missing or malformed) is skipped and
// reported as an EventCorrupt: the page holds the others. It writes
// nothing. A bad cursor or limit returns ErrInvalidArgument.
func (s *Store) ListSessions(ctx context.Context, userID string, opt ListOptions) (SessionPage, error) {
	if err := validateUserID(userID); err != nil {
		return SessionPage{}, err
	}
	limit := opt.Limit
	switch {
	case limit == 0:
		limit = DefaultListLimit
	case limit < 0 || limit > MaxListLimit:
		return SessionPage{}, argError("limit", "is %d, want 1 to %d", limit, MaxListLimit)
	}
	curScore, curMember := "", ""
	if opt.Cursor != "" {
		score, sid, ok := parseCursor(opt.Cursor)
		if !ok {
			return SessionPage{}, argError("cursor", "%q is not a cursor of ListSessions", truncate(opt.Cursor))
		}
		curScore, curMember = strconv.FormatInt(score, 10), b64.EncodeToString(sid[:])
	}
	var uh [userHashLen]byte
	s.kr.userHash(uh[:], userID)
	idx := indexKey(s.opt.KeyPrefix, uh[:])
	if err := s.moveIn(ctx, idx, ""); err != nil {
		return SessionPage{}, err
	}
	v, err := s.script(ctx, scriptList, []string{idx}, curScore, curMember, limit+1).StringSlice()
	if err != nil {
		return SessionPage{}, fmt.Errorf("redisstore: %w", err)
	}
	if len(v)%2 != 0 {
		return SessionPage{}, fmt.Errorf("redisstore: list returned %d values", len(v))
	}
	n := len(v) / 2
	var page SessionPage
	if n > limit {
		n = limit
		score, err := strconv.ParseFloat(v[2*n-1], 64)
		if err != nil {
			return SessionPage{}, fmt.Errorf("redisstore: bad index score %q", v[2*n-1])
		}
		if page.Next, err = encodeCursor(int64(score), v[2*n-2]); err != nil {
			return SessionPage{}, err
		}
	}
	if n == 0 {
		if opt.Cursor == "" {
			// No session, unless a move took them (ErrMoved: retry).
			if err := s.movedAway(ctx, idx, ErrUnknown); err != ErrUnknown {
				return SessionPage{}, err
			}
		}
		return page, nil
	}
	cmds := make([]*redis.SliceCmd, n)
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range cmds {
			cmds[i] = p.HMGet(ctx, sessionKey(idx, s.opt.KeyPrefix, v[2*i]), sessionFields...)
		}
		return nil
	})
	if err != nil {
		return SessionPage{}, fmt.Errorf("redisstore: %w", err)
	}
	page.Sessions = make([]Session, 0, n)
	for i, cmd := range cmds {
		rec, err := readRecord(cmd.Val())
		if errors.Is(err, ErrCorrupt) {
			s.corrupt(ctx, err, userID, sessionIDString(v[2*i]), 0)
			continue
		}
		if err != nil {
			return SessionPage{}, err
		}
		if rec.userID != userID || rec.revoked != "" {
			continue
		}
		page.Sessions = append(page.Sessions, rec.session(sessionIDString(v[2*i])))
	}
	return page, nil
}

// A cursor is base64url of the keep-until (8 bytes) and the session id (16
// bytes) of the last index entry of a page.
func encodeCursor(score int64, member string) (string, error) {
	var b [24]byte
	binary.BigEndian.PutUint64(b[:8], uint64(score))
	if n, err := b64.Decode(b[8:], []byte(member)); err != nil || n != 16 {
		return "", fmt.Errorf("redisstore: bad index member %q", member)
	}
	return b64.EncodeToString(b[:]), nil
}

func parseCursor(c string) (int64, [16]byte, bool) {
	var b [24]byte
	var sid [16]byte
	if len(c) != b64.EncodedLen(len(b)) {
		return 0, sid, false
	}
	if n, err := b64.Decode(b[:], []byte(c)); err != nil || n != len(b) {
		return 0, sid, false
	}
	score := int64(binary.BigEndian.Uint64(b[:8]))
	if score < 0 || score >= 1<<48 {
		return 0, sid, false
	}
	copy(sid[:], b[8:])
	return score, sid, true
}

// sessionFields are the fields ListSessions reads, in the order readRecord
// decodes them.
var sessionFields = []string{fHash, fState, fCreated, fAbsolute, fDevice, fName, fIP, fAgent, fReason}

// Positions in sessionFields.
const (
	rfHash = iota
	rfState
	rfCreated
	rfAbsolute
	rfDevice
	rfName
	rfIP
	rfAgent
	rfReason
)

// record is a session hash as ListSessions reads it.
type record struct {
	userID, clientID, revoked           string
	keyBound                            bool
	deviceID, deviceName, ip, userAgent string
	st                                  state
	created, absolute                   int64
}

// readRecord decodes an HMGET of sessionFields. A missing session has an
// empty userID, a revoked one a reason.
func readRecord(v []any) (record, error) {
	if len(v) != len(sessionFields) {
		return record{}, fmt.Errorf("redisstore: HMGET returned %d fields, want %d", len(v), len(sessionFields))
	}
	str := func(i int) string {
		s, _ := v[i].(string)
		return s
	}
	r := record{
		revoked:  str(rfReason),
		deviceID: loadedID(str(rfDevice)), deviceName: str(rfName), ip: str(rfIP), userAgent: str(rfAgent),
	}
	if r.revoked != "" {
		return r, nil
	}
	h := str(rfHash)
	if h == "" {
		if v[rfState] != nil {
			return record{}, fmt.Errorf("%w: session field h missing", ErrCorrupt)
		}
		return r, nil // gone
	}
	if len(h) <= hashLen {
		return record{}, fmt.Errorf("%w: session field h holds %d bytes", ErrCorrupt, len(h))
	}
	b, user, err := splitRest(h[hashLen:])
	if err != nil {
		return record{}, err
	}
	if user == "" {
		return record{}, fmt.Errorf("%w: session field h holds no user id", ErrCorrupt)
	}
	r.clientID, r.keyBound, r.userID = b.clientID, b.keyBound, loadedID(user)
	if r.st, err = parseState(str(rfState)); err != nil {
		return record{}, fmt.Errorf("%w: session field s: %w", ErrCorrupt, err)
	}
	r.created, err = strconv.ParseInt(str(rfCreated), 10, 64)
	if err != nil {
		return record{}, fmt.Errorf("%w: session field c: %w", ErrCorrupt, err)
	}
	r.absolute, err = strconv.ParseInt(str(rfAbsolute), 10, 64)
	if err != nil {
		return record{}, fmt.Errorf("%w: session field x: %w", ErrCorrupt, err)
	}
	return r, nil
}

func (r *record) session(id string) Session {
	return Session{
		ID:               id,
		UserID:           r.userID,
		ClientID:         r.clientID,
		KeyBound:         r.keyBound,
		DeviceID:         r.deviceID,
		DeviceName:       r.deviceName,
		IPAddress:        r.ip,
		UserAgent:        unpackUserAgent(r.userAgent),
		CreatedAt:        time.UnixMilli(r.created),
		LastUsedAt:       time.UnixMilli(r.st.lastUsed),
		ExpiresAt:        time.UnixMilli(r.st.expires(r.absolute)),
		SessionExpiresAt: time.UnixMilli(r.absolute),
	}
}
