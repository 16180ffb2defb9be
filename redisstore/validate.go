package redisstore

import (
	"context"
	"crypto/subtle"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// TokenInfo describes a valid token: what introspection (RFC 7662) reports.
type TokenInfo struct {
	SessionID string
	UserID    string
	ClientID  string // the client the session was issued to; "" for none
	KeyBound  bool   // the session is bound to a DPoP key
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
	if err := s.moveIn(ctx, ks.index, ks.session); err != nil {
		return TokenInfo{}, err
	}
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
		b, user, err := s.boundRest(h[hashLen:], t)
		if err != nil {
			return TokenInfo{}, s.corrupt(ctx, err, "", sessionIDString(memberOf(ks.session)), 0)
		}
		return TokenInfo{
			SessionID:        sessionIDString(memberOf(ks.session)),
			UserID:           user,
			ClientID:         b.clientID,
			KeyBound:         b.keyBound,
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
		return TokenInfo{}, s.movedAway(ctx, ks.index, missing(t, nowMS))
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

// validateFrame runs Validate's HGET without allocating its arguments.
type validateFrame struct {
	t    token
	key  string
	args [3]any
	call call
}

var validateFrames = sync.Pool{New: func() any {
	f := &validateFrame{}
	f.args = [3]any{"hget", &f.key, fHash}
	f.call.args = f.args[:]
	return f
}}

func getValidateFrame() *validateFrame { return validateFrames.Get().(*validateFrame) }

// putValidateFrame is putRotateFrame for Validate.
func putValidateFrame(f *validateFrame, owned bool) {
	f.t = token{}
	if !owned {
		return
	}
	f.key, f.call.route = "", ""
	validateFrames.Put(f)
}
