-- import.lua: create, or bring up to date, the session of one live family
-- of legacy refresh tokens (the system the store replaces: one row per
-- token, the newest row current), from what that system holds now. Reads
-- and checks come first. Idempotent: the same family imported again
-- changes nothing.
--
-- The session is what issue.lua writes, with the family's current row as
-- its current token (generation 0, never handed out: h holds the keyed
-- hash of a virtual secret derived from the row's digest, see legacy.lua),
-- and l, that row's order (its creation, unix µs, 16 digits). Its idle
-- deadline is the row's expiry; its absolute deadline the login plus the
-- absolute lifetime, or the row's expiry if later, but never more than the
-- absolute lifetime from now. No cap: an import evicts nothing (the next
-- login brings the user back to the cap).
--
-- A family whose current row is newer than l (the old system rotated it
-- during the switch-over) moves l, h and the deadlines to that row. A
-- session that was converted since (l ends in 'c') and whose family has a
-- newer row was rotated in both systems: a replay, so the session is
-- revoked for reuse.
--
-- KEYS[1]     -> the session hash
-- KEYS[2]     -> the user's session index (zset: session id -> keep-until)
-- ARGV[1]     -> session id (member of KEYS[2])
-- ARGV[2]     -> user id
-- ARGV[3]     -> keyed hash of the current row's virtual secret (16
--                bytes), then, for a session bound to a client, its client
--                binding (see issue.lua); the h field holds this followed
--                by the user id
-- ARGV[4]     -> order of the current row (unix µs, 16 digits)
-- ARGV[5]     -> creation of the current row (unix ms): the last use
-- ARGV[6]     -> expiry of the current row (unix ms)
-- ARGV[7]     -> creation of the family's first row (unix ms): the login
-- ARGV[8]     -> absolute lifetime (ms)
-- ARGV[9]     -> idle lifetime of the store's tokens (ms)
-- ARGV[10]    -> keep margin (ms)
-- ARGV[11]    -> id of this call (8 bytes), the checksum of the IP address
--                and user agent (4 bytes), "0:key id:" (the s field)
-- ARGV[12..15] -> device id, device name, IP address, user agent ("" = none)
-- ARGV[16]    -> '1' if a lookup key of the family existed before this
--                import (it was imported before), else '0'
-- ARGV[17]    -> '1' to move a session to a newer current row; '0' to only
--                report it (the caller writes the newer rows' lookup keys
--                first, then calls again with '1')
-- ARGV[18]    -> the revocation channel: a fork is published there as
--                "reuse:" and the session id
--
-- Returns {code, now (unix ms, Redis's clock), ...}:
--   {1, now, x}    created (x: the absolute deadline, when the family's
--                  lookup keys expire)
--   {11, now, x}   moved to the newer current row (with ARGV[17] '0':
--                  would move; nothing written)
--   {12, now, x}   nothing to do: the session is up to date, or converted
--                  and the family has no newer row
--   {3, now, x}    converted here and rotated in the old system since: the
--                  session is revoked for reuse (a tombstone)
--   {4, now, reason} revoked here earlier; nothing written
--   {5, now}       the current row is past its deadlines; nothing written
--   {13, now}      imported before, and the session has ended here;
--                  nothing written (an ended session is never brought back)
--   {8, now}       the session id holds another user's session; nothing
--                  written

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local f = redis.call('HMGET', KEYS[1], 'h', 'l', 'x', 'r')
local h, l = f[1], f[2]
if f[4] then
  return {4, now, f[4]}
end
if h and (not l or userOf(h) ~= ARGV[2]) then
  return {8, now}
end

local idle, margin = tonumber(ARGV[9]), tonumber(ARGV[10])
local x
if h then
  x = tonumber(f[3])
else
  if ARGV[16] == '1' then
    return {13, now}
  end
  local life = tonumber(ARGV[8])
  x = math.min(math.max(tonumber(ARGV[7]) + life, tonumber(ARGV[6])), now + life)
end
local e = math.min(tonumber(ARGV[6]), x)
-- The row's creation as the last use: never in the future, and 13 digits.
local last = math.min(tonumber(ARGV[5]), now)
if last < 1000000000000 then
  last = now
end
local z = math.min(e + margin, x)
local s = string.format('%013d', math.max(z - idle, 0)) .. ':' .. last .. ARGV[11] .. (e - last)

if h then
  if #l ~= 16 then
    if ARGV[4] <= string.sub(l, 1, 16) then
      return {12, now, x}
    end
    tombstone(KEYS[1], 'reuse', ARGV[2], string.sub(ARGV[11], 1, 8))
    redis.call('ZREM', KEYS[2], ARGV[1])
    redis.call('PUBLISH', ARGV[18], 'reuse:' .. ARGV[1])
    return {3, now, x}
  end
  if ARGV[4] <= l then
    return {12, now, x}
  end
  if e <= now then
    return {5, now}
  end
  if ARGV[17] ~= '1' then
    return {11, now, x}
  end
elseif e <= now then
  return {5, now}
end
-- A new session records the device; a move records the newer row's IP
-- address and user agent.
local set, first = {'h', ARGV[3] .. ARGV[2], 's', s, 'c', tonumber(ARGV[7]), 'x', x, 'l', ARGV[4]}, 1
if h then
  set, first = {'h', string.sub(ARGV[3], 1, 16) .. string.sub(h, 17), 'l', ARGV[4], 's', s}, 3
end
local names = {'d', 'n', 'i', 'a'}
for i = first, 4 do
  if ARGV[11 + i] ~= '' then
    set[#set + 1] = names[i]
    set[#set + 1] = ARGV[11 + i]
  end
end
redis.call('HSET', KEYS[1], unpack(set))
redis.call('PEXPIREAT', KEYS[1], e)
redis.call('ZADD', KEYS[2], z, ARGV[1])
if redis.call('PEXPIREAT', KEYS[2], z, 'GT') == 0 and redis.call('PTTL', KEYS[2]) < 0 then
  redis.call('PEXPIREAT', KEYS[2], z)
end
if h then
  return {11, now, x}
end
return {1, now, x}
