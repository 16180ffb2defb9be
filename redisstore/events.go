package redisstore

import "time"

// Reason says why a session was revoked.
type Reason string

// Revocation reasons, stored with the revoked session until it would have
// expired and reported in events and in *RevokedError.
const (
	ReasonLogout    Reason = "logout"     // RevokeSession or RevokeToken
	ReasonLogoutAll Reason = "logout_all" // RevokeAll
	ReasonReuse     Reason = "reuse"      // a rotated token was replayed
	ReasonEvicted   Reason = "evicted"    // Options.MaxSessions was reached at login
)

// EventKind names a security-relevant outcome.
type EventKind int

const (
	// EventReuseDetected: a rotated token was presented outside the grace
	// window; its session was revoked (Reason is ReasonReuse).
	EventReuseDetected EventKind = iota + 1
	// EventSessionRevoked: a session was revoked on request (Reason says how).
	EventSessionRevoked
	// EventSessionEvicted: a login at Options.MaxSessions revoked one of the
	// user's least recently used sessions (Reason is ReasonEvicted; see
	// Store.Issue for which).
	EventSessionEvicted
	// EventGraceReplay: the immediate predecessor of the current token was
	// presented within the grace window and got the current token again.
	// Frequent grace replays from one session can mean a client bug.
	EventGraceReplay
	// EventCorrupt: a session hash was found damaged (a field missing or
	// malformed) or naming another user than its token proves; the call
	// returned ErrCorrupt, or ListSessions skipped the session. UserID is
	// the user the caller named, "" when only a token was given (a token
	// proves a keyed hash of its user id, not the id itself).
	EventCorrupt
)

func (k EventKind) String() string {
	switch k {
	case EventReuseDetected:
		return "reuse_detected"
	case EventSessionRevoked:
		return "session_revoked"
	case EventSessionEvicted:
		return "session_evicted"
	case EventGraceReplay:
		return "grace_replay"
	case EventCorrupt:
		return "corrupt"
	}
	return "unknown"
}

// Event describes a security-relevant outcome. It never holds a token.
type Event struct {
	Kind      EventKind
	UserID    string
	SessionID string
	Reason    Reason    // for revocations
	Time      time.Time // when Redis applied it, by Redis's clock
}

// ReasonRotated is not stored: only Validate reports it, for a token that
// has been rotated. Rotate answers a rotated token with a grace replay, the
// same answer again (a retry of one call), or ErrReused.
const ReasonRotated Reason = "rotated"
