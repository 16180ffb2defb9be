-- issue.lua: create a session (the family of a new refresh token) at login,
-- and enforce the user's session cap in the same atomic step. Reads and
-- checks come first; nothing is written unless the session is created.
--
-- Scripts must not build key names, so to evict for the cap the caller must
-- pass the keys of the user's sessions. The first call passes none; if the
-- user may be at the cap, the script answers with the ids of all sessions in
-- the index and the caller calls again with their keys.
--
-- KEYS[1]     -> the session hash to create
-- KEYS[2]     -> the user's session index (zset: session id -> keep-until)
-- KEYS[3..n]  -> the user's sessions, for the cap
-- ARGV[1]     -> now (unix ms)
-- ARGV[2]     -> session id (member of KEYS[2])
-- ARGV[3]     -> user id
-- ARGV[4]     -> keyed hash of the first token's secret (16 bytes); the h
--                field holds it followed by the user id
-- ARGV[5]     -> state of the first token: "0:key id:now:idle deadline"
-- ARGV[6]     -> keep-until: when Redis may drop the session (unix ms)
-- ARGV[7]     -> absolute deadline of the session (unix ms)
-- ARGV[8..11] -> device id, device name, IP address, user agent ("" = none)
-- ARGV[12]    -> most live sessions the user may have (0 = no cap)
-- ARGV[13..]  -> session ids of KEYS[3..n], in the same order
--
-- Returns:
--   {1, evicted...} created; evicted lists the session ids revoked for the
--                   cap: the least recently used ones
--   {2, ids...}     nothing written: the cap needs the keys of these
--                   sessions (every id in the index); call again with them
--   {0}             nothing written: the session id exists (never by chance)
--
-- A client retry after a lost reply finds the session it created (same
-- token hash) and gets {1} again.
local existing = redis.call('HGET', KEYS[1], 'h')
if existing then
  if string.sub(existing, 1, 16) == ARGV[4] then
    return {1}
  end
  return {0}
end
local now = tonumber(ARGV[1])
local cap = tonumber(ARGV[12])

local victims, dead = {}, {}
if cap > 0 then
  local indexed = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')
  if #indexed >= cap then
    local given = {}
    for i = 13, #ARGV do
      given[ARGV[i]] = i - 10
    end
    -- Sessions the caller did not pass were created after it read the
    -- index: count them as live, never evict them.
    local live, unknown = {}, 0
    for _, m in ipairs(indexed) do
      local j = given[m]
      if j then
        local v = redis.call('HMGET', KEYS[j], 's', 'r')
        local t, e
        if v[1] then
          t, e = string.match(v[1], '^%d+:%d+:(%d+):(%d+)$')
        end
        if e and not v[2] and tonumber(e) > now then
          live[#live + 1] = {KEYS[j], m, tonumber(t)}
        else
          dead[#dead + 1] = m
        end
      else
        unknown = unknown + 1
      end
    end
    local need = #live + unknown - cap + 1
    if need > #live then
      local out = {2}
      for _, m in ipairs(indexed) do
        out[#out + 1] = m
      end
      return out
    end
    if need > 0 then
      table.sort(live, function(a, b) return a[3] < b[3] or (a[3] == b[3] and a[2] < b[2]) end)
      for i = 1, need do
        victims[i] = live[i]
      end
    end
  end
end

-- Writes. The first is the deny-OOM HSET: at maxmemory (noeviction) Redis
-- refuses it before anything is written, and the login fails cleanly.
local set = {'h', ARGV[4] .. ARGV[3], 's', ARGV[5], 'z', ARGV[6], 'c', ARGV[1], 'x', ARGV[7]}
local names = {'d', 'n', 'i', 'a'}
for i = 1, 4 do
  if ARGV[7 + i] ~= '' then
    set[#set + 1] = names[i]
    set[#set + 1] = ARGV[7 + i]
  end
end
redis.call('HSET', KEYS[1], unpack(set))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]) - now)

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, m in ipairs(dead) do
  redis.call('ZREM', KEYS[2], m)
end
local out = {1}
for _, v in ipairs(victims) do
  local ttl = redis.call('PTTL', v[1])
  redis.call('DEL', v[1])
  redis.call('HSET', v[1], 'r', 'evicted', 'u', ARGV[3])
  redis.call('PEXPIRE', v[1], ttl)
  redis.call('ZREM', KEYS[2], v[2])
  out[#out + 1] = v[2]
end

redis.call('ZADD', KEYS[2], ARGV[6], ARGV[2])
-- The index lives exactly as long as its longest-kept session.
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[2], tonumber(top[2]) - now)
return out
