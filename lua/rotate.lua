-- rotate.lua: exchange the current refresh token of a session for its
-- successor, in one atomic step. Reads and checks come first; nothing is
-- written unless the call rotates or detects reuse.
--
-- KEYS[1]  -> the session hash
-- KEYS[2]  -> the user's session index (zset: session id -> expiry, unix ms)
-- ARGV[1]  -> generation of the presented token
-- ARGV[2]  -> keyed hash of the presented token
-- ARGV[3]  -> keyed hash of the successor
-- ARGV[4]  -> key id of the successor
-- ARGV[5]  -> now (unix ms)
-- ARGV[6]  -> idle deadline of the successor (unix ms, already capped by the
--             absolute deadline)
-- ARGV[7]  -> grace window (ms); 0 turns grace off
-- ARGV[8]  -> device id of the caller ("" = not given)
-- ARGV[9]  -> "1" if grace is honoured only for the session's device id
-- ARGV[10] -> IP address to record ("" = keep)
-- ARGV[11] -> user agent to record ("" = keep)
-- ARGV[12] -> session id (member of KEYS[2])
--
-- Returns:
--   {1, user}               rotated: the successor is the current token now
--   {2, user, kid, e, hash} grace: the presented token is the immediate
--                           predecessor, rotated less than ARGV[7] ms ago;
--                           nothing written; kid, idle deadline and hash are
--                           those of the current token, for the caller to
--                           derive it again
--   {3, user}               reused: an older token came back; the session is
--                           revoked (a tombstone holds the reason)
--   {4, reason}             revoked earlier; nothing written
--   {5}                     expired; nothing written
--   {0}                     unknown: no such session, or a token of a
--                           generation it never reached; nothing written
local f = redis.call('HMGET', KEYS[1], 'g', 'h', 'p', 'k', 't', 'e', 'x', 'u', 'd', 'r')
local g, h, p, k, t, e, x, u, d, r = f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10]
if r then
  return {4, r}
end
if not g then
  return {0}
end
local now = tonumber(ARGV[5])
local eMS = tonumber(e)
if now >= eMS or now >= tonumber(x) then
  return {5}
end
g = tonumber(g)
local gen = tonumber(ARGV[1])

if gen == g then
  if ARGV[2] ~= h then
    return {0}
  end
  local ttl = tonumber(ARGV[6]) - now
  local set = {'g', g + 1, 'h', ARGV[3], 'p', ARGV[2], 'k', ARGV[4], 't', ARGV[5], 'e', ARGV[6]}
  if ARGV[10] ~= '' then
    set[#set + 1] = 'i'
    set[#set + 1] = ARGV[10]
  end
  if ARGV[11] ~= '' then
    set[#set + 1] = 'a'
    set[#set + 1] = ARGV[11]
  end
  redis.call('HSET', KEYS[1], unpack(set))
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[12])
  -- The index lives as long as its longest-lived session.
  if redis.call('PEXPIRE', KEYS[2], ttl, 'GT') == 0 and redis.call('PTTL', KEYS[2]) < 0 then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
  return {1, u}
end

local grace = tonumber(ARGV[7])
if gen == g - 1 and ARGV[2] == p and grace > 0 and now - tonumber(t) < grace
    and (ARGV[9] ~= '1' or ARGV[8] == (d or '')) then
  return {2, u, k, e, h}
end

if gen < g then
  -- A token of this session that was already rotated: revoke the session.
  -- The tombstone lives until the session would have expired idle.
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'r', 'reuse')
  redis.call('PEXPIRE', KEYS[1], eMS - now)
  redis.call('ZREM', KEYS[2], ARGV[12])
  return {3, u}
end

return {0}
