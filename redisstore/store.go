package redisstore

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// Store keeps refresh tokens and login sessions in Redis. It is safe for
// concurrent use. It works unchanged on a single Redis, behind Sentinel
// (redis.NewFailoverClient) and on Redis Cluster (redis.NewClusterClient):
// every operation touches the keys of one user, which share a cluster slot.
type Store struct {
	rdb     redis.UniversalClient
	opt     Options
	kr      *keyring
	batch   *batcher
	channel string // the revocation channel (schema.go)
}

// New returns a Store on rdb. The caller owns rdb: the Store never closes
// it. New checks the options but does not contact Redis; call Ping for that.
func New(rdb redis.UniversalClient, opt Options) (*Store, error) {
	if rdb == nil {
		return nil, optionError("client", "nil", "New needs a Redis client")
	}
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	kr, err := newKeyring(opt.Secret, opt.Keys)
	if err != nil {
		return nil, err
	}
	return &Store{rdb: rdb, opt: opt, kr: kr, batch: newBatcher(rdb, opt.MaxInFlight), channel: opt.KeyPrefix + revocationChannel}, nil
}

// Issue starts a session for userID (a login) and returns its first refresh
// token. Its deadlines come from Redis's clock.
//
// At the session cap (Options.MaxSessions), the login revokes sessions
// (EventSessionEvicted): of the user's least-kept sessions (the lowest
// keep-until in the index, at most 95), the least recently used. Alone, a
// login at the cap evicts and creates in one atomic step. Concurrent logins
// never fail each other: a login whose candidates were taken meanwhile
// creates its session anyway and then evicts, in further script calls,
// until the user is back at the cap; a user holds more sessions than the cap
// only while logins are in flight. Each script call evicts at most 32
// sessions and a login makes at most 8 such calls, so a user far over a
// lowered cap comes down by up to 256 sessions per login. If those calls
// fail, the login still succeeds and the next one evicts.
//
// The session is bound to c.ClientID, if set, for life (see Client). Every
// session a login evicts is published on the revocation channel, in the
// same atomic step (see WatchRevocations).
//
// Invalid input returns ErrInvalidArgument and writes nothing. A retry after
// a lost reply (go-redis retries by default) returns the same session and
// reports the same evictions.
func (s *Store) Issue(ctx context.Context, userID string, c Client) (Grant, error) {
	if err := validateUserID(userID); err != nil {
		return Grant{}, err
	}
	ip, err := c.check()
	if err != nil {
		return Grant{}, err
	}
	sid, err := uuid.NewRandom()
	if err != nil {
		return Grant{}, fmt.Errorf("redisstore: session id: %w", err)
	}
	var call [callIDLen]byte
	if err := newCallID(call[:]); err != nil {
		return Grant{}, fmt.Errorf("redisstore: call id: %w", err)
	}
	var t token
	if _, err := rand.Read(t.b[offSecret:offMAC]); err != nil {
		return Grant{}, fmt.Errorf("redisstore: token secret: %w", err)
	}
	var th [hashLen]byte
	s.kr.secretHash(&th, &t)
	var hb [hashLen + 2 + MaxClientIDLen]byte
	h := appendClientBinding(append(hb[:0], th[:]...), c.ClientID)
	var uh [userHashLen]byte
	s.kr.userHash(uh[:], userID)
	signer := s.kr.signer

	ks := keysFor(s.opt.KeyPrefix, uh[:], sid[:])
	keys := []string{ks.session, ks.index}
	args := []any{memberOf(ks.session), storedID(userID), h, string(appendStatePrefix(nil, 0, signer.id)),
		s.opt.IdleTTL.Milliseconds(), s.opt.AbsoluteTTL.Milliseconds(), s.margin(),
		storedID(c.DeviceID), c.DeviceName, ip, packUserAgent(c.UserAgent), max(s.opt.MaxSessions, 0), call[:],
		binary.BigEndian.AppendUint32(nil, clientSum(ip, c.UserAgent)), s.channel}
	r, err := parseReply(s.script(ctx, scriptIssue, keys, args...).Result())
	if err == nil && r.code == codeRetry {
		// At the cap: call again with the keys of the candidates.
		keys, args = candidateArgs(keys, args, ks.index, s.opt.KeyPrefix, r.strings(0))
		r, err = parseReply(s.script(ctx, scriptIssue, keys, args...).Result())
	}
	if err != nil {
		return Grant{}, err
	}
	switch r.code {
	case codeOK:
	case codeRevoked:
		s.emitEvicted(ctx, userID, r, r.strings(1))
		return Grant{}, &RevokedError{Reason: Reason(r.field(0))}
	case codeRetry:
		return Grant{}, fmt.Errorf("redisstore: issue.lua asked for candidates twice")
	default:
		return Grant{}, fmt.Errorf("redisstore: session id %s already exists", sid)
	}
	expMS, err1 := r.int(0)
	absMS, err2 := r.int(1)
	k, err3 := r.int(2)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Grant{}, err
	}
	rest := r.strings(3)
	if k < 0 || int(k) > len(rest) {
		return Grant{}, fmt.Errorf("redisstore: issue.lua reported %d evictions of %d ids", k, len(rest))
	}
	s.emitEvicted(ctx, userID, r, rest[:k])
	s.evict(ctx, userID, ks.index, call[:], rest[k:])
	t.setHeader(signer.id, uh[:], sid[:], 0, expMS, absMS)
	t.seal(signer)
	return Grant{
		Token:            t.encode(s.opt.TokenPrefix),
		SessionID:        sid.String(),
		UserID:           userID,
		ClientID:         c.ClientID,
		ExpiresAt:        time.UnixMilli(expMS),
		SessionExpiresAt: time.UnixMilli(absMS),
	}, nil
}

// evict runs evict.lua until the user is back at the cap, for at most
// maxEvictCalls calls, starting from candidates. Its failures are not the
// login's: the session exists; the next login evicts.
func (s *Store) evict(ctx context.Context, userID, index string, call []byte, candidates []string) {
	for i := 0; i < maxEvictCalls && len(candidates) > 0; i++ {
		keys, args := candidateArgs([]string{index}, []any{storedID(userID), s.opt.MaxSessions, call, s.channel}, index, s.opt.KeyPrefix, candidates)
		r, err := parseReply(s.script(ctx, scriptEvict, keys, args...).Result())
		if err != nil {
			return
		}
		k, err := r.int(0)
		rest := r.strings(1)
		if err != nil || k < 0 || int(k) > len(rest) {
			return
		}
		s.emitEvicted(ctx, userID, r, rest[:k])
		candidates = rest[k:]
	}
}

// candidateArgs appends the keys and ids of candidate sessions to a
// script's keys and arguments.
func candidateArgs(keys []string, args []any, index, prefix string, ids []string) ([]string, []any) {
	for _, m := range ids {
		keys = append(keys, sessionKey(index, prefix, m))
		args = append(args, m)
	}
	return keys, args
}

// emitEvicted reports sessions that a login evicted.
func (s *Store) emitEvicted(ctx context.Context, userID string, r reply, ids []string) {
	for _, m := range ids {
		s.emit(ctx, Event{Kind: EventSessionEvicted, UserID: userID, SessionID: sessionIDString(m), Reason: ReasonEvicted, Time: time.UnixMilli(r.now)})
	}
}

// Rotate exchanges the current refresh token of a session for its successor,
// atomically: of any number of concurrent rotations of one token, exactly one
// creates the successor. The session's idle deadline starts again from
// Redis's clock (never past its absolute deadline), and c's IP address and
// user agent are recorded.
//
// Within Options.Grace of a rotation, presenting the token it replaced again
// (a second browser tab) returns the same successor with Grant.Replayed set,
// and revokes nothing. Any other token of the session presented after its
// rotation (an older one, or the predecessor after the grace window) is a
// replay: the whole session is revoked and Rotate returns ErrReused, with
// a Grant that names the revoked session and its user (and holds no token).
//
// A retry of the same call after a lost reply (go-redis retries by default)
// is recognised by the call's id, with or without grace, and returns what
// the first attempt returned, even if another tab got the same successor
// by a grace replay and rotated it once more meanwhile. The record is
// bounded: a retry that arrives after two more rotations, or a retry of a
// grace replay after one, is treated as what it then looks like, a replay.
//
// If c.ClientID is set and the session is bound to another client, Rotate
// returns ErrWrongClient and changes nothing (see Client). A reuse
// revocation is published on the revocation channel in the same atomic
// step (see WatchRevocations).
//
// Other outcomes: ErrMalformed and ErrUnknown (decided without Redis for
// garbage and forgeries, which never revoke anything), ErrExpired, ErrRevoked
// (a *RevokedError with the reason) for a session revoked earlier, and
// ErrCorrupt if Redis holds another user id than the token's. A Redis
// failure is returned as an error; the rotation then happened in full or not
// at all.
func (s *Store) Rotate(ctx context.Context, raw string, c Client) (Grant, error) {
	ip, err := c.check()
	if err != nil {
		return Grant{}, err
	}
	f := getRotateFrame()
	owned := true
	defer func() { putRotateFrame(f, owned) }()
	old, next := &f.old, &f.next
	k, err := s.open(raw, old)
	if err != nil {
		return Grant{}, err
	}
	gen := old.generation() + 1
	if gen == 0 {
		return Grant{}, ErrExpired // 2^32 rotations
	}
	signer := s.kr.signer
	k.succ(next.b[offSecret:offMAC], old.authenticated())
	var oldHash, nextHash [hashLen]byte
	s.kr.secretHash(&oldHash, old)
	s.kr.secretHash(&nextHash, next)
	if err := f.pack(&rotateArgs{
		oldHash: &oldHash, nextHash: &nextHash, keyID: signer.id, gen: gen,
		absMS: old.absoluteMS(), idleMS: s.opt.IdleTTL.Milliseconds(),
		graceMS: max(s.opt.Grace.Milliseconds(), 0), marginMS: s.margin(),
		checkDevice: s.opt.GraceSameDevice, device: storedID(c.DeviceID), ip: ip, ua: c.UserAgent,
		clientID: c.ClientID, channel: s.channel,
	}); err != nil {
		return Grant{}, fmt.Errorf("redisstore: call id: %w", err)
	}
	ks := keysFor(s.opt.KeyPrefix, old.userHash(), old.sessionID())
	f.keys = [2]string{ks.session, ks.index}
	f.call.route = ks.session
	var cmd *redis.Cmd
	cmd, owned = s.batch.run(ctx, &f.call)
	r, err := parseReply(cmd.Result())
	if err != nil {
		return Grant{}, err
	}
	g := Grant{
		SessionID:        sessionIDString(memberOf(ks.session)),
		SessionExpiresAt: time.UnixMilli(old.absoluteMS()),
	}
	switch r.code {
	case codeOK:
		if g.ClientID, g.UserID, err = s.boundRest(r.field(0), old); err != nil {
			return Grant{}, err
		}
		expMS := min(r.now+s.opt.IdleTTL.Milliseconds(), old.absoluteMS())
		next.setHeader(signer.id, old.userHash(), old.sessionID(), gen, expMS, old.absoluteMS())
		next.seal(signer)
		g.Token, g.ExpiresAt = next.encode(s.opt.TokenPrefix), time.UnixMilli(expMS)
		return g, nil
	case codeHandOut:
		if g.ClientID, g.UserID, err = s.boundRest(r.field(0), old); err != nil {
			return Grant{}, err
		}
		// The token to hand out is the successor of the presented one (the
		// script matched the hash of its secret, or this call's id): derive
		// it again, with the key and deadline it was minted with.
		st, err := parseState(r.field(1))
		kind, kerr := r.int(2)
		if err == nil && kerr == nil && kind == handOutPrevious {
			// The previous token: its last used is in p; its key id and
			// idle lifetime are taken from the current one (they differ
			// only if a deploy changed them between two rotations).
			st.gen--
			st.lastUsed, err = strconv.ParseInt(r.field(3), 10, 64)
		}
		if err != nil || kerr != nil || st.gen != gen || s.kr.byID[st.keyID] == nil {
			return Grant{}, fmt.Errorf("%w: cannot hand out generation %d from state %q", ErrCorrupt, gen, r.field(1))
		}
		nk := s.kr.byID[st.keyID]
		expMS := st.expires(old.absoluteMS())
		next.setHeader(nk.id, old.userHash(), old.sessionID(), gen, expMS, old.absoluteMS())
		next.seal(nk)
		g.Token, g.ExpiresAt = next.encode(s.opt.TokenPrefix), time.UnixMilli(expMS)
		switch kind {
		case handOutGrace:
			g.Replayed = true
			s.emit(ctx, Event{Kind: EventGraceReplay, UserID: g.UserID, SessionID: g.SessionID, Time: time.UnixMilli(r.now)})
		case handOutRetry, handOutPrevious:
			// The first attempt created this token: no event, as then.
		}
		return g, nil
	case codeReused:
		user, err := s.boundUser(r.field(0), old)
		if err != nil {
			return Grant{}, err
		}
		s.emit(ctx, Event{Kind: EventReuseDetected, UserID: user, SessionID: g.SessionID, Reason: ReasonReuse, Time: time.UnixMilli(r.now)})
		revoked := Grant{SessionID: g.SessionID, UserID: user}
		if err := s.awaitReplicas(ctx, ks.session, true); err != nil {
			return revoked, errors.Join(ErrReused, err)
		}
		return revoked, ErrReused
	case codeRevoked:
		return Grant{}, &RevokedError{Reason: Reason(r.field(0))}
	case codeExpired:
		return Grant{}, ErrExpired
	case codeClient:
		return Grant{}, ErrWrongClient
	default:
		return Grant{}, missing(old, r.now)
	}
}

// TokenInfo describes a valid token: what introspection (RFC 7662) reports.
type TokenInfo struct {
	SessionID string
	UserID    string
	ClientID  string // the client the session was issued to; "" for none
	// ExpiresAt is the token's idle deadline, SessionExpiresAt its session's
	// absolute deadline.
	ExpiresAt        time.Time
	SessionExpiresAt time.Time
}

// Validate reports whether a token is the current token of a live session,
// with one read of one field and no clock: a session key exists exactly as
// long as its current token is valid (Redis expires it). A refusal is
// explained by a second read. Validate writes nothing: a rotated token gets a
// *RevokedError with ReasonRotated, even within the grace window, and is not
// treated as a replay. Other outcomes: ErrMalformed, ErrUnknown, ErrExpired,
// ErrRevoked (a *RevokedError with the reason), and ErrCorrupt if Redis holds
// another user id than the token's.
func (s *Store) Validate(ctx context.Context, raw string) (TokenInfo, error) {
	f := getValidateFrame()
	owned := true
	defer func() { putValidateFrame(f, owned) }()
	t := &f.t
	if _, err := s.open(raw, t); err != nil {
		return TokenInfo{}, err
	}
	var th [hashLen]byte
	s.kr.secretHash(&th, t)
	ks := keysFor(s.opt.KeyPrefix, t.userHash(), t.sessionID())
	f.key, f.call.route = ks.session, ks.session
	var cmd *redis.Cmd
	cmd, owned = s.batch.run(ctx, &f.call)
	h, err := cmd.Text()
	if err != nil && err != redis.Nil {
		return TokenInfo{}, fmt.Errorf("redisstore: %w", err)
	}
	// h holds the keyed hash of the current token's secret, then the client
	// binding, if any, and the user id.
	if len(h) > hashLen && subtle.ConstantTimeCompare(th[:], []byte(h[:hashLen])) == 1 {
		client, user, err := s.boundRest(h[hashLen:], t)
		if err != nil {
			return TokenInfo{}, err
		}
		return TokenInfo{
			SessionID:        sessionIDString(memberOf(ks.session)),
			UserID:           user,
			ClientID:         client,
			ExpiresAt:        time.UnixMilli(t.expiresMS()),
			SessionExpiresAt: time.UnixMilli(t.absoluteMS()),
		}, nil
	}
	// Not the current token: one more read tells why.
	v, err := s.script(ctx, scriptInspect, []string{ks.session}).Slice()
	if err != nil {
		return TokenInfo{}, fmt.Errorf("redisstore: %w", err)
	}
	if len(v) != 3 {
		return TokenInfo{}, fmt.Errorf("redisstore: inspect returned %d values, want 3", len(v))
	}
	nowMS, _ := v[0].(int64)
	if reason, _ := v[1].(string); reason != "" {
		return TokenInfo{}, &RevokedError{Reason: Reason(reason)}
	}
	str, _ := v[2].(string)
	if str == "" {
		return TokenInfo{}, missing(t, nowMS)
	}
	st, err := parseState(str)
	if err != nil {
		return TokenInfo{}, err
	}
	if t.generation() < st.gen {
		return TokenInfo{}, &RevokedError{Reason: ReasonRotated}
	}
	return TokenInfo{}, ErrUnknown
}

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
// may be skipped, one revoked may leave a neighbour listed twice. It writes
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

// RevokeSession revokes one session of userID and returns how many sessions
// it revoked: 1, or 0 if the user has no such live session. Every token of
// the session is then refused with a *RevokedError (ReasonLogout).
func (s *Store) RevokeSession(ctx context.Context, userID, sessionID string) (int, error) {
	if err := validateUserID(userID); err != nil {
		return 0, err
	}
	sid, err := parseSessionID(sessionID)
	if err != nil {
		return 0, err
	}
	var uh [userHashLen]byte
	s.kr.userHash(uh[:], userID)
	n, _, err := s.revoke(ctx, keysFor(s.opt.KeyPrefix, uh[:], sid[:]), storedID(userID), ReasonLogout)
	return n, err
}

// RevokeToken revokes the session of a token ("log out this device", RFC
// 7009): any genuine token of the session will do, current or rotated. It
// returns how many sessions it revoked (0 if the session is already gone).
// Garbage and forgeries get ErrMalformed or ErrUnknown and revoke nothing.
func (s *Store) RevokeToken(ctx context.Context, raw string) (int, error) {
	var t token
	if _, err := s.open(raw, &t); err != nil {
		return 0, err
	}
	n, user, err := s.revoke(ctx, keysFor(s.opt.KeyPrefix, t.userHash(), t.sessionID()), "", ReasonLogout)
	if n > 0 {
		if _, uerr := s.boundUser(user, &t); uerr != nil {
			return n, errors.Join(uerr, err)
		}
	}
	return n, err
}

// revoke runs revoke.lua; it returns how many sessions it revoked and the
// stored user id of the session.
func (s *Store) revoke(ctx context.Context, ks keys, userID string, reason Reason) (int, string, error) {
	var call [callIDLen]byte
	if err := newCallID(call[:]); err != nil {
		return 0, "", fmt.Errorf("redisstore: call id: %w", err)
	}
	member := memberOf(ks.session)
	r, err := parseReply(s.script(ctx, scriptRevoke, []string{ks.session, ks.index},
		member, string(reason), userID, call[:], s.channel).Result())
	if err != nil {
		return 0, "", err
	}
	if r.code != codeOK {
		return 0, "", nil
	}
	user := r.field(0)
	s.emit(ctx, Event{Kind: EventSessionRevoked, UserID: loadedID(user), SessionID: sessionIDString(member), Reason: reason, Time: time.UnixMilli(r.now)})
	return 1, user, s.awaitReplicas(ctx, ks.session, true)
}

// revokeBatch is how many sessions one call of revoke_all.lua revokes at
// most: about a millisecond of Redis's time.
const revokeBatch = 128

// RevokeAll revokes every session of userID ("log out everywhere"), except
// the session keep if it is not empty ("log out other devices"), and returns
// how many it revoked. keep must be a live session of userID; otherwise
// RevokeAll returns ErrInvalidArgument and revokes nothing.
//
// Sessions are revoked in batches of at most 128 per script call, so that a
// user with any number of sessions never blocks Redis for others; the call
// returns when the user's index holds no session but keep. Every session
// that existed when RevokeAll was called is then refused. Logins that run
// concurrently never make it fail or retry: a session they create before the
// last batch is revoked too, one created after it survives.
func (s *Store) RevokeAll(ctx context.Context, userID, keep string) (int, error) {
	if err := validateUserID(userID); err != nil {
		return 0, err
	}
	var uh [userHashLen]byte
	s.kr.userHash(uh[:], userID)
	idx := indexKey(s.opt.KeyPrefix, uh[:])
	keepKey, keepMember := idx, ""
	if keep != "" {
		sid, err := parseSessionID(keep)
		if err != nil {
			return 0, err
		}
		keepMember = b64.EncodeToString(sid[:])
		keepKey = sessionKey(idx, s.opt.KeyPrefix, keepMember)
	}
	var call [callIDLen]byte
	if err := newCallID(call[:]); err != nil {
		return 0, fmt.Errorf("redisstore: call id: %w", err)
	}
	stored := storedID(userID)
	total := 0
	for first := true; ; first = false {
		// One more than a batch tells whether another follows; the kept
		// session may be among them.
		read := int64(revokeBatch)
		if keepMember != "" {
			read++
		}
		members, err := s.rdb.ZRange(ctx, idx, 0, read).Result()
		if err != nil {
			return total, fmt.Errorf("redisstore: %w", err)
		}
		if i := slices.Index(members, keepMember); keepMember != "" && i >= 0 {
			members = slices.Delete(members, i, i+1)
		}
		last := len(members) <= revokeBatch
		members = members[:min(len(members), revokeBatch)]
		if len(members) == 0 && !first {
			break
		}
		keys := make([]string, 2, len(members)+2)
		keys[0], keys[1] = idx, idx
		if first {
			keys[1] = keepKey
		}
		args := make([]any, 5, len(members)+5)
		args[0], args[1], args[2], args[3], args[4] = string(ReasonLogoutAll), stored, keepMember, call[:], s.channel
		for _, m := range members {
			keys = append(keys, sessionKey(idx, s.opt.KeyPrefix, m))
			args = append(args, m)
		}
		r, err := parseReply(s.script(ctx, scriptRevokeAll, keys, args...).Result())
		if err != nil {
			return total, err
		}
		if r.code != codeOK {
			return 0, argError("keep", "session %s is not a live session of the user", keep)
		}
		for _, m := range r.strings(0) {
			s.emit(ctx, Event{Kind: EventSessionRevoked, UserID: userID, SessionID: sessionIDString(m), Reason: ReasonLogoutAll, Time: time.UnixMilli(r.now)})
		}
		total += len(r.arr)
		if last {
			break
		}
	}
	if total == 0 {
		return 0, nil
	}
	return total, s.awaitReplicas(ctx, idx, false)
}

// Ping checks that Redis answers and loads the scripts into its script
// cache (on every master of a cluster).
func (s *Store) Ping(ctx context.Context) error {
	load := func(ctx context.Context, c redis.Scripter) error {
		for _, sc := range allScripts {
			if err := sc.Load(ctx, c).Err(); err != nil {
				return fmt.Errorf("redisstore: load script: %w", err)
			}
		}
		return nil
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return load(ctx, c) })
	}
	return load(ctx, s.rdb)
}

// CheckEvictionPolicy reads maxmemory-policy with INFO (managed Redis often
// blocks CONFIG), on every master of a cluster. Any policy but noeviction
// can silently delete live sessions and revocations: every key the store
// writes has a TTL, so even the volatile-* policies apply to them. It
// returns an error matching ErrEvictionPolicy for such a policy.
func (s *Store) CheckEvictionPolicy(ctx context.Context) error {
	check := func(ctx context.Context, c redis.Cmdable) error {
		info, err := c.Info(ctx, "memory").Result()
		if err != nil {
			return fmt.Errorf("redisstore: INFO memory: %w", err)
		}
		policy := infoField(info, "maxmemory_policy")
		if policy == "" {
			return fmt.Errorf("redisstore: INFO memory reports no maxmemory_policy")
		}
		if policy != "noeviction" {
			return fmt.Errorf("%w: %s (want noeviction)", ErrEvictionPolicy, policy)
		}
		return nil
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return check(ctx, c) })
	}
	return check(ctx, s.rdb)
}

func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// Genuine reports whether raw is a token this store issued (well formed,
// and its MAC verifies under one of the store's keys), without Redis: it
// says nothing of whether the token is current or its session lives. A
// service uses it to recognise a refresh token where none should travel.
func (s *Store) Genuine(raw string) bool {
	var t token
	_, err := s.open(raw, &t)
	t = token{}
	return err == nil
}

// open parses raw and checks its MAC. It returns the key that signed it.
func (s *Store) open(raw string, t *token) (*key, error) {
	if !parseToken(raw, s.opt.TokenPrefix, t) {
		return nil, ErrMalformed
	}
	k := s.kr.byID[t.keyID()]
	if k == nil || !t.verify(k) {
		return nil, ErrUnknown
	}
	return k, nil
}

// boundRest splits what follows the hash in t's session's h field into the
// client id and the user id, checking the user id as boundUser does.
func (s *Store) boundRest(rest string, t *token) (clientID, userID string, err error) {
	clientID, stored, err := splitRest(rest)
	if err != nil {
		return "", "", err
	}
	userID, err = s.boundUser(stored, t)
	return clientID, userID, err
}

// boundUser returns the user id that Redis holds for t's session, after
// checking that it is the one t was issued for: the token carries a MACed
// keyed hash of it. Anyone who can write to Redis could otherwise make
// their own token report another user's id.
func (s *Store) boundUser(stored string, t *token) (string, error) {
	id := loadedID(stored)
	var uh [userHashLen]byte
	s.kr.userHash(uh[:], id)
	if subtle.ConstantTimeCompare(uh[:], t.userHash()) != 1 {
		return "", ErrCorrupt
	}
	return id, nil
}

// missing decides the outcome for a genuine token whose session Redis does
// not hold, by Redis's clock: it expired, or Redis lost it (a failover that
// dropped the last writes).
func missing(t *token, nowMS int64) error {
	if nowMS >= t.expiresMS() || nowMS >= t.absoluteMS() {
		return ErrExpired
	}
	return ErrUnknown
}

// margin is how long past its idle deadline a session stays in its user's
// index: a rotation updates the index only when the new idle deadline
// passes the session's keep-until, so most rotations leave it alone.
func (s *Store) margin() int64 {
	return s.opt.IdleTTL.Milliseconds() / marginDiv
}

// marginDiv sets the margin: IdleTTL/marginDiv.
const marginDiv = 16

func (s *Store) emit(ctx context.Context, e Event) {
	if s.opt.OnEvent != nil {
		s.opt.OnEvent(ctx, e)
	}
}

// memberOf returns the session id part of a session key: its member in the
// user's index.
func memberOf(sessionKey string) string { return sessionKey[len(sessionKey)-22:] }

func sessionIDString(member string) string {
	var id uuid.UUID
	if n, err := b64.Decode(id[:], []byte(member)); err != nil || n != len(id) {
		return member
	}
	return id.String()
}

func parseSessionID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return uuid.UUID{}, argError("session id", "%q is not a UUID", truncate(s))
	}
	return id, nil
}
