package redisstore

import (
	"context"
	"fmt"
)

// CheckSession reports whether sessionID is a live session of userID, with
// one read and no token: what a service asks when it cannot answer from
// memory whether the session behind a credential of its own (an access
// token naming the session) still lives. It returns nil for a live
// session, a *RevokedError with the reason (matching ErrRevoked) for a
// revoked one whose record is still kept, ErrUnknown if Redis holds no such
// session (it expired, or never existed), and ErrCorrupt if the session
// belongs to another user. It writes nothing. Bad input returns
// ErrInvalidArgument.
func (s *Store) CheckSession(ctx context.Context, userID, sessionID string) error {
	if err := validateUserID(userID); err != nil {
		return err
	}
	sid, err := parseSessionID(sessionID)
	if err != nil {
		return err
	}
	var uh [userHashLen]byte
	s.kr.userHash(uh[:], userID)
	ks := keysFor(s.opt.KeyPrefix, uh[:], sid[:])
	if err := s.moveIn(ctx, ks.index, ks.session); err != nil {
		return err
	}
	key := ks.session
	cmd, _ := s.batch.run(ctx, &call{args: []any{"hmget", key, fHash, fReason}, route: key})
	v, err := cmd.Slice()
	if err != nil {
		return fmt.Errorf("redisstore: %w", err)
	}
	if len(v) != 2 {
		return fmt.Errorf("redisstore: HMGET returned %d fields, want 2", len(v))
	}
	if h, _ := v[0].(string); len(h) > hashLen {
		_, stored, err := splitRest(h[hashLen:])
		if err != nil {
			return err
		}
		if stored != storedID(userID) {
			return ErrCorrupt
		}
		return nil
	}
	if reason, _ := v[1].(string); reason != "" {
		return &RevokedError{Reason: Reason(reason)}
	}
	return s.movedAway(ctx, ks.index, ErrUnknown)
}
