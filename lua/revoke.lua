-- revoke.lua: revoke one session (logout). The session hash is replaced by a
-- tombstone that records the reason until the session would have expired.
--
-- KEYS[1] -> the session hash
-- KEYS[2] -> the user's session index
-- ARGV[1] -> now (unix ms)
-- ARGV[2] -> session id (member of KEYS[2])
-- ARGV[3] -> reason
-- ARGV[4] -> user id the session must belong to ("" = any)
-- ARGV[5] -> id of this call (random; a client retry resends it)
--
-- Returns:
--   {1, user} revoked, by this call (or by its earlier attempt, whose reply
--             was lost: the tombstone holds the call's id)
--   {0}       nothing to revoke: no such live session of that user (missing,
--             expired, already revoked, or another user's); nothing written
-- A live session's h holds a 16-byte hash, then the user id; a tombstone
-- holds u.
local f = redis.call('HMGET', KEYS[1], 'h', 'r', 's', 'q', 'u')
local u, r, s = f[1] and string.sub(f[1], 17), f[2], f[3]
if r and f[4] == ARGV[5] then
  return {1, f[5]}
end
if r or not u or (ARGV[4] ~= '' and u ~= ARGV[4]) then
  return {0}
end
local e = string.match(s, ':(%d+)$')
if tonumber(ARGV[1]) >= tonumber(e) then
  return {0}
end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'r', ARGV[3], 'u', u, 'q', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZREM', KEYS[2], ARGV[2])
return {1, u}
