// Package lua holds the Redis scripts of sessioncache, one file per atomic
// operation. Each file opens with its contract: the keys it touches (all in
// one cluster slot, all passed in KEYS), its arguments and its return codes.
// A script cannot call another's code, so the functions scripts share are
// files of their own, put in front of each script that needs them when the
// script is built (below): userof.lua reads the user id out of a session's
// h field, tombstone.lua turns a session into a tombstone in place.
package lua

import _ "embed"

var (
	// Issue creates a session at login and enforces the session cap.
	Issue = userOf + tombstone + issueBody

	// Evict brings a user back to the session cap after a login.
	Evict = userOf + tombstone + evictBody

	// Rotate exchanges the current token for its successor, answers grace
	// replays and retries, and revokes a session on reuse.
	Rotate = tombstone + rotateBody

	// Revoke revokes one session.
	Revoke = userOf + tombstone + revokeBody

	// RevokeAll revokes one batch of a user's sessions.
	RevokeAll = userOf + tombstone + revokeAllBody

	// List reads one page of a user's session index.
	//
	//go:embed list.lua
	List string

	// Inspect reads why a token is not the current one, with Redis's clock.
	//
	//go:embed inspect.lua
	Inspect string

	// DPoPReplay remembers the jti of a DPoP proof, or refuses it as a
	// replay (the service's, not the store's: cmd/sessioncache/internal/dpop).
	//
	//go:embed dpop_replay.lua
	DPoPReplay string

	// Touch rewrites a key's TTL unchanged, so that a WAIT after it covers
	// every earlier write to the key.
	//
	//go:embed touch.lua
	Touch string

	// Legacy converts a legacy token (of the system the store replaces)
	// into the session's first token, or answers its replay.
	Legacy = tombstone + legacyBody

	// Import creates, or brings up to date, the session of a family of
	// legacy tokens.
	Import = userOf + tombstone + importBody

	// Lookup writes the lookup entry of an imported legacy token.
	//
	//go:embed lookup.lua
	Lookup string

	// MoveTake takes the keys of one hash tag out of the Redis a store
	// moves from (redisstore Options.MoveFrom) into a move record.
	//
	//go:embed move_take.lua
	MoveTake string

	// MovePut restores the keys of a move record on the Redis a store
	// moves to.
	//
	//go:embed move_put.lua
	MovePut string

	// MoveDone deletes a move record once its keys are restored.
	//
	//go:embed move_done.lua
	MoveDone string
)

// The scripts' own files, and the functions they share.
var (
	//go:embed userof.lua
	userOf string
	//go:embed tombstone.lua
	tombstone string

	//go:embed issue.lua
	issueBody string

	//go:embed evict.lua
	evictBody string

	//go:embed rotate.lua
	rotateBody string

	//go:embed revoke.lua
	revokeBody string

	//go:embed revoke_all.lua
	revokeAllBody string

	//go:embed legacy.lua
	legacyBody string

	//go:embed import.lua
	importBody string
)
