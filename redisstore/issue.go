package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

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
// sessions, and a login evicts at most 256 in all (its first call's and
// those of at most 8 further calls), so a user far over a lowered cap comes
// down by up to 256 sessions per login. If those calls fail, the login
// still succeeds and the next one evicts.
//
// The session is bound to c.ClientID and to the DPoP key c.JKT, each if
// set, for life (see Client). Every
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
	var hb [hashLen + 2 + MaxClientIDLen + keyBindingLen]byte
	h := appendKeyBinding(appendClientBinding(append(hb[:0], th[:]...), c.ClientID), c.JKT)
	var uh [userHashLen]byte
	s.kr.userHash(uh[:], userID)
	signer := s.kr.signer

	ks := keysFor(s.opt.KeyPrefix, uh[:], sid[:])
	if err := s.moveIn(ctx, ks.index, ""); err != nil {
		return Grant{}, err
	}
	keys := []string{ks.session, ks.index}
	args := []any{memberOf(ks.session), storedID(userID), h, string(appendStatePrefix(nil, 0, signer.id)),
		s.opt.IdleTTL.Milliseconds(), s.opt.AbsoluteTTL.Milliseconds(), s.margin(),
		storedID(c.DeviceID), c.DeviceName, ip, packUserAgent(c.UserAgent), s.opt.MaxSessions, call[:],
		binary.BigEndian.AppendUint32(nil, clientSum(ip, c.UserAgent)), s.channel}
	r, err := parseReply(s.script(ctx, scriptIssue, keys, args...).Result())
	if err == nil && r.code == codeAtCap {
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
	case codeAtCap:
		return Grant{}, fmt.Errorf("redisstore: issue.lua asked for candidates twice")
	case codeExists:
		return Grant{}, fmt.Errorf("redisstore: session id %s already exists", sid)
	case codeCorrupt:
		return Grant{}, s.corrupt(ctx, errDamaged("issue.lua"), userID, sid.String(), r.now)
	default:
		return Grant{}, r.unexpected("issue.lua")
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
	s.evict(ctx, userID, ks.index, call[:], rest[k:], maxLoginEvictions-int(k))
	t.setHeader(signer.id, uh[:], sid[:], 0, expMS, absMS)
	t.seal(signer)
	return Grant{
		Token:            t.encode(s.opt.TokenPrefix),
		SessionID:        sid.String(),
		UserID:           userID,
		ClientID:         c.ClientID,
		JKT:              c.JKT,
		ExpiresAt:        time.UnixMilli(expMS),
		SessionExpiresAt: time.UnixMilli(absMS),
	}, nil
}

// evict runs evict.lua until the user is back at the cap, starting from
// candidates, for at most maxEvictCalls calls and budget evictions in all:
// each call is passed no more candidates than the budget left, and evicts
// only candidates. Its failures are not the login's: the session exists;
// the next login evicts.
func (s *Store) evict(ctx context.Context, userID, index string, call []byte, candidates []string, budget int) {
	for i := 0; i < maxEvictCalls && budget > 0 && len(candidates) > 0; i++ {
		candidates = candidates[:min(len(candidates), budget)]
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
		candidates, budget = rest[k:], budget-int(k)
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

// maxLoginEvictions bounds the sessions one login evicts, issue.lua's and
// evict.lua's together (each script call evicts at most 32), and
// maxEvictCalls the evict.lua calls of one login.
const (
	maxLoginEvictions = 256
	maxEvictCalls     = 8
)
