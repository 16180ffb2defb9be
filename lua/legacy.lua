-- legacy.lua: a legacy refresh token (of the system the store replaces,
-- imported by import.lua) presented for rotation: convert it into the
-- session's first token of this store, in one atomic step, or answer its
-- replay. Reads and checks come first; nothing is written unless the call
-- converts or detects reuse. Tokens of this store never come here
-- (rotate.lua).
--
-- The caller found the session through the token's lookup key, which names
-- the session and the order of the token's row in its family (its
-- creation). While the family's legacy token is current, the session holds
-- l: that row's order, and in h the keyed hash of the virtual secret
-- derived from the row's digest. The conversion writes h, s and p as a
-- rotation does (generation 1), marks l converted (its order, then 'c'),
-- and starts the idle deadline again by Redis's clock. From then on every
-- legacy token of the family is a replay, but within grace the converted
-- one (the immediate predecessor of the current token), which gets the
-- current token again.
--
-- A row newer than l converts too: the import writes a newer row's lookup
-- key before it moves l (a rotation in the old system during the
-- switch-over), so the newest row is honoured from the moment it can be
-- found. A row older than l is a replay.
--
-- KEYS[1] -> the session hash; its last 22 bytes are the session id
-- KEYS[2] -> the user's session index (zset: session id -> keep-until)
-- ARGV[1] -> keyed hash of the presented token's virtual secret (16 bytes)
-- ARGV[2] -> keyed hash of its successor's secret (16 bytes)
-- ARGV[3] -> order of the presented token's row (unix µs, 16 digits)
-- ARGV[4] -> id of this call (8 random bytes; a client retry resends it)
-- ARGV[5] -> the end of the successor's s field after its call id: the
--            checksum of the caller's IP address and user agent (4 bytes),
--            then "generation:key id:idle lifetime" (see rotate.lua)
-- ARGV[6] -> idle lifetime (ms)
-- ARGV[7] -> grace window (ms); 0 turns grace off
-- ARGV[8] -> keep margin (ms)
-- ARGV[9] -> the client binding the caller asks for ("" accepts any)
-- ARGV[10] -> the caller's key binding (byte 3, 16 bytes of its DPoP key's
--            thumbprint; "" for none): a session bound to a key is
--            refused, nothing written, without it or with another (as
--            rotate.lua)
-- ARGV[11] -> '1' to bind a session bound to no key to the caller's in
--            the conversion, else '0'
-- ARGV[12] -> "" if grace does not look at devices, else "=" and the
--            caller's device id, which must equal the session's
-- ARGV[13] -> the revocation channel (a reuse is published as "reuse:" and
--            the session id)
-- ARGV[14] -> IP address to record ("" = keep)
-- ARGV[15] -> user agent to record ("" = keep)
--
-- Returns {code, now (unix ms, Redis's clock), ...}:
--   {1, now, rest, x}      converted: the successor is the current token;
--                          rest is h after the hash (the bindings, if any,
--                          and the user id), x the absolute deadline
--   {2, now, rest, s, g, last, x}
--                          hand out a token again (nothing written), as
--                          rotate.lua: g = 1 a retry of the conversion, g =
--                          2 a grace replay, g = 3 a late retry of the
--                          conversion after one more rotation (last: the
--                          converted token's last use; '' for the others)
--   {3, now, user}         reused: the session is revoked (tombstone, as
--                          rotate.lua writes it)
--   {4, now, reason}       revoked earlier; nothing written
--   {5, now}               the session is past its absolute deadline
--   {6, now}               bound to another client; nothing written
--   {9, now}               bound to another DPoP key; nothing written
--   {10, now}              bound to a DPoP key, and the caller gave none;
--                          nothing written
--   {14, now}              the session is damaged (h, s or x missing or
--                          malformed, as rotate.lua checks it); nothing
--                          written
--   {0, now}               no such imported session (it ended); nothing
--                          written

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local call = ARGV[4]
local f = redis.call('HMGET', KEYS[1], 'h', 's', 'p', 'l', 'x', 'd', 'r', 'q', 'u')
local h, s, p, l, x = f[1], f[2], f[3], f[4], f[5]
if f[7] then
  if f[8] == call then
    return {3, now, f[9]}
  end
  return {4, now, f[7]}
end
-- A session without l was never imported: a lookup key never touches it.
if not h or not l then
  return {0, now}
end
if not s or #s < 44 or string.byte(s, 14) ~= 58 or #h < 17 or not tonumber(string.sub(s, 15, 27)) or not tonumber(x) then
  return {14, now}
end
-- The bindings (see rotate.lua); kb: where h holds a key binding, if any.
local c, kb = #ARGV[9], 17
if string.byte(h, 17) == 2 then
  if c > 0 and string.sub(h, 17, 16 + c) ~= ARGV[9] then
    return {6, now}
  end
  kb = 19 + (string.byte(h, 18) or 255)
  if kb > #h then
    return {14, now}
  end
end
if string.byte(h, kb) == 3 then
  if ARGV[10] == '' then
    return {10, now}
  end
  if string.sub(h, kb, kb + 16) ~= ARGV[10] then
    return {9, now}
  end
end
local rest = string.sub(h, 17)
if string.sub(s, 28, 35) == call then
  return {2, now, rest, s, 1, '', x}
end
if p and string.sub(p, 14, 21) == call then
  return {2, now, rest, s, 3, string.sub(p, 1, 13), x}
end

local convert = false
if #l == 16 then
  convert = string.sub(h, 1, 16) == ARGV[1] or ARGV[3] > l
elseif string.sub(h, 1, 16) == ARGV[2] and now - tonumber(string.sub(s, 15, 27)) < tonumber(ARGV[7])
    and (ARGV[12] == '' or string.sub(ARGV[12], 2) == (f[6] or '')) then
  return {2, now, rest, s, 2, '', x}
end

if convert then
  local abs = tonumber(x)
  if now >= abs then
    return {5, now}
  end
  local idle = tonumber(ARGV[6])
  local e = math.min(now + idle, abs)
  local z = math.min(e + tonumber(ARGV[8]), abs)
  if ARGV[11] == '1' and ARGV[10] ~= '' and string.byte(h, kb) ~= 3 then
    -- Bind the session to the caller's key.
    rest = string.sub(h, 17, kb - 1) .. ARGV[10] .. string.sub(h, kb)
  end
  local set = {'h', ARGV[2] .. rest, 's', string.format('%013d', math.max(z - idle, 0)) .. ':' .. now .. call .. ARGV[5], 'p', string.sub(s, 15, 35),
    'l', string.sub(ARGV[3] > l and ARGV[3] or l, 1, 16) .. 'c'}
  if ARGV[14] ~= '' then
    set[#set + 1], set[#set + 2] = 'i', ARGV[14]
  end
  if ARGV[15] ~= '' then
    set[#set + 1], set[#set + 2] = 'a', ARGV[15]
  end
  redis.call('HSET', KEYS[1], unpack(set))
  redis.call('PEXPIREAT', KEYS[1], e)
  redis.call('ZADD', KEYS[2], z, string.sub(KEYS[1], -22))
  if redis.call('PEXPIREAT', KEYS[2], z, 'GT') == 0 and redis.call('PTTL', KEYS[2]) < 0 then
    redis.call('PEXPIREAT', KEYS[2], z)
  end
  return {1, now, rest, x}
end

-- A replay: an older row of the family, or any legacy token of a converted
-- session outside grace. Revoke the session; the tombstone is kept as long
-- as the session would have lived.
local user = string.sub(h, string.byte(h, kb) == 3 and kb + 17 or kb)
local m = string.sub(KEYS[1], -22)
tombstone(KEYS[1], 'reuse', user, call)
redis.call('ZREM', KEYS[2], m)
redis.call('PUBLISH', ARGV[13], 'reuse:' .. m)
return {3, now, user}
