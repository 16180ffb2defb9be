-- issue.lua: create a session (the family of a new refresh token) at login,
-- and enforce the user's session cap in the same atomic step. Reads and
-- checks come first; nothing is written unless the session is created.
--
-- KEYS[1]     -> the session hash to create
-- KEYS[2]     -> the user's session index (zset: session id -> expiry, unix ms)
-- KEYS[3..n]  -> sessions the caller expects to evict to respect the cap
-- ARGV[1]     -> now (unix ms)
-- ARGV[2]     -> session id (member of KEYS[2])
-- ARGV[3]     -> user id
-- ARGV[4]     -> keyed hash of the first token
-- ARGV[5]     -> key id of the first token
-- ARGV[6]     -> idle deadline of the first token (unix ms)
-- ARGV[7]     -> absolute deadline of the session (unix ms)
-- ARGV[8..11] -> device id, device name, IP address, user agent ("" = none)
-- ARGV[12]    -> most live sessions the user may have (0 = no cap)
-- ARGV[13..]  -> session ids of KEYS[3..n], in the same order
--
-- Returns:
--   {1, evicted...} created; evicted lists the session ids revoked for the cap
--   {2, live...}    nothing written: the cap requires evicting sessions that
--                   are not in KEYS[3..n]; live lists the user's live session
--                   ids closest to expiry (the ones needed and up to 32 more,
--                   so that concurrent logins, which add sessions that expire
--                   last, do not spoil the list); call again with them
--   {0}             nothing written: the session id exists (never by chance)
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0}
end
local now = tonumber(ARGV[1])
local cap = tonumber(ARGV[12])

local victims = {}
if cap > 0 then
  local live = redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf')
  if live >= cap then
    local need = live - cap + 1
    local given = {}
    for i = 13, #ARGV do
      given[ARGV[i]] = i - 10
    end
    -- Evict the given sessions closest to expiry, provided no session the
    -- caller did not know of expires strictly sooner than one of them.
    local byExpiry = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'WITHSCORES')
    local unknownFrom = nil
    for i = 1, #byExpiry, 2 do
      if #victims == need then
        break
      end
      local m, score = byExpiry[i], tonumber(byExpiry[i + 1])
      local j = given[m]
      if j and (not unknownFrom or score <= unknownFrom) then
        local v = redis.call('HMGET', KEYS[j], 'e', 'r')
        victims[#victims + 1] = {KEYS[j], m, tonumber(v[1]), v[2]}
      elseif not j then
        unknownFrom = unknownFrom or score
      else
        break
      end
    end
    if #victims < need then
      local out = {2}
      for i = 1, math.min(#byExpiry, 2 * (need + 32)), 2 do
        out[#out + 1] = byExpiry[i]
      end
      return out
    end
  end
end

-- Writes.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local out = {1}
for _, v in ipairs(victims) do
  if v[3] and not v[4] and v[3] > now then
    redis.call('DEL', v[1])
    redis.call('HSET', v[1], 'r', 'evicted')
    redis.call('PEXPIRE', v[1], v[3] - now)
  end
  redis.call('ZREM', KEYS[2], v[2])
  out[#out + 1] = v[2]
end

local set = {'u', ARGV[3], 'g', 0, 'h', ARGV[4], 'k', ARGV[5], 't', ARGV[1], 'c', ARGV[1], 'e', ARGV[6], 'x', ARGV[7]}
local names = {'d', 'n', 'i', 'a'}
for i = 1, 4 do
  if ARGV[7 + i] ~= '' then
    set[#set + 1] = names[i]
    set[#set + 1] = ARGV[7 + i]
  end
end
redis.call('HSET', KEYS[1], unpack(set))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]) - now)
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[2])
-- The index lives exactly as long as its longest-lived session.
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[2], tonumber(top[2]) - now)
return out
