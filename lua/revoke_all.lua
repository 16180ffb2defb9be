-- revoke_all.lua: revoke one batch of a user's sessions ("log out
-- everywhere", "log out other devices"). Scripts must not build key names,
-- so the caller reads a page of the user's index and passes those sessions;
-- every session passed leaves the index (revoked, or dropped if it is gone
-- or not this user's), so the caller reads the index from its start again
-- until only the kept session is left. The work per call is bounded by the
-- batch the caller passes, however many sessions the user has, and a
-- concurrent login never makes a call fail: a session created meanwhile is
-- simply revoked by a later batch.
--
-- KEYS[1]    -> the user's session index (zset: session id -> keep-until)
-- KEYS[2]    -> the session to keep, to check that it is a live session of
--               the user (the first batch); KEYS[1] again to skip the check
-- KEYS[3..n] -> the sessions of this batch
-- ARGV[1]    -> reason
-- ARGV[2]    -> user id
-- ARGV[3]    -> session id to keep ("" = none)
-- ARGV[4]    -> id of this call (8 random bytes; a client retry resends it)
-- ARGV[5]    -> the revocation channel: the sessions this call revokes
--               are published there as reason, ':' and their ids
-- ARGV[6..]  -> session ids of KEYS[3..n], in the same order
--
-- Returns {code, now (unix ms, Redis's clock), ...}:
--   {1, now, revoked...} the session ids revoked by this call (or by its
--                        earlier attempt whose reply was lost)
--   {0, now}             nothing written: the session to keep is not a
--                        live session of this user

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if KEYS[2] ~= KEYS[1] then
  local k = redis.call('HMGET', KEYS[2], 'h', 'r')
  if not k[1] or k[2] or userOf(k[1]) ~= ARGV[2] then
    return {0, now}
  end
end

local revoke, drop, out, fresh = {}, {}, {1, now}, {}
for j = 3, #KEYS do
  local m = ARGV[j + 3]
  if m ~= ARGV[3] then
    local f = redis.call('HMGET', KEYS[j], 'h', 'r', 'q')
    if f[2] then
      if f[3] == ARGV[4] then
        out[#out + 1] = m
      end
    elseif f[1] and userOf(f[1]) == ARGV[2] then
      revoke[#revoke + 1] = {KEYS[j], m}
    end
    drop[#drop + 1] = m
  end
end

-- Writes.
for _, v in ipairs(revoke) do
  tombstone(v[1], ARGV[1], ARGV[2], ARGV[4])
  out[#out + 1] = v[2]
  fresh[#fresh + 1] = v[2]
end
if #drop > 0 then
  redis.call('ZREM', KEYS[1], unpack(drop))
end
if #fresh > 0 then
  redis.call('PUBLISH', ARGV[5], ARGV[1] .. ':' .. table.concat(fresh))
end
return out
