// Package lua holds the Redis scripts of sessioncache, one file per atomic
// operation. Each file opens with its contract: the keys it touches (all in
// one cluster slot, all passed in KEYS), its arguments and its return codes.
package lua

import _ "embed"

var (
	// Issue creates a session at login and enforces the session cap.
	//
	//go:embed issue.lua
	Issue string

	// Rotate exchanges the current token for its successor, answers grace
	// replays and revokes a session on reuse.
	//
	//go:embed rotate.lua
	Rotate string

	// Revoke revokes one session.
	//
	//go:embed revoke.lua
	Revoke string

	// RevokeAll revokes all of a user's sessions but perhaps one.
	//
	//go:embed revoke_all.lua
	RevokeAll string

	// Touch rewrites a key's TTL unchanged, so that a WAIT after it covers
	// every earlier write to the key.
	//
	//go:embed touch.lua
	Touch string
)
