package redisstore

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults for the zero values of Options.
const (
	DefaultKeyPrefix   = "sc:"
	DefaultTokenPrefix = "sct_"
	DefaultIdleTTL     = 14 * 24 * time.Hour
	DefaultAbsoluteTTL = 30 * 24 * time.Hour
	DefaultGrace       = 15 * time.Second
	DefaultMaxSessions = 100

	DefaultReplicationTimeout = 250 * time.Millisecond

	DefaultMaxInFlight = 4
)

// Named values of Options fields. A zero field means its default, so the
// values that turn an option off are negative; New turns every negative
// value into the one encoding of "off" that the store, its scripts and its
// batcher use from then on: 0 (see Options.resolve).
const (
	// NoGrace, as Options.Grace, turns grace off: any second presentation of
	// a rotated token revokes its session (a retry of the same call is still
	// recognised by its call id and gets the same answer).
	NoGrace time.Duration = -1
	// MaxGrace is the longest grace window New accepts. Grace hands the
	// current token to whoever presents its predecessor, so it should stay
	// short.
	MaxGrace = 5 * time.Minute

	// NoSessionCap, as Options.MaxSessions, lets a user hold any number of
	// sessions. Every operation still does bounded work per call.
	NoSessionCap = -1

	// NoBatching, as Options.MaxInFlight, sends every call as a request of
	// its own, however many are in flight.
	NoBatching = -1
)

// Options configure a Store. The zero value of every field but Secret means
// the documented default.
type Options struct {
	// Secret is the store's root secret, at least 32 bytes from a
	// cryptographic random source. It keys the hash that places all of a
	// user's keys on one cluster slot, so it must stay the same for the life
	// of the data; unless Keys is set it also signs tokens (as key id 0).
	// Required.
	Secret []byte

	// Keys sign and verify tokens in place of Secret. Keys[0] signs every
	// new token; a token signed by any key in the list is accepted. To
	// rotate, put a new key first, and drop the old one once AbsoluteTTL has
	// passed. Default: Secret as key 0.
	Keys []Key

	// KeyPrefix starts every Redis key the store writes, and the name of its
	// revocation channel (KeyPrefix + "revoked", see WatchRevocations). At
	// most 64 bytes, without '{' or '}'. Default: "sc:".
	KeyPrefix string

	// TokenPrefix starts every token, so that secret scanners and people can
	// recognise one: letters, digits and '_', at most 16 bytes.
	// Default: "sct_".
	TokenPrefix string

	// IdleTTL is how long a token stays valid if it is not rotated; each
	// rotation starts it again. Default: 14 days.
	IdleTTL time.Duration

	// AbsoluteTTL is the longest a session lives from its login, however
	// often it is rotated. At least IdleTTL, at most 100 years.
	// Default: 30 days.
	AbsoluteTTL time.Duration

	// Grace is how long after a rotation the old token, presented again,
	// returns the same successor instead of being treated as stolen. It
	// covers parallel refreshes (browser tabs). Only the immediate
	// predecessor is ever in grace, and whoever presents it gets the current
	// token: see the threat model in the README. Redis's clock measures it.
	// At most MaxGrace; NoGrace (or any negative value) turns grace off: any
	// second use of a token then revokes its session. A client retry after
	// a lost reply does not need grace: it is recognised by its call id.
	// Default: 15s, or half of IdleTTL if that is shorter.
	Grace time.Duration

	// GraceSameDevice honours grace only when the caller presents the
	// session's device id: equal ids, where a caller without a device id
	// matches only a session created without one. Default: false.
	GraceSameDevice bool

	// MaxSessions caps the live sessions of one user. A login at the cap
	// revokes, in the same atomic step, the least recently used of the
	// user's least-kept sessions (see Issue). NoSessionCap (or any negative
	// value) lifts the cap. Default: 100.
	MaxSessions int

	// RevocationReplicas, if positive, makes every revocation (logout,
	// log out everywhere, and the revocation of a session whose token was
	// reused) wait until that many replicas acknowledge it (Redis WAIT).
	// Replication is asynchronous: without it, a failover right after a
	// revocation can bring the session back. A revocation that is not
	// acknowledged within ReplicationTimeout stays applied on the master, and
	// the call returns an error matching ErrNotReplicated. Rotations never
	// wait: a lost rotation costs one re-login. Default: 0 (no wait).
	RevocationReplicas int

	// ReplicationTimeout bounds the wait for RevocationReplicas.
	// Default: 250ms.
	ReplicationTimeout time.Duration

	// MaxInFlight turns on batching: how many requests the store keeps in
	// flight to one Redis node (one master of a cluster) before further
	// calls wait and share requests. A call that finds fewer in flight (and
	// no call waiting) goes out at once, alone, as without batching; one
	// that finds them all busy waits until one completes, and then goes out
	// with the calls that waited for the node, as one pipeline (how many calls
	// a pipeline carries, and how many pipelines are in flight per node, are
	// bounded in batch.go: maxBatch, maxLoops). No call waits on a timer, so a few callers see no added latency; under load, Redis reads,
	// parses and answers many calls per request, and serves more of them per
	// core. Rotate, Validate, Issue, the revocations and the first read of
	// ListSessions are batched. A waiting call whose context ends returns at
	// once with the context's error; a Redis failure is an error to every
	// call of the request. NoBatching (or any negative value) sends every
	// call alone. Default: 4.
	MaxInFlight int

	// LegacyHash, if set, makes the store accept the refresh tokens of the
	// system it replaces, imported with ImportLegacy, wherever it accepts its
	// own (Rotate, RevokeToken): a string that is not one of the store's
	// tokens is looked up by LegacyHash(token), the digest the old system
	// stored for it (raw bytes, 1 to 64; the same bytes LegacyRow.Digest
	// carries), and converted into a token of this store on its first
	// rotation (see "Migrating from a SQL table" in the README). It must be
	// deterministic and quick, and is called for every such string. nil
	// turns the legacy path off: such strings are ErrMalformed, with no
	// Redis call, as before. Default: nil.
	LegacyHash func(token string) []byte

	// MoveFrom, if set, is the Redis the store's data is moving from (a
	// single Redis, or a Sentinel group through redis.NewFailoverClient)
	// while the store runs on the Redis it moves to, usually a cluster. Every
	// call that touches a user first moves that user's keys from MoveFrom,
	// in one atomic step there: a service instance still configured for the
	// old Redis then finds the user's sessions gone (ErrMoved, for 24 hours
	// after the move: the move leaves a marker; or ErrExpired; never a
	// second successor). Sessions keep their tokens,
	// generations (so a replay of a token rotated on the old Redis revokes
	// its session), and TTLs. Writes never pause; while it is set, each call
	// costs one more round trip, to MoveFrom. MoveKey moves the rest (the
	// sessioncache move command walks the old keyspace with it); unset it
	// once the old Redis holds none of the store's keys but moved markers
	// (they expire by themselves). The new Redis must
	// run the same or a newer Redis version (RESTORE refuses a newer dump
	// format). The caller owns the client. Default: nil.
	MoveFrom redis.UniversalClient

	// OnEvent, if set, is called for every security-relevant outcome, on the
	// goroutine of the call that caused it, with that call's context (for
	// request ids and trace spans), after Redis has applied it. It must be
	// quick and must not panic. Default: nil.
	OnEvent func(context.Context, Event)
}

// maxKeyPrefixLen bounds KeyPrefix, so that the revocation channel's name
// fits rotate.lua's one-byte length.
const maxKeyPrefixLen = 64

// maxLifetime bounds AbsoluteTTL: the scripts compare times as 13-digit
// text, which holds until the year 2286.
const maxLifetime = 100 * 365 * 24 * time.Hour

// Validate reports whether New would accept o, without a Redis client: an
// error is an *OptionError, matching ErrInvalidOptions, that names the
// option at fault. Programs check their configuration with it before they
// connect.
func (o Options) Validate() error {
	o, err := o.resolve()
	if err != nil {
		return err
	}
	_, err = newKeyring(o.Secret, o.Keys)
	return err
}

// resolve checks o and returns it as the store uses it: every zero field
// set to its default, and Grace, MaxSessions and MaxInFlight 0 when they
// are off (NoGrace, NoSessionCap, NoBatching or any negative value), as the
// scripts and the batcher read them. Resolving resolved options again would
// turn "off" into the default: New resolves once.
func (o Options) resolve() (Options, error) {
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultKeyPrefix
	}
	if strings.ContainsAny(o.KeyPrefix, "{}") {
		return o, optionError("KeyPrefix", strconv.Quote(o.KeyPrefix), "must not contain '{' or '}'")
	}
	if len(o.KeyPrefix) > maxKeyPrefixLen {
		return o, optionError("KeyPrefix", strconv.Quote(truncate(o.KeyPrefix)), "must be at most %d bytes", maxKeyPrefixLen)
	}
	if o.TokenPrefix == "" {
		o.TokenPrefix = DefaultTokenPrefix
	}
	if len(o.TokenPrefix) > 16 || strings.IndexFunc(o.TokenPrefix, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_')
	}) >= 0 {
		return o, optionError("TokenPrefix", strconv.Quote(o.TokenPrefix), "must be at most 16 letters, digits or '_'")
	}
	if o.IdleTTL == 0 {
		o.IdleTTL = DefaultIdleTTL
	}
	if o.AbsoluteTTL == 0 {
		o.AbsoluteTTL = DefaultAbsoluteTTL
	}
	if o.IdleTTL < time.Millisecond {
		return o, optionError("IdleTTL", o.IdleTTL, "must be at least 1ms")
	}
	if o.AbsoluteTTL < time.Millisecond {
		return o, optionError("AbsoluteTTL", o.AbsoluteTTL, "must be at least 1ms")
	}
	if o.AbsoluteTTL > maxLifetime {
		return o, optionError("AbsoluteTTL", o.AbsoluteTTL, "must be at most 100 years")
	}
	if o.AbsoluteTTL < o.IdleTTL {
		return o, optionError("AbsoluteTTL", o.AbsoluteTTL, "must be at least IdleTTL (%v)", o.IdleTTL)
	}
	switch {
	case o.Grace == 0:
		o.Grace = min(DefaultGrace, o.IdleTTL/2)
	case o.Grace < 0:
		o.Grace = 0
	case o.Grace > MaxGrace:
		return o, optionError("Grace", o.Grace, "must be at most MaxGrace (%v)", MaxGrace)
	}
	if o.Grace >= o.IdleTTL {
		return o, optionError("Grace", o.Grace, "must be shorter than IdleTTL (%v)", o.IdleTTL)
	}
	if o.RevocationReplicas < 0 {
		return o, optionError("RevocationReplicas", o.RevocationReplicas, "must not be negative")
	}
	if o.ReplicationTimeout == 0 {
		o.ReplicationTimeout = DefaultReplicationTimeout
	}
	if o.ReplicationTimeout < time.Millisecond {
		return o, optionError("ReplicationTimeout", o.ReplicationTimeout, "must be at least 1ms")
	}
	switch {
	case o.MaxInFlight == 0:
		o.MaxInFlight = DefaultMaxInFlight
	case o.MaxInFlight < 0:
		o.MaxInFlight = 0
	}
	switch {
	case o.MaxSessions == 0:
		o.MaxSessions = DefaultMaxSessions
	case o.MaxSessions < 0:
		o.MaxSessions = 0
	}
	return o, nil
}
