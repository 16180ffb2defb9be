-- issue.lua: create a session (the family of a new refresh token) at login,
-- and enforce the user's session cap. Reads and checks come first; nothing
-- is written unless the session is created.
--
-- Deadlines come from Redis's TIME (one clock for every service instance).
-- The session key expires exactly at the idle deadline; its entry in the
-- user's index is scored by keep-until z (the idle deadline plus a margin),
-- so that most rotations leave the index alone.
--
-- Bounded work: whatever the number of the user's sessions, one call prunes
-- at most 16 index entries past their keep-until, counts the rest with
-- ZCOUNT, reads at most the candidates passed, and evicts at most 32.
--
-- The cap. Scripts must not build key names, so to evict, the caller passes
-- candidate sessions. The first call passes none: below the cap it creates
-- the session; at the cap it writes nothing and answers {7, ids}, the least
-- kept sessions of the index, and the caller calls again with their keys.
-- That call evicts the least recently used of the candidates and creates
-- the session in one atomic step. If concurrent logins took the candidates
-- meanwhile, it creates the session anyway and answers with fresh
-- candidates; the caller then runs evict.lua until the user is back at the
-- cap. So a login never fails for contention, and a user holds more than
-- the cap only while logins are in flight.
--
-- KEYS[1]     -> the session hash to create
-- KEYS[2]     -> the user's session index (zset: session id -> keep-until)
-- KEYS[3..n]  -> candidate sessions of the user, for the cap
-- ARGV[1]     -> session id (member of KEYS[2])
-- ARGV[2]     -> user id
-- ARGV[3]     -> keyed hash of the first token's secret (16 bytes), then,
--                for a session bound to a client, its client binding (byte
--                2, the client id's length, the client id); the h field
--                holds this followed by the user id
-- ARGV[4]     -> "0:key id:" for the s field (see rotate.lua)
-- ARGV[5]     -> idle lifetime (ms)
-- ARGV[6]     -> absolute lifetime (ms)
-- ARGV[7]     -> keep margin (ms)
-- ARGV[8..11] -> device id, device name, IP address, user agent ("" = none)
-- ARGV[12]    -> most live sessions the user may have (0 = no cap)
-- ARGV[13]    -> id of this call (8 random bytes; a client retry resends it)
-- ARGV[14]    -> checksum of the IP address and user agent (4 bytes; see
--                the s field in rotate.lua)
-- ARGV[15]    -> the revocation channel: sessions this call evicts are
--                published there as "evicted:" and their ids
-- ARGV[16..]  -> session ids of KEYS[3..n], in the same order
--
-- Returns {code, now (unix ms, Redis's clock), ...}:
--   {1, now, e, x, k, evicted (k ids)..., ids...}
--                   created, by this call or by its earlier attempt whose
--                   reply was lost: e and x are the idle and absolute
--                   deadlines; evicted lists the sessions this call revoked
--                   for the cap; ids, if any, are candidates for evict.lua:
--                   the user is still over the cap
--   {7, now, ids...} nothing written: the user is at the cap; call again
--                   with the keys of these sessions
--   {4, now, reason, evicted...} nothing written: the session this call
--                   created was revoked since (a retry that arrives after
--                   a log-out-everywhere)
--   {8, now}        nothing written: the session id exists (never by chance)
--   {14, now}       nothing written: a retry found the session this call
--                   created damaged (its s or x field unreadable)

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local call = ARGV[13]
local cap = tonumber(ARGV[12])

-- candidates appends to out up to n of the least kept live entries of the
-- index, but those in skip.
local function candidates(out, n, skip)
  local skipped = {}
  for _, m in ipairs(skip) do
    skipped[m] = true
  end
  local added = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf', 'LIMIT', 0, n + #skip)) do
    if not skipped[m] and added < n then
      out[#out + 1] = m
      added = added + 1
    end
  end
  return out
end

-- over is how many sessions past the cap the user holds.
local function over()
  if cap <= 0 then
    return 0
  end
  return redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf') - cap
end

local cur = redis.call('HMGET', KEYS[1], 'h', 'r', 's', 'x')
if cur[1] or cur[2] then
  if cur[1] and string.sub(cur[1], 1, 16) ~= string.sub(ARGV[3], 1, 16) then
    return {8, now}
  end
  -- A retry: report what the first attempt did.
  local evicted = {}
  for j = 3, #KEYS do
    local v = redis.call('HMGET', KEYS[j], 'r', 'q')
    if v[1] == 'evicted' and v[2] == call then
      evicted[#evicted + 1] = ARGV[j + 13]
    end
  end
  local out
  if cur[2] then
    out = {4, now, cur[2]}
  else
    local last = cur[3] and tonumber(string.sub(cur[3], 15, 27))
    local idle = cur[3] and tonumber(string.match(cur[3], '^%d+:%d+:(%d+)', 40))
    if not last or not idle or not tonumber(cur[4]) then
      return {14, now}
    end
    out = {1, now, math.min(tonumber(last) + tonumber(idle), tonumber(cur[4])), tonumber(cur[4]), #evicted}
  end
  for _, m in ipairs(evicted) do
    out[#out + 1] = m
  end
  if cur[1] then
    local o = over()
    if o > 0 then
      candidates(out, math.min(o, 32) + 63, {ARGV[1]})
    end
  end
  return out
end

local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 16)
local victims, more = {}, {}
if cap > 0 then
  local need = redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf') - cap + 1
  if need > 0 then
    if #KEYS == 2 then
      return candidates({7, now}, math.min(need, 32) + 63, {})
    end
    local cands = {}
    for j = 3, #KEYS do
      local m = ARGV[j + 13]
      local score = redis.call('ZSCORE', KEYS[2], m)
      if score and tonumber(score) > now then
        local v = redis.call('HMGET', KEYS[j], 'h', 's')
        local last = v[2] and tonumber(string.sub(v[2], 15, 27))
        if v[1] and last and userOf(v[1]) == ARGV[2] then
          cands[#cands + 1] = {KEYS[j], m, last}
        else
          -- Counted, but gone (expired within its keep margin, not this
          -- user's, or damaged: no rotation or listing accepts it): drop it
          -- from the index.
          dead[#dead + 1] = m
          need = need - 1
        end
      end
    end
    table.sort(cands, function(a, b) return a[3] < b[3] or (a[3] == b[3] and a[2] < b[2]) end)
    local skip = {}
    for i = 1, math.min(need, 32, #cands) do
      victims[i] = cands[i]
      skip[i] = cands[i][2]
    end
    if need > #victims then
      -- Still over the cap once created: fresh candidates for evict.lua.
      for _, m in ipairs(dead) do
        skip[#skip + 1] = m
      end
      candidates(more, math.min(need - #victims, 32) + 63, skip)
    end
  end
end

-- Writes. The first is the deny-OOM HSET: at maxmemory (noeviction) Redis
-- refuses it before anything is written, and the login fails cleanly.
local x = now + tonumber(ARGV[6])
local e = math.min(now + tonumber(ARGV[5]), x)
local z = math.min(e + tonumber(ARGV[7]), x)
local set = {'h', ARGV[3] .. ARGV[2], 's', (z - tonumber(ARGV[5])) .. ':' .. now .. call .. ARGV[14] .. ARGV[4] .. ARGV[5],
  'c', now, 'x', x}
local names = {'d', 'n', 'i', 'a'}
for i = 1, 4 do
  if ARGV[7 + i] ~= '' then
    set[#set + 1] = names[i]
    set[#set + 1] = ARGV[7 + i]
  end
end
redis.call('HSET', KEYS[1], unpack(set))
redis.call('PEXPIREAT', KEYS[1], e)

if #dead > 0 then
  redis.call('ZREM', KEYS[2], unpack(dead))
end
local out = {1, now, e, x, #victims}
for _, v in ipairs(victims) do
  tombstone(v[1], 'evicted', ARGV[2], call)
  redis.call('ZREM', KEYS[2], v[2])
  out[#out + 1] = v[2]
end
if #victims > 0 then
  redis.call('PUBLISH', ARGV[15], 'evicted:' .. table.concat(out, '', 6))
end
for _, m in ipairs(more) do
  out[#out + 1] = m
end

redis.call('ZADD', KEYS[2], z, ARGV[1])
-- The index lives as long as its longest-kept session.
if redis.call('PEXPIREAT', KEYS[2], z, 'GT') == 0 and redis.call('PTTL', KEYS[2]) < 0 then
  redis.call('PEXPIREAT', KEYS[2], z)
end
return out
