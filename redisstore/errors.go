package redisstore

import (
	"errors"
	"fmt"
)

// Outcomes of presenting a token. Match them with errors.Is; none of them
// means Redis failed, and none of them changed anything except ErrReused.
var (
	// ErrMalformed: the string is not a token of this store (wrong prefix,
	// length, alphabet or checksum). Decided without calling Redis.
	ErrMalformed = errors.New("redisstore: malformed token")
	// ErrUnknown: the token is well formed but this store never issued it
	// (its MAC does not verify, or its key id is not configured), or Redis
	// knows nothing of it (for example a rotation lost in a failover).
	ErrUnknown = errors.New("redisstore: unknown token")
	// ErrWrongClient: the token's session was issued to another client
	// (Client.ClientID) than the one that presents it. Nothing was written:
	// the session and its current token stay as they were.
	ErrWrongClient = errors.New("redisstore: token issued to another client")
	// ErrKeyRequired: the token's session is bound to a DPoP key
	// (Client.JKT), and the caller named none. Nothing was written.
	ErrKeyRequired = errors.New("redisstore: session bound to a DPoP key; none given")
	// ErrWrongKey: the token's session is bound to another DPoP key than the
	// caller's Client.JKT. Nothing was written: the session and its current
	// token stay as they were.
	ErrWrongKey = errors.New("redisstore: session bound to another DPoP key")
	// ErrExpired: the token's session passed its idle or absolute deadline.
	ErrExpired = errors.New("redisstore: token expired")
	// ErrRevoked: the token was rotated (Validate), or its session was
	// revoked. The error is a *RevokedError when the reason is known.
	ErrRevoked = errors.New("redisstore: token revoked")
	// ErrReused: a token that had already been rotated was presented outside
	// the grace window. The whole session was revoked by this call, so
	// ErrReused also matches ErrRevoked. Later calls with any token of the
	// session get a *RevokedError with ReasonReuse, which matches ErrRevoked
	// only.
	ErrReused error = reusedError{}
)

type reusedError struct{}

func (reusedError) Error() string { return "redisstore: token reused, session revoked" }

// Is makes errors.Is(ErrReused, ErrRevoked) true.
func (reusedError) Is(target error) bool { return target == ErrRevoked }

var (
	// ErrInvalidArgument: the call's input is invalid. Nothing was written.
	ErrInvalidArgument = errors.New("redisstore: invalid argument")
	// ErrInvalidOptions: New (or Options.Validate) was given options it
	// cannot work with. The error is an *OptionError naming the option.
	ErrInvalidOptions = errors.New("redisstore: invalid options")
	// ErrEvictionPolicy: Redis may evict keys under memory pressure, which
	// would silently drop live sessions and revocations.
	ErrEvictionPolicy = errors.New("redisstore: unsafe maxmemory-policy")
	// ErrCorrupt: Redis holds a session that is damaged (a field missing
	// or malformed) or contradicts what the token proves (its user id is
	// not the one the token was issued for). Someone with write access to
	// Redis changed it, or the data is damaged. The session is not trusted
	// and an EventCorrupt is reported. A damaged field is found before
	// anything is written; a RevokeToken whose session names another user
	// revoked it, but nothing is handed out.
	ErrCorrupt = errors.New("redisstore: session record damaged or not matching its token")
	// ErrNotReplicated: with Options.RevocationReplicas, fewer replicas than
	// asked acknowledged a revocation in time. The revocation is applied on
	// the master; a failover before the replicas catch up could undo it.
	ErrNotReplicated = errors.New("redisstore: revocation not acknowledged by enough replicas")
	// ErrMoved: a store without Options.MoveFrom found no session for the
	// token (or session) because a store with MoveFrom moved the user's
	// keys from this Redis onto another lately (its moved marker is still
	// there: 24 hours). An instance still configured for the old Redis
	// during a rolling update answers it; the caller should retry, and
	// reach an instance on the new Redis. Nothing was written.
	ErrMoved = errors.New("redisstore: the user's sessions moved to another Redis; retry")
)

// OptionError is returned, matching ErrInvalidOptions, by New and
// Options.Validate for an option they cannot work with.
type OptionError struct {
	Option string // the Options field at fault: "Grace", "Keys[1].Secret"
	Value  string // its value as the error shows it ("16 bytes" for a secret)
	Reason string // what it must be: "must be at most MaxGrace (5m0s)"
}

func optionError(option string, value any, format string, args ...any) *OptionError {
	return &OptionError{Option: option, Value: fmt.Sprint(value), Reason: fmt.Sprintf(format, args...)}
}

func (e *OptionError) Error() string {
	return "redisstore: invalid options: " + e.Option + " = " + e.Value + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidOptions) true.
func (e *OptionError) Is(target error) bool { return target == ErrInvalidOptions }

// ArgumentError is returned, matching ErrInvalidArgument, for invalid input.
// Nothing was written.
type ArgumentError struct {
	Field  string // "user id", "session id", "client id", "device id", "device name", "IP address", "user agent", "cursor", "limit", "keep"
	Reason string // what is wrong with it, e.g. "is empty"
}

func (e *ArgumentError) Error() string {
	return ErrInvalidArgument.Error() + ": " + e.Field + " " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidArgument) true.
func (e *ArgumentError) Is(target error) bool { return target == ErrInvalidArgument }

func argError(field, format string, args ...any) error {
	return &ArgumentError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// RevokedError is returned, matching ErrRevoked, when a session was revoked
// and the reason is still on record.
type RevokedError struct {
	Reason Reason
}

func (e *RevokedError) Error() string { return ErrRevoked.Error() + " (" + string(e.Reason) + ")" }

// Is makes errors.Is(err, ErrRevoked) true.
func (e *RevokedError) Is(target error) bool { return target == ErrRevoked }
