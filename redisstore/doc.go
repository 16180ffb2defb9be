// Package redisstore keeps the refresh tokens and login sessions of API
// gateways in Redis: a single server, Sentinel or Redis Cluster, with no
// code change.
//
// A login (Store.Issue) starts a session and returns its first refresh
// token. Store.Rotate exchanges the current token for its successor in one
// atomic Lua script: of any number of concurrent rotations of one token,
// exactly one creates the successor; the token just rotated returns the
// same successor within a short grace window (two browser tabs); any older
// token of the session, presented again, revokes the whole session
// (ErrReused). Store.Validate checks a token with one read. Sessions are
// listed (ListSessions, paged) and revoked one by one, by token or all at
// once (RevokeAll).
//
// Redis keeps only keyed hashes of tokens, every key has a TTL, and memory
// per session does not grow with rotations. Every decision that compares
// two moments uses Redis's own clock, so service instances whose clocks
// disagree decide alike, and a client retry after a lost reply is
// recognised by its call id. No call does work proportional to one user's
// number of sessions.
//
// Concurrent calls to one Redis node share requests (Options.MaxInFlight):
// while a few requests to the node are in flight, further calls wait and
// then go out together as one pipeline, so that Redis serves more of them
// per core; a lone caller, or a few, never wait.
//
// The caller owns the Redis client (redis.UniversalClient) and closes it.
// Outcomes are sentinel errors matched with errors.Is: ErrMalformed,
// ErrUnknown, ErrExpired, ErrRevoked, ErrReused, ErrCorrupt,
// ErrInvalidArgument, ErrMoved. Anything else means Redis failed.
package redisstore
