package redisstore

// The stored data, described once: the two kinds of key, every field of a
// session hash, the layout of the s field, and each script's reply codes.
// The Go code uses these names; schema_test.go checks the README's tables
// against them. The scripts (lua/) cannot import Go: their contract headers
// repeat the layouts, and the contract suite runs them.

// Kinds of key. All keys of one user share the hash tag {T}, where T encodes
// the first 6 bytes of the user hash (a keyed hash of the user id), so every
// script touches one cluster slot, and users spread over all slots:
//
//	<prefix>{T}:s:<session id>   hash: one session (token family); it expires
//	                             at its current token's idle deadline
//	<prefix>{T}:u:<U>            zset: the user's sessions, scored by
//	                             keep-until; it expires with its longest-kept
//
// U encodes the other 6 bytes of the user hash. Neither key names the user.
// Session ids are 16 random bytes, written as 22 base64url characters.
//
// A third kind exists only for imported sessions (legacy.go, import.go):
//
//	<prefix>{B}:l                hash: lookup entries of legacy tokens, field:
//	                             12 bytes of a keyed hash of the digest the
//	                             old system stored for the token; value:
//	                             where its session is (version byte 1, user
//	                             hash, session id, the row's order: 8 bytes
//	                             big-endian); it expires at the latest
//	                             absolute deadline of the sessions it names
//
// where B encodes the first 2 bytes of that keyed hash: 65,536 buckets,
// spread over the slots; no script touches them (an entry is read, then
// the session's script runs).
//
// A fourth kind exists only on a Redis the store moved away from
// (Options.MoveFrom, move.go), besides the move record {T}:m:
//
//	<prefix>{T}:g                string "1": the moved marker, set when a
//	                             move takes the tag's keys (move_take.lua);
//	                             it expires 24 hours later (movedMarkerTTL).
//	                             A store without MoveFrom that finds no
//	                             session of the tag answers ErrMoved while
//	                             it exists, not ErrUnknown
const (
	kindSession = 's'
	kindIndex   = 'u'
	kindLookup  = 'l'
	kindMoved   = 'g'
)

// A field of a session hash. Short names keep small hashes small, and every
// value stays under 64 bytes (hash-max-listpack-value), so that a session
// stays a listpack.
type field struct {
	name      string
	tombstone bool // a field of a revoked session's tombstone, not of a live session
	doc       string
}

// Fields of a session hash.
const (
	fHash     = "h"
	fState    = "s"
	fPrevious = "p"
	fCreated  = "c"
	fAbsolute = "x"
	fDevice   = "d"
	fName     = "n"
	fIP       = "i"
	fAgent    = "a"
	fLegacy   = "l"
	fReason   = "r"
	fUser     = "u"
	fCall     = "q"
)

// schema is every field, in the order the README lists them.
var schema = []field{
	{fHash, false, "keyed hash of the current token's secret (16 raw bytes), then the client binding if any (byte 2, the client id's length, the client id), then the key binding if any (byte 3, the first 16 bytes of the DPoP key's SHA-256 thumbprint), then the user id"},
	{fState, false, "extend after, last used, creator call id, checksum of IP address and user agent, `generation:key id:idle lifetime` (layout below)"},
	{fPrevious, false, "last used and creator call id of the previous token, for a late retry"},
	{fCreated, false, "created (unix ms)"},
	{fAbsolute, false, "absolute deadline (unix ms)"},
	{fDevice, false, "device id"},
	{fName, false, "device name"},
	{fIP, false, "IP address, canonical"},
	{fAgent, false, "user agent, stock browser phrases stored as single bytes"},
	{fLegacy, false, "imported sessions only: order of the family's current legacy token (its row's creation, unix µs, 16 digits), then `c` once converted into a token of this store"},
	{fReason, true, "why the session was revoked"},
	{fUser, true, "the user id"},
	{fCall, true, "id of the call that revoked it, for retries"},
}

// Layout of the s field (0-based byte offsets), written by issue.lua and
// rotate.lua:
//
//	[0:13]   extend after: the next rotation after this moves the session's
//	         keep-until in the index (unix ms, 13 digits)
//	[13]     ':'
//	[14:27]  last used (unix ms, 13 digits)
//	[27:35]  id of the call that created the current token
//	[35:39]  checksum of the recorded IP address and user agent (clientSum)
//	[39:]    "generation:key id:idle lifetime" (the lifetime in ms)
//
// The token's idle deadline is last used + idle lifetime, capped by the
// absolute deadline. Times are 13 digits until the year 2286, so the
// scripts compare them as text.
const (
	stExtend = 0
	stLast   = 14
	stCall   = 27
	stSum    = stCall + callIDLen
	stRest   = stSum + 4
)

// callIDLen is the length of a call id. A client retry resends the call's
// arguments, id included, so a script recognises the effect of its own
// earlier attempt whose reply was lost. Ids must be unique, not secret;
// 8 bytes from crypto/rand make a collision between two calls of one session
// negligible.
const callIDLen = 8

// The client binding in the h field, for a session issued to a client:
// clientMarker, the length of the stored client id, the stored client id.
// A user id never starts with byte 2 (control characters are refused, and a
// stored UUID starts with uuidMarker), so a session issued without a client
// has none.
const clientMarker = 0x02

// The key binding in the h field, after the client binding, for a session
// bound to a DPoP key: keyMarker and the first 16 bytes of the key's
// SHA-256 thumbprint (RFC 7638), which 128 bits make as hard to match with
// another key as the whole. A user id never starts with byte 3 either.
const (
	keyMarker     = 0x03
	keyBindingLen = 17
)

// The revocation channel is the key prefix followed by revocationChannel.
// Every script that revokes sessions publishes there, in the same atomic
// step, the reason, ':' and the ids of the sessions (22 base64url bytes
// each, as in the index); Store.WatchRevocations reads it.
const revocationChannel = "revoked"

// Reply codes, as documented in each script's header: one number per kind
// of reply, whichever scripts give it. Every script answers {code, now,
// ...}, now being Redis's time in unix ms, but rotate.lua's hot path, which
// answers now (13 digits) and the user id as one string: code codeOK.
const (
	codeNone      = 0  // rotate, revoke, revoke_all, legacy: no such live session; nothing written
	codeOK        = 1  // issue, evict, rotate, revoke, revoke_all, legacy, import: done
	codeHandOut   = 2  // rotate, legacy: hand out a token again (handOut* kinds)
	codeReused    = 3  // rotate, legacy, import: a rotated token came back (import: a fork); the session is revoked
	codeRevoked   = 4  // issue, rotate, legacy, import: the session was revoked earlier
	codeExpired   = 5  // rotate, legacy, import: the token is past its deadlines
	codeClient    = 6  // rotate, legacy: the session is bound to another client
	codeAtCap     = 7  // issue: the user is at the cap; call again with these candidates for eviction
	codeExists    = 8  // issue, import: the session id exists (import: another user's)
	codeWrongKey  = 9  // rotate, legacy: the session is bound to another DPoP key
	codeNoKey     = 10 // rotate, legacy: the session is bound to a DPoP key; none given
	codeAdvanced  = 11 // import: the session moves (or is to move) to a newer legacy row
	codeUnchanged = 12 // import: the session is up to date; nothing written
	codeEnded     = 13 // import: imported before, and ended since; nothing written
	codeCorrupt   = 14 // rotate, legacy, revoke, issue: the session hash is damaged (a field missing or malformed); nothing written
	codeMembers   = 15 // move_take: the index names sessions the call did not pass; nothing written
)

// The moves of Options.MoveFrom (move.go) add two kinds of key per hash tag:
//
//	<prefix>{T}:m   on the old Redis, hash: a move under way (move_take.lua);
//	                on the new one, string: the id of the last move
//	                restored there, for a minute (move_put.lua)
//	<prefix>{T}:t   on the new Redis, for the moment of one script: an index
//	                restored before it is merged into the index there
//
// move_take answers codeNone (nothing to move), codeOK (the record) or
// codeMembers; move_put codeOK (restored) or codeUnchanged (restored
// before).

// Kinds of codeHandOut replies.
const (
	handOutRetry    = 1 // a retry of the call that created the current token
	handOutGrace    = 2 // a grace replay
	handOutPrevious = 3 // a late retry of the call that created the previous token
)

// Layout of rotate.lua's ARGV[1] (the hot path's one packed argument) and
// ARGV[2] (what only the slower outcomes read): see rotate.go's pack and the
// script's header.
