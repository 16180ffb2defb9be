package redisstore

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"sort"
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
	rdb redis.UniversalClient
	opt Options
	kr  *keyring
}

// New returns a Store on rdb. The caller owns rdb: the Store never closes
// it. New checks the options but does not contact Redis; call Ping for that.
func New(rdb redis.UniversalClient, opt Options) (*Store, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil Redis client", ErrInvalidOptions)
	}
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	kr, err := newKeyring(opt.Secret, opt.Keys)
	if err != nil {
		return nil, err
	}
	return &Store{rdb: rdb, opt: opt, kr: kr}, nil
}

// Issue starts a session for userID (a login) and returns its first refresh
// token. If Options.MaxSessions is set and the user is at the cap, the
// sessions closest to expiry are revoked in the same atomic step
// (EventSessionEvicted). Invalid input returns ErrInvalidArgument and writes
// nothing.
func (s *Store) Issue(ctx context.Context, userID string, c Client) (Grant, error) {
	if err := validateUserID(userID); err != nil {
		return Grant{}, err
	}
	if err := c.validate(); err != nil {
		return Grant{}, err
	}
	sid, err := uuid.NewRandom()
	if err != nil {
		return Grant{}, fmt.Errorf("redisstore: session id: %w", err)
	}
	now := s.opt.Now()
	nowMS := now.UnixMilli()
	absMS := nowMS + s.opt.AbsoluteTTL.Milliseconds()
	expMS := min(nowMS+s.opt.IdleTTL.Milliseconds(), absMS)

	signer := s.kr.signer
	var t token
	var uh [userHashLen]byte
	s.kr.userHash(uh[:], userID)
	t.setHeader(signer.id, uh[:], sid[:], 0, expMS, absMS)
	if _, err := rand.Read(t.b[offSecret:offMAC]); err != nil {
		return Grant{}, fmt.Errorf("redisstore: token secret: %w", err)
	}
	t.seal(signer)
	var th [hashLen]byte
	s.kr.secretHash(&th, &t)

	ks := keysFor(s.opt.KeyPrefix, uh[:], sid[:])
	member := memberOf(ks.session)
	keys := []string{ks.session, ks.index}
	st := state{gen: 0, keyID: signer.id, lastUsed: nowMS, expires: expMS}
	args := []any{nowMS, member, storedID(userID), th[:], st.String(), s.keepUntil(expMS, absMS), absMS,
		storedID(c.DeviceID), c.DeviceName, c.IPAddress, packUserAgent(c.UserAgent), s.opt.MaxSessions}
	base := len(args)
	for attempt := 0; ; attempt++ {
		r, err := parseReply(scriptIssue.Run(ctx, s.rdb, keys, args...).Result())
		if err != nil {
			return Grant{}, err
		}
		switch r.code {
		case codeOK:
			for _, m := range r.fields() {
				s.emit(ctx, Event{Kind: EventSessionEvicted, UserID: userID, SessionID: sessionIDString(m), Reason: ReasonEvicted, Time: now})
			}
			return Grant{
				Token:            t.encode(s.opt.TokenPrefix),
				SessionID:        sid.String(),
				UserID:           userID,
				ExpiresAt:        time.UnixMilli(expMS),
				SessionExpiresAt: time.UnixMilli(absMS),
			}, nil
		case codeRetry:
			if attempt+1 >= maxAttempts {
				return Grant{}, ErrContention
			}
			// The cap needs sessions evicted: pass the keys of the candidates.
			keys, args = keys[:2], args[:base]
			for _, m := range r.fields() {
				keys = append(keys, sessionKey(ks.index, s.opt.KeyPrefix, m))
				args = append(args, m)
			}
		default:
			return Grant{}, fmt.Errorf("redisstore: session id %s already exists", sid)
		}
	}
}

// Rotate exchanges the current refresh token of a session for its successor,
// atomically: of any number of concurrent rotations of one token, exactly one
// creates the successor. The session's idle deadline starts again (never past
// its absolute deadline), and c's IP address and user agent are recorded.
//
// Within Options.Grace of a rotation, presenting the token it replaced again
// (a second browser tab, a retry after a lost reply) returns the same
// successor with Grant.Replayed set, and changes nothing. Any other token of
// the session presented after its rotation (an older one, or the predecessor
// after the grace window) is a replay: the whole session is revoked and
// Rotate returns ErrReused.
//
// Other outcomes: ErrMalformed and ErrUnknown (decided without Redis for
// garbage and forgeries, which never revoke anything), ErrExpired, and
// ErrRevoked (a *RevokedError) for a session revoked earlier. A Redis failure
// is returned as an error; the rotation then either happened in full or not
// at all, and a retry within the grace window returns the same successor.
func (s *Store) Rotate(ctx context.Context, raw string, c Client) (Grant, error) {
	if err := c.validate(); err != nil {
		return Grant{}, err
	}
	f := getRotateFrame()
	defer putRotateFrame(f)
	old, next := &f.old, &f.next
	k, err := s.open(raw, old)
	if err != nil {
		return Grant{}, err
	}
	nowMS := s.opt.Now().UnixMilli()
	absMS := old.absoluteMS()
	if nowMS >= absMS {
		return Grant{}, ErrExpired
	}
	expMS := min(nowMS+s.opt.IdleTTL.Milliseconds(), absMS)
	signer := s.kr.signer
	successor(next, old, k, signer, expMS)
	var oldHash, nextHash [hashLen]byte
	s.kr.secretHash(&oldHash, old)
	s.kr.secretHash(&nextHash, next)
	f.pack(&oldHash, &nextHash, state{gen: next.generation(), keyID: signer.id, lastUsed: nowMS, expires: expMS})
	f.now, f.exp, f.keep = nowMS, expMS, s.keepUntil(expMS, absMS)
	f.gen, f.tokExp = int64(old.generation()), old.expiresMS()
	f.grace = s.opt.Grace.Milliseconds()
	f.device, f.ip = "", c.IPAddress
	f.userAgent.set(c.UserAgent)
	if s.opt.GraceSameDevice {
		// A device id no session has, when the caller gives none.
		f.device = "\x00"
		if c.DeviceID != "" {
			f.device = storedID(c.DeviceID)
		}
	}
	ks := keysFor(s.opt.KeyPrefix, old.userHash(), old.sessionID())
	f.keys = [2]string{ks.session, ks.index}
	r, err := parseReply(scriptRotate.Run(ctx, s.rdb, f.keys[:], f.args[:]...).Result())
	if err != nil {
		return Grant{}, err
	}
	member := memberOf(ks.session)
	g := Grant{
		SessionID:        sessionIDString(member),
		ExpiresAt:        time.UnixMilli(expMS),
		SessionExpiresAt: time.UnixMilli(absMS),
	}
	switch r.code {
	case codeOK:
		g.UserID = loadedID(r.field(0))
		g.Token = next.encode(s.opt.TokenPrefix)
		return g, nil
	case codeGrace:
		g.UserID = loadedID(r.field(0))
		// The current token is the successor of the presented one (the
		// script matched the hash of its secret): derive it again, with the
		// key and deadline it was minted with.
		kid, err1 := strconv.Atoi(r.field(1))
		curExp, err2 := parseMS(r.field(2))
		if err1 != nil || err2 != nil || kid < 0 || kid > 255 || s.kr.byID[kid] == nil {
			return Grant{}, ErrUnknown
		}
		var cur token
		successor(&cur, old, k, s.kr.byID[kid], curExp)
		g.Token = cur.encode(s.opt.TokenPrefix)
		g.ExpiresAt = time.UnixMilli(curExp)
		g.Replayed = true
		s.emit(ctx, Event{Kind: EventGraceReplay, UserID: g.UserID, SessionID: g.SessionID, Time: time.UnixMilli(nowMS)})
		return g, nil
	case codeReused:
		g.UserID = loadedID(r.field(0))
		s.emit(ctx, Event{Kind: EventReuseDetected, UserID: g.UserID, SessionID: g.SessionID, Reason: ReasonReuse, Time: time.UnixMilli(nowMS)})
		if err := s.awaitReplicas(ctx, ks.session); err != nil {
			return Grant{}, errors.Join(ErrReused, err)
		}
		return Grant{}, ErrReused
	case codeRevoked:
		return Grant{}, &RevokedError{Reason: Reason(r.field(0))}
	case codeExpired:
		return Grant{}, ErrExpired
	case codeSuperseded:
		return Grant{}, &RevokedError{Reason: ReasonRotated}
	default:
		return Grant{}, s.missing(old, nowMS)
	}
}

// TokenInfo describes a valid token: what introspection (RFC 7662) reports.
type TokenInfo struct {
	SessionID string
	UserID    string
	// ExpiresAt is the token's idle deadline, SessionExpiresAt its session's
	// absolute deadline.
	ExpiresAt        time.Time
	SessionExpiresAt time.Time
}

// Validate reports whether a token is the current token of a live session,
// with one read of one field (a second read explains a refusal). It writes
// nothing: a rotated token gets a *RevokedError
// with ReasonRotated, even within the grace window, and is not treated as a
// replay. Other outcomes: ErrMalformed, ErrUnknown, ErrExpired, ErrRevoked
// (a *RevokedError with the reason).
func (s *Store) Validate(ctx context.Context, raw string) (TokenInfo, error) {
	f := getValidateFrame()
	defer putValidateFrame(f)
	t := &f.t
	if _, err := s.open(raw, t); err != nil {
		return TokenInfo{}, err
	}
	var th [hashLen]byte
	s.kr.secretHash(&th, t)
	nowMS := s.opt.Now().UnixMilli()
	if nowMS >= t.absoluteMS() {
		return TokenInfo{}, ErrExpired
	}
	ks := keysFor(s.opt.KeyPrefix, t.userHash(), t.sessionID())
	f.key = ks.session
	h, err := s.rdb.Do(ctx, f.args[:]...).Text()
	if err != nil && err != redis.Nil {
		return TokenInfo{}, fmt.Errorf("redisstore: %w", err)
	}
	// h holds the keyed hash of the current token's secret, then the user id.
	if len(h) > hashLen && subtle.ConstantTimeCompare(th[:], []byte(h[:hashLen])) == 1 {
		// The current token: its own idle deadline is the session's.
		if nowMS >= t.expiresMS() {
			return TokenInfo{}, ErrExpired
		}
		return TokenInfo{
			SessionID:        sessionIDString(memberOf(ks.session)),
			UserID:           loadedID(h[hashLen:]),
			ExpiresAt:        time.UnixMilli(t.expiresMS()),
			SessionExpiresAt: time.UnixMilli(t.absoluteMS()),
		}, nil
	}
	// Not the current token: one more read tells why.
	vals, err := s.rdb.HMGet(ctx, ks.session, "r", "s").Result()
	if err != nil {
		return TokenInfo{}, fmt.Errorf("redisstore: %w", err)
	}
	if len(vals) != 2 {
		return TokenInfo{}, fmt.Errorf("redisstore: HMGET returned %d fields, want 2", len(vals))
	}
	if reason, _ := vals[0].(string); reason != "" {
		return TokenInfo{}, &RevokedError{Reason: Reason(reason)}
	}
	str, _ := vals[1].(string)
	if str == "" {
		return TokenInfo{}, s.missing(t, nowMS)
	}
	st, err := parseState(str)
	if err != nil {
		return TokenInfo{}, err
	}
	if nowMS >= st.expires {
		return TokenInfo{}, ErrExpired
	}
	if t.generation() < st.gen {
		return TokenInfo{}, &RevokedError{Reason: ReasonRotated}
	}
	return TokenInfo{}, ErrUnknown
}

// ListSessions returns the live sessions of userID, the most recently used
// first. It never returns an expired or revoked session. It writes nothing.
func (s *Store) ListSessions(ctx context.Context, userID string) ([]Session, error) {
	if err := validateUserID(userID); err != nil {
		return nil, err
	}
	nowMS := s.opt.Now().UnixMilli()
	idx, members, err := s.liveMembers(ctx, userID, nowMS)
	if err != nil || len(members) == 0 {
		return nil, err
	}
	cmds := make([]*redis.SliceCmd, len(members))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			cmds[i] = p.HMGet(ctx, sessionKey(idx, s.opt.KeyPrefix, m), sessionFields...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	out := make([]Session, 0, len(members))
	for i, cmd := range cmds {
		rec, err := readRecord(cmd.Val())
		if err != nil {
			return nil, err
		}
		if rec.userID != userID || rec.revoked != "" || nowMS >= rec.st.expires || nowMS >= rec.absolute {
			continue
		}
		out = append(out, rec.session(sessionIDString(members[i])))
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastUsedAt.Equal(out[j].LastUsedAt) {
			return out[i].LastUsedAt.After(out[j].LastUsedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
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
	return s.revoke(ctx, keysFor(s.opt.KeyPrefix, uh[:], sid[:]), userID, ReasonLogout)
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
	return s.revoke(ctx, keysFor(s.opt.KeyPrefix, t.userHash(), t.sessionID()), "", ReasonLogout)
}

func (s *Store) revoke(ctx context.Context, ks keys, userID string, reason Reason) (int, error) {
	nowMS := s.opt.Now().UnixMilli()
	member := memberOf(ks.session)
	r, err := parseReply(scriptRevoke.Run(ctx, s.rdb, []string{ks.session, ks.index},
		nowMS, member, string(reason), storedID(userID), callID()).Result())
	if err != nil {
		return 0, err
	}
	if r.code != codeOK {
		return 0, nil
	}
	s.emit(ctx, Event{Kind: EventSessionRevoked, UserID: loadedID(r.field(0)), SessionID: sessionIDString(member), Reason: reason, Time: time.UnixMilli(nowMS)})
	return 1, s.awaitReplicas(ctx, ks.session)
}

// RevokeAll revokes every live session of userID ("log out everywhere") in
// one atomic step, except the session keep if it is not empty ("log out
// other devices"). It returns how many sessions it revoked.
func (s *Store) RevokeAll(ctx context.Context, userID, keep string) (int, error) {
	if err := validateUserID(userID); err != nil {
		return 0, err
	}
	keepMember := ""
	if keep != "" {
		sid, err := parseSessionID(keep)
		if err != nil {
			return 0, err
		}
		keepMember = b64.EncodeToString(sid[:])
	}
	id := callID()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		nowMS := s.opt.Now().UnixMilli()
		idx, members, err := s.liveMembers(ctx, userID, nowMS)
		if err != nil {
			return 0, err
		}
		keys := make([]string, 1, len(members)+1)
		keys[0] = idx
		args := make([]any, 5, len(members)+5)
		args[0], args[1], args[2], args[3], args[4] = nowMS, string(ReasonLogoutAll), storedID(userID), keepMember, id
		for _, m := range members {
			if m == keepMember {
				continue
			}
			keys = append(keys, sessionKey(idx, s.opt.KeyPrefix, m))
			args = append(args, m)
		}
		r, err := parseReply(scriptRevokeAll.Run(ctx, s.rdb, keys, args...).Result())
		if err != nil {
			return 0, err
		}
		if r.code == codeRetry {
			continue
		}
		for _, m := range r.fields() {
			s.emit(ctx, Event{Kind: EventSessionRevoked, UserID: userID, SessionID: sessionIDString(m), Reason: ReasonLogoutAll, Time: time.UnixMilli(nowMS)})
		}
		if len(r.arr) == 0 {
			return 0, nil
		}
		return len(r.arr), s.awaitReplicas(ctx, idx)
	}
	return 0, ErrContention
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

// missing decides the outcome for a genuine token whose session Redis does
// not hold: it expired, or Redis lost it.
func (s *Store) missing(t *token, nowMS int64) error {
	if nowMS >= t.expiresMS() {
		return ErrExpired
	}
	return ErrUnknown
}

// liveMembers reads the ids of userID's sessions that have not expired.
func (s *Store) liveMembers(ctx context.Context, userID string, nowMS int64) (string, []string, error) {
	var uh [userHashLen]byte
	s.kr.userHash(uh[:], userID)
	idx := indexKey(s.opt.KeyPrefix, uh[:])
	members, err := s.rdb.ZRangeByScore(ctx, idx, &redis.ZRangeBy{
		Min: "(" + strconv.FormatInt(nowMS, 10),
		Max: "+inf",
	}).Result()
	if err != nil {
		return "", nil, fmt.Errorf("redisstore: %w", err)
	}
	return idx, members, nil
}

// keepUntil is when Redis may drop a session whose idle deadline is expMS.
// Expiry is decided against the deadlines, not by Redis, so keys are kept a
// margin longer: a rotation then refreshes the TTLs only when the margin is
// used up, and most rotations write one hash and nothing else.
func (s *Store) keepUntil(expMS, absMS int64) int64 {
	return min(expMS+s.opt.IdleTTL.Milliseconds()/reclaimMarginDiv, absMS)
}

// reclaimMarginDiv sets the margin: Redis drops a session at most
// IdleTTL/reclaimMarginDiv after it expired.
const reclaimMarginDiv = 16

func (s *Store) emit(ctx context.Context, e Event) {
	if s.opt.OnEvent != nil {
		s.opt.OnEvent(ctx, e)
	}
}

// successor writes to next the successor of prev. The successor's secret is
// a keyed hash of prev (under the key that signed prev), so the same
// predecessor always yields the same secret, and only this store can compute
// it; key id and deadline come from the caller.
func successor(next, prev *token, prevKey, nextKey *key, expMS int64) {
	next.setHeader(nextKey.id, prev.userHash(), prev.sessionID(), prev.generation()+1, expMS, prev.absoluteMS())
	prevKey.succ(next.b[offSecret:offMAC], prev.authenticated())
	next.seal(nextKey)
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
