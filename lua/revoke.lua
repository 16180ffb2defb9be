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
-- userOf returns the user id a live session's h field ends with: after the
-- 16-byte hash, the client binding if any (byte 2, the client id's length,
-- the client id) and the key binding if any (byte 3, 16 bytes of the DPoP
-- key's thumbprint); nil for a damaged h, too short for what it announces.
local function userOf(h)
  local i = 17
  if string.byte(h, i) == 2 then
    i = i + 2 + (string.byte(h, i + 1) or #h)
  end
  if string.byte(h, i) == 3 then
    i = i + 17
  end
  if i > #h then
    return nil
  end
  return string.sub(h, i)
end

-- tombstone turns the session hash k into a tombstone in place, keeping its
-- TTL, so that k never goes missing: while k's slot migrates, a command of
-- a script on a key the node does not hold fails (the node would redirect
-- it) after the script's earlier commands ran, and DEL then HSET would lose
-- the session and its tombstone. It deletes all of the session's fields
-- but one first: at maxmemory, Redis refuses HSET as a script's first
-- write, not HDEL, nor any command after a first write.
local function tombstone(k, r, u, q)
  local fields = redis.call('HKEYS', k)
  local last = table.remove(fields)
  if #fields > 0 then
    redis.call('HDEL', k, unpack(fields))
  end
  redis.call('HSET', k, 'r', r, 'u', u, 'q', q)
  if last ~= 'r' and last ~= 'u' and last ~= 'q' then
    redis.call('HDEL', k, last)
  end
end

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
