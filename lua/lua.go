// Package lua holds the Redis scripts of sessioncache, one file per atomic
// operation. Each file opens with its contract: the keys it touches (all in
// one cluster slot, all passed in KEYS), its arguments and its return codes.
// A script cannot call another's code, so the few lines that read the user
// id out of a session's h field (userOf), and those that turn a session into
// a tombstone in place (tombstone), stand in each script that needs them.
package lua

import _ "embed"

var (
	// Issue creates a session at login and enforces the session cap.
	//
	//go:embed issue.lua
	Issue string

	// Evict brings a user back to the session cap after a login.
	//
	//go:embed evict.lua
	Evict string

	// Rotate exchanges the current token for its successor, answers grace
	// replays and retries, and revokes a session on reuse.
	//
	//go:embed rotate.lua
	Rotate string

	// Revoke revokes one session.
	//
	//go:embed revoke.lua
	Revoke string

	// RevokeAll revokes one batch of a user's sessions.
	//
	//go:embed revoke_all.lua
	RevokeAll string

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
	//
	//go:embed legacy.lua
	Legacy string

	// Import creates, or brings up to date, the session of a family of
	// legacy tokens.
	//
	//go:embed import.lua
	Import string

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
