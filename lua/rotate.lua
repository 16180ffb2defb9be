-- rotate.lua: exchange the current refresh token of a session for its
-- successor, in one atomic step. Reads and checks come first; nothing is
-- written unless the call rotates or detects reuse.
--
-- At maxmemory (noeviction) the first write, a deny-OOM HSET, is refused
-- before anything is written; the reuse path starts with DEL, which Redis
-- allows, so a replay still revokes the session.
--
-- Expiry is decided by the caller's clock (ARGV[2]) against the deadlines in
-- the token and in the s field; Redis TTLs only reclaim memory. The field z
-- holds how long the key and its index entry are kept; a rotation extends
-- them only when the new idle deadline passes z, so most rotations write one
-- hash and nothing else.
--
-- KEYS[1]  -> the session hash; its last 22 bytes are the session id
-- KEYS[2]  -> the user's session index (zset: session id -> z)
-- ARGV[1]  -> keyed hash of the presented token's secret (16 bytes), keyed
--             hash of its successor's secret (16 bytes), an id of this call
--             (8 random bytes; a client retry resends it), then the
--             successor's state "generation:key id:now:idle deadline" (the
--             s field). A successor's secret derives from its predecessor,
--             so h equal to the successor's hash means the presented token
--             is the immediate predecessor of the current one.
-- ARGV[2]  -> now (unix ms)
-- ARGV[3]  -> idle deadline of the successor (unix ms, capped by the
--             absolute deadline)
-- ARGV[4]  -> keep-until to set if the idle deadline passes z (unix ms)
-- ARGV[5]  -> generation of the presented token
-- ARGV[6]  -> idle deadline carried by the presented token (unix ms)
-- ARGV[7]  -> grace window (ms); 0 turns grace off
-- ARGV[8]  -> device id of the caller if grace requires the session's device
--             id, "" if grace does not look at devices
-- ARGV[9]  -> IP address to record ("" = keep)
-- ARGV[10] -> user agent to record ("" = keep)
--
-- Returns:
--   {1, user}                 rotated: the successor is the current token
--   {2, user, kid, e}         grace: the presented token is the immediate
--                             predecessor, rotated less than ARGV[7] ms ago;
--                             nothing written; key id and idle deadline of
--                             the current token, for the caller to derive it
--                             again
--   {3, user}                 reused: an older token came back; the session
--                             is revoked (a tombstone keeps the reason, the
--                             user and this call's id, so that a retry of this
--                             call gets {3, user} again)
--   {4, reason}               revoked earlier; nothing written
--   {6}                       superseded: an older token, in a call that
--                             started before the session's last rotation
--                             (a client retry arriving after another tab
--                             rotated again), with grace on: not a replay;
--                             nothing written
--   {5}                       expired; nothing written
--   {0}                       unknown: no such session, or a token it never
--                             issued; nothing written
local now = tonumber(ARGV[2])
local presented = string.sub(ARGV[1], 1, 16)
-- h holds the keyed hash of the current token's secret, then the user id.
local cur = redis.call('HMGET', KEYS[1], 'h', 'z', 'i', 'a')
local user = cur[1] and string.sub(cur[1], 17)

if cur[1] and string.sub(cur[1], 1, 16) == presented then
  if now >= tonumber(ARGV[6]) then
    return {5}
  end
  local set = {'h', string.sub(ARGV[1], 17, 32) .. user, 's', string.sub(ARGV[1], 41)}
  local n = 4
  if ARGV[9] ~= '' and ARGV[9] ~= cur[3] then
    set[n + 1] = 'i'
    set[n + 2] = ARGV[9]
    n = n + 2
  end
  if ARGV[10] ~= '' and ARGV[10] ~= cur[4] then
    set[n + 1] = 'a'
    set[n + 2] = ARGV[10]
    n = n + 2
  end
  local extend = tonumber(ARGV[3]) > tonumber(cur[2])
  if extend then
    set[n + 1] = 'z'
    set[n + 2] = ARGV[4]
  end
  redis.call('HSET', KEYS[1], unpack(set))
  if extend then
    local ttl = tonumber(ARGV[4]) - now
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('ZADD', KEYS[2], ARGV[4], string.sub(KEYS[1], -22))
    -- The index lives as long as its longest-kept session.
    if redis.call('PEXPIRE', KEYS[2], ttl, 'GT') == 0 and redis.call('PTTL', KEYS[2]) < 0 then
      redis.call('PEXPIRE', KEYS[2], ttl)
    end
  end
  return {1, user}
end

local f = redis.call('HMGET', KEYS[1], 's', 'd', 'r', 'q', 'u')
local s, d, r = f[1], f[2], f[3]
if r then
  if r == 'reuse' and f[4] == string.sub(ARGV[1], 33, 40) then
    return {3, f[5]}
  end
  return {4, r}
end
if not s then
  return {0}
end
local g, k, t, e = string.match(s, '^(%d+):(%d+):(%d+):(%d+)$')
g, t = tonumber(g), tonumber(t)
if now >= tonumber(e) then
  return {5}
end
local gen = tonumber(ARGV[5])
if string.sub(cur[1], 1, 16) == string.sub(ARGV[1], 17, 32) and now - t < tonumber(ARGV[7]) and (ARGV[8] == '' or ARGV[8] == d) then
  return {2, user, k, e}
end
if gen < g then
  if tonumber(ARGV[7]) > 0 and now < t then
    return {6}
  end
  -- A token of this session that was already rotated: revoke the session.
  -- The tombstone is kept as long as the session would have been.
  local ttl = redis.call('PTTL', KEYS[1])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'r', 'reuse', 'u', user, 'q', string.sub(ARGV[1], 33, 40))
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('ZREM', KEYS[2], string.sub(KEYS[1], -22))
  return {3, user}
end
return {0}
