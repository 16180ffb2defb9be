-- evict.lua: bring a user back to the session cap after a login that could
-- not evict enough in its own call (concurrent logins took its candidates,
-- or the cap was lowered). Reads and checks come first.
--
-- The work is bounded: it reads the candidates passed and evicts at most 32
-- of them, the least recently used first; if the user is still over the cap
-- it answers with fresh candidates for another call.
--
-- KEYS[1]    -> the user's session index (zset: session id -> keep-until)
-- KEYS[2..n] -> candidate sessions of the user
-- ARGV[1]    -> user id
-- ARGV[2]    -> most live sessions the user may have
-- ARGV[3]    -> id of the login call (a client retry resends it); evicted
--               sessions' tombstones keep it
-- ARGV[4]    -> the revocation channel: sessions this call evicts are
--               published there as "evicted:" and their ids
-- ARGV[5..]  -> session ids of KEYS[2..n], in the same order
--
-- Returns {1, now (unix ms, Redis's clock), k, evicted (k ids)..., ids...}:
-- the sessions this login evicted (including those of an earlier attempt of
-- this call whose reply was lost), and, if the user is still over the cap,
-- fresh candidates for another call.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local need = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') - tonumber(ARGV[2])
local cands, dead, done, skip = {}, {}, {}, {}
for j = 2, #KEYS do
  local m = ARGV[j + 3]
  local v = redis.call('HMGET', KEYS[j], 'h', 's', 'r', 'q')
  if v[3] == 'evicted' and v[4] == ARGV[3] then
    done[#done + 1] = m
  else
    local score = redis.call('ZSCORE', KEYS[1], m)
    if not score or tonumber(score) <= now then
      -- Not counted: evicted by another login, revoked, or past keep-until.
    elseif v[1] and not v[3] and tonumber(string.sub(v[2] or '', 15, 27)) and userOf(v[1]) == ARGV[1] then
      cands[#cands + 1] = {KEYS[j], m, tonumber(string.sub(v[2], 15, 27))}
    else
      -- Gone, another user's, or damaged (no rotation or listing accepts
      -- it): not counted, and dropped from the index.
      dead[#dead + 1] = m
      skip[#skip + 1] = m
      need = need - 1
    end
  end
end
table.sort(cands, function(a, b) return a[3] < b[3] or (a[3] == b[3] and a[2] < b[2]) end)
local victims = {}
for i = 1, math.min(need, 32, #cands) do
  victims[i] = cands[i]
  skip[#skip + 1] = cands[i][2]
end
local more = {}
if need > #victims then
  local skipped = {}
  for _, m in ipairs(skip) do
    skipped[m] = true
  end
  local n = math.min(need - #victims, 32) + 63
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'LIMIT', 0, n + #skip)) do
    if not skipped[m] and #more < n then
      more[#more + 1] = m
    end
  end
end

-- Writes.
if #dead > 0 then
  redis.call('ZREM', KEYS[1], unpack(dead))
end
local out = {1, now, #done + #victims}
for _, m in ipairs(done) do
  out[#out + 1] = m
end
for _, v in ipairs(victims) do
  tombstone(v[1], 'evicted', ARGV[1], ARGV[3])
  redis.call('ZREM', KEYS[1], v[2])
  out[#out + 1] = v[2]
end
if #victims > 0 then
  redis.call('PUBLISH', ARGV[4], 'evicted:' .. table.concat(out, '', 4 + #done))
end
for _, m in ipairs(more) do
  out[#out + 1] = m
end
return out
