package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

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
	return s.revoke(ctx, keysFor(s.opt.KeyPrefix, uh[:], sid[:]), storedID(userID), ReasonLogout, nil)
}

// RevokeToken revokes the session of a token ("log out this device", RFC
// 7009): any genuine token of the session will do, current or rotated. It
// returns how many sessions it revoked (0 if the session is already gone).
// Garbage and forgeries get ErrMalformed or ErrUnknown and revoke nothing.
// With Options.LegacyHash set, an imported legacy token revokes its session
// too.
func (s *Store) RevokeToken(ctx context.Context, raw string) (int, error) {
	var t token
	if _, err := s.open(raw, &t); err != nil {
		if !s.isLegacy(raw, err) {
			return 0, err
		}
		// A legacy token: its lookup key names the session.
		lk, _, err := s.findLegacy(ctx, raw)
		if err != nil {
			return 0, err
		}
		t.setHeader(0, lk.userHash[:], lk.sessionID[:], 0, 0, 0)
	}
	return s.revoke(ctx, keysFor(s.opt.KeyPrefix, t.userHash(), t.sessionID()), "", ReasonLogout, &t)
}

// revoke runs revoke.lua and returns how many sessions it revoked. The
// session must be userID's (stored form), or, if userID is "", t's: then
// the event names the user only if the stored user id is the one t proves;
// otherwise it names none, an EventCorrupt is reported and the error is
// ErrCorrupt (the session is revoked all the same: t is genuine).
func (s *Store) revoke(ctx context.Context, ks keys, userID string, reason Reason, t *token) (int, error) {
	var call [callIDLen]byte
	if err := newCallID(call[:]); err != nil {
		return 0, fmt.Errorf("redisstore: call id: %w", err)
	}
	if err := s.moveIn(ctx, ks.index, ks.session); err != nil {
		return 0, err
	}
	member := memberOf(ks.session)
	sid := sessionIDString(member)
	r, err := parseReply(s.script(ctx, scriptRevoke, []string{ks.session, ks.index},
		member, string(reason), userID, call[:], s.channel).Result())
	if err != nil {
		return 0, err
	}
	switch r.code {
	case codeOK:
	case codeNone:
		// Already gone, unless a move took it: then a retry revokes it on
		// the new Redis.
		if err := s.movedAway(ctx, ks.index, ErrUnknown); err != ErrUnknown {
			return 0, err
		}
		return 0, nil
	case codeCorrupt:
		return 0, s.corrupt(ctx, errDamaged("revoke.lua"), loadedID(userID), sid, r.now)
	default:
		return 0, r.unexpected("revoke.lua")
	}
	user := loadedID(r.field(0))
	var uerr error
	if t != nil {
		if user, uerr = s.boundUser(r.field(0), t); uerr != nil {
			s.corrupt(ctx, uerr, "", sid, r.now)
		}
	}
	s.emit(ctx, Event{Kind: EventSessionRevoked, UserID: user, SessionID: sid, Reason: reason, Time: time.UnixMilli(r.now)})
	return 1, errors.Join(uerr, s.awaitReplicas(ctx, ks.session, true))
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
	if err := s.moveIn(ctx, idx, ""); err != nil {
		return 0, err
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
		switch r.code {
		case codeOK:
		case codeNone:
			if err := s.movedAway(ctx, idx, ErrUnknown); err != ErrUnknown {
				return total, err
			}
			return 0, argError("keep", "session %s is not a live session of the user", keep)
		default:
			return total, r.unexpected("revoke_all.lua")
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
		// No session, unless a move took them: then a retry revokes them
		// on the new Redis.
		if err := s.movedAway(ctx, idx, ErrUnknown); err != ErrUnknown {
			return 0, err
		}
		return 0, nil
	}
	return total, s.awaitReplicas(ctx, idx, false)
}
