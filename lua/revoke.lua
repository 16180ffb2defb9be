-- revoke.lua: revoke one session (logout). The session hash is replaced by a
-- tombstone that records the reason until the session would have expired.
--
-- KEYS[1] -> the session hash
-- KEYS[2] -> the user's session index
-- ARGV[1] -> session id (member of KEYS[2])
-- ARGV[2] -> reason
-- ARGV[3] -> user id the session must belong to ("" = any)
-- ARGV[4] -> id of this call (8 random bytes; a client retry resends it)
-- ARGV[5] -> the revocation channel: the session revoked is published
--            there as reason, ':' and its id
--
-- Returns {code, now (unix ms, Redis's clock), ...}:
--   {1, now, user} revoked, by this call (or by its earlier attempt, whose
--                  reply was lost: the tombstone holds the call's id)
--   {14, now}      the session is damaged: h missing (s present), or too
--                  short for the bindings it announces, or without a user
--                  id; nothing written
--   {0, now}       nothing to revoke: no such live session of that user
--                  (missing, expired, already revoked, or another user's);
--                  nothing written
-- A live session's h holds a 16-byte hash, then, for a session bound to a
-- client, byte 2, the client id's length and the client id, then the user
-- id; a tombstone holds u. A session key that exists is live: it expires at its idle
-- deadline.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'h', 'r', 'q', 'u', 's')
if f[2] then
  if f[3] == ARGV[4] then
    return {1, now, f[4]}
  end
  return {0, now}
end
local u = f[1] and userOf(f[1])
if (f[1] and not u) or (not f[1] and f[5]) then
  return {14, now}
end
if not u or (ARGV[3] ~= '' and u ~= ARGV[3]) then
  return {0, now}
end
tombstone(KEYS[1], ARGV[2], u, ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[2] .. ':' .. ARGV[1])
return {1, now, u}
