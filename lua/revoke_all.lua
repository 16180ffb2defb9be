-- revoke_all.lua: revoke every live session of a user, but perhaps one
-- ("log out everywhere", "log out other devices"), in one atomic step.
-- Scripts must not build key names, so the caller reads the index first and
-- passes every session key; if the index changed since, nothing is written
-- and the caller reads it again.
--
-- KEYS[1]    -> the user's session index (zset: session id -> keep-until)
-- KEYS[2..n] -> the session hashes the caller found in the index
-- ARGV[1]    -> now (unix ms)
-- ARGV[2]    -> reason
-- ARGV[3]    -> user id
-- ARGV[4]    -> session id to keep ("" = none)
-- ARGV[5]    -> id of this call (random; a client retry resends it)
-- ARGV[6..]  -> session ids of KEYS[2..n], in the same order
--
-- Returns:
--   {1, revoked...} the session ids revoked by this call, or by its earlier
--                   attempt whose reply was lost (possibly none)
--   {2}             nothing written: the index holds live sessions that are
--                   not in KEYS; read it again and call again
local now = tonumber(ARGV[1])
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
-- One read of each session passed; sessions this call already revoked, in
-- an attempt whose reply was lost, carry its id.
local given, read, done = {}, {}, {}
for i = 6, #ARGV do
  given[ARGV[i]] = i - 4
  local f = redis.call('HMGET', KEYS[i - 4], 'h', 'r', 's', 'q')
  read[i - 4] = f
  if f[2] and f[4] == ARGV[5] then
    done[#done + 1] = ARGV[i]
  end
end
local todo = {}
for _, m in ipairs(live) do
  if m ~= ARGV[4] then
    local j = given[m]
    if not j then
      return {2}
    end
    local f = read[j]
    local e = f[3] and string.match(f[3], ':(%d+)$')
    local revoke = f[1] and string.sub(f[1], 17) == ARGV[3] and not f[2] and e and tonumber(e) > now
    todo[#todo + 1] = {KEYS[j], m, revoke and redis.call('PTTL', KEYS[j])}
  end
end

-- Writes.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local out = {1}
for _, m in ipairs(done) do
  out[#out + 1] = m
end
for _, v in ipairs(todo) do
  if v[3] and v[3] > 0 then
    redis.call('DEL', v[1])
    redis.call('HSET', v[1], 'r', ARGV[2], 'u', ARGV[3], 'q', ARGV[5])
    redis.call('PEXPIRE', v[1], v[3])
    out[#out + 1] = v[2]
  end
  redis.call('ZREM', KEYS[1], v[2])
end
return out
