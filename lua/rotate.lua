-- rotate.lua: exchange the current refresh token of a session for its
-- successor, in one atomic step. Reads and checks come first; nothing is
-- written unless the call rotates or detects reuse.
--
-- One clock: every decision that compares moments (grace, expiry) uses
-- Redis's TIME, read here, so service instances whose clocks disagree
-- decide alike. The session key expires at the current token's idle
-- deadline, so a key that exists holds a live session, and Validate needs
-- no clock. A client retry after a lost reply is recognised by the id of
-- its call, not by time: s holds the id of the call that created the
-- current token, p that of its predecessor.
--
-- This is the hot path, so it is lean: two arguments (every argument costs
-- Redis about half as much as a field read), two fields read, no number
-- formatted (but for keep-until, once per IdleTTL/16). The arguments that
-- only the slower outcomes need sit in
-- ARGV[2] and are parsed only then; IP address and user agent are written
-- only when their checksum differs from the one in s.
--
-- At maxmemory (noeviction) the first write, a deny-OOM HSET, is refused
-- before anything is written; the reuse path starts with DEL, which Redis
-- allows, so a replay still revokes the session.
--
-- KEYS[1] -> the session hash; its last 22 bytes are the session id
-- KEYS[2] -> the user's session index (zset: session id -> keep-until)
-- ARGV[1] -> bytes:
--              1..16  keyed hash of the presented token's secret
--             17..32  keyed hash of its successor's secret (the successor's
--                     secret derives from its predecessor: h equal to this
--                     hash means the presented token is the immediate
--                     predecessor of the current one)
--             33..45  absolute deadline of the session, from the token
--                     (unix ms, 13 digits)
--             46..58  the absolute deadline less the idle lifetime: from
--                     then on a rotation's idle deadline is the absolute one
--             59      length L of the successor's "generation:key id:"
--             60..67  id of this call (random; a client retry resends it)
--             68..71  checksum of the caller's IP address and user agent;
--                     four zero bytes if the caller gave only one of them
--             72..    "generation:key id:" of the successor (L bytes), then
--                     the idle lifetime (ms); from byte 60 on, the end of
--                     the successor's s field
-- ARGV[2] -> bytes, read only by the slower outcomes (but for the client
--            and key bindings, which every rotation compares):
--              1..10  generation of the presented token (decimal, padded)
--             11..20  grace window (ms, padded); 0 turns grace off
--             21..33  keep margin (ms, padded): the index keeps a session
--                     this long past its idle deadline, so that most
--                     rotations leave the index alone
--             34      length C of the client binding the caller asks for;
--                     0 accepts any client
--             35..    the client binding (C bytes: byte 2, the client id's
--                     length, the client id): a session bound to another
--                     client is refused, nothing written; then 1 byte: the
--                     length K of the caller's key binding, 0 (no DPoP key)
--                     or 17; the key binding (K bytes: byte 3, the first 16
--                     bytes of the key's thumbprint): a session bound to a
--                     key is refused, nothing written, without one or with
--                     another; 1 byte: 1 to bind a session bound to no key
--                     to the caller's in this rotation, else 0; 1 byte: 0 if
--                     grace does not look at devices, else 1 + the length D
--                     of the caller's device id ("" if none), which must
--                     equal the session's; the device id (D bytes); 1 byte:
--                     the length P of the revocation channel, where a reuse
--                     revocation is published (as "reuse:" and the session
--                     id); the channel (P bytes); 1 byte: the length of the
--                     IP address to record, the address; then the user
--                     agent to record (each "" = keep)
--
-- The h field: the keyed hash of the current token's secret (16 bytes),
-- then, for a session bound to a client, its client binding (byte 2, the
-- client id's length, the client id), then, for a session bound to a DPoP
-- key, its key binding (byte 3, 16 bytes of the key's thumbprint), then the
-- user id.
-- The s field, bytes: 1..13 "extend after", 14 ":", 15..27 last used
-- (both unix ms, 13 digits), 28..35 the id of the call that created the
-- current token, 36..39 the checksum of the recorded IP address and user
-- agent, then "generation:key id:idle lifetime" (ms). A rotation after
-- "extend after" moves the session's keep-until in the index ("extend
-- after" is keep-until less the idle lifetime); the token's idle deadline is
-- last used + idle lifetime, capped by the absolute deadline. The p field:
-- the last used (13 digits) and creator call id (8 bytes) of the previous
-- token. Each value stays under 64 bytes, so the hash stays a listpack.
--
-- Returns {code, now (unix ms, Redis's clock), ...}, but for the hot path:
--   now .. rest            rotated (code 1), as one string: now as 13 digits,
--                          then the rest of h after the hash (the client
--                          binding, if any, and the user id: one reply
--                          string costs Redis less than an array of three);
--                          the successor is
--                          the current token; its idle deadline is now +
--                          idle lifetime, capped by the absolute one
--   {2, now, rest, s, g[, last]}
--                          hand out a token again (nothing written): g = 1,
--                          the current token, to a retry of the call that
--                          created it; g = 2, the current token, to a grace
--                          replay (the presented token is its immediate
--                          predecessor, rotated less than the grace window
--                          ago); g = 3, the previous token (last used: last;
--                          key id and idle lifetime as in s), to a late
--                          retry of the call that created it
--   {3, now, user}         reused: an older token came back; the session is
--                          revoked (a tombstone keeps the reason, the user
--                          and this call's id, so that a retry gets {3})
--   {4, now, reason}       revoked earlier; nothing written
--   {5, now}               the presented token is past its deadlines;
--                          nothing written
--   {6, now}               the session is bound to another client than the
--                          caller's; nothing written
--   {9, now}               the session is bound to another DPoP key than
--                          the caller's; nothing written
--   {10, now}              the session is bound to a DPoP key and the caller
--                          gave none; nothing written
--   {14, now}              the session is damaged: h or s missing or too
--                          short, s without its ':' or its numbers, or a
--                          client binding longer than h; nothing written
--   {0, now}               no such session (it expired, or Redis lost it),
--                          or a token it never issued; nothing written

local t = redis.call('TIME')
-- Redis's time in unix ms, as 13 digits of text: times are compared as
-- text (all are 13 digits until the year 2286), so the hot path neither
-- parses nor formats a number.
local us = t[2]
local nows
if #us == 6 then
  nows = t[1] .. string.sub(us, 1, 3)
else
  local ms = #us > 3 and string.sub(us, 1, #us - 3) or '0'
  nows = t[1] .. string.rep('0', 3 - #ms) .. ms
end
local a = ARGV[1]
-- h holds the keyed hash of the current token's secret, then the client
-- binding, if any, and the user id.
local cur = redis.call('HMGET', KEYS[1], 'h', 's')
local h, s = cur[1], cur[2]

local b = ARGV[2]
local c = string.byte(b, 34)
-- kb: where h holds a key binding, if any; ki: the caller's in b.
local kb, ki = 17, 35 + c
local kl = string.byte(b, ki)
if h then
  -- The shape check, cheap enough for the hot path: lengths and one byte.
  -- The slow path checks the numbers it parses.
  if not s or #s < 44 or string.byte(s, 14) ~= 58 or #h < 17 then
    return {14, nows}
  end
  -- The client binding: a session bound to another client is refused.
  if string.byte(h, 17) == 2 then
    if c > 0 and string.sub(h, 17, 16 + c) ~= string.sub(b, 35, 34 + c) then
      return {6, nows}
    end
    kb = 19 + (string.byte(h, 18) or 255)
    if kb > #h then
      return {14, nows}
    end
  end
  -- The key binding: a session bound to a DPoP key is refused without it.
  if string.byte(h, kb) == 3 then
    if kl == 0 then
      return {10, nows}
    end
    if string.sub(h, kb, kb + 16) ~= string.sub(b, ki + 1, ki + 17) then
      return {9, nows}
    end
  end
end

if h and string.sub(h, 1, 16) == string.sub(a, 1, 16) then
  local abs = string.sub(a, 33, 45)
  if nows >= abs then
    return {5, nows}
  end
  local rest = string.sub(h, 17)
  if kl > 0 and string.byte(b, ki + kl + 1) == 1 and string.byte(h, kb) ~= 3 then
    -- Bind the session to the caller's key.
    rest = string.sub(h, 17, kb - 1) .. string.sub(b, ki + 1, ki + kl) .. string.sub(h, kb)
  end
  local l = string.byte(a, 59)
  local ck = string.sub(a, 68, 71)
  local ext = string.sub(s, 1, 14)
  local extend = nows > string.sub(s, 1, 13)
  local z
  if extend then
    local idle = tonumber(string.sub(a, 72 + l))
    z = math.min(tonumber(nows) + idle + tonumber(string.sub(ARGV[2], 21, 33)), tonumber(abs))
    ext = tostring(z - idle) .. ':'
  end
  local hv, sv, pv = string.sub(a, 17, 32) .. rest, ext .. nows .. string.sub(a, 60), string.sub(s, 15, 35)
  if extend or ck ~= string.sub(s, 36, 39) or ck == '\0\0\0\0' then
    local set, n = {'h', hv, 's', sv, 'p', pv}, 6
    local i = ki + kl + 2
    local d = string.byte(b, i)
    i = i + (d > 0 and d or 1)
    i = i + 1 + string.byte(b, i)
    local il = string.byte(b, i)
    local ip, ua = string.sub(b, i + 1, i + il), string.sub(b, i + il + 1)
    if ip ~= '' then
      set[n + 1], set[n + 2], n = 'i', ip, n + 2
    end
    if ua ~= '' then
      set[n + 1], set[n + 2] = 'a', ua
    end
    redis.call('HSET', KEYS[1], unpack(set))
  else
    redis.call('HSET', KEYS[1], 'h', hv, 's', sv, 'p', pv)
  end
  -- Relative, so that no number is formatted: Redis adds the idle lifetime
  -- to its own clock, the TIME read above, to the millisecond.
  if nows >= string.sub(a, 46, 58) then
    redis.call('PEXPIREAT', KEYS[1], abs)
  else
    redis.call('PEXPIRE', KEYS[1], string.sub(a, 72 + l))
  end
  if z then
    redis.call('ZADD', KEYS[2], z, string.sub(KEYS[1], -22))
    -- The index lives as long as its longest-kept session.
    if redis.call('PEXPIREAT', KEYS[2], z, 'GT') == 0 and redis.call('PTTL', KEYS[2]) < 0 then
      redis.call('PEXPIREAT', KEYS[2], z)
    end
  end
  return nows .. rest
end

local now = tonumber(nows)
local call = string.sub(a, 60, 67)
local f = redis.call('HMGET', KEYS[1], 'p', 'd', 'r', 'q', 'u')
local r = f[3]
if r then
  if f[4] == call then
    return {3, now, f[5]}
  end
  return {4, now, r}
end
if not h then
  if s then
    return {14, now}
  end
  return {0, now}
end
local rest = string.sub(h, 17)
-- A retry of the call that created the current token, or its predecessor.
if string.sub(s, 28, 35) == call then
  return {2, now, rest, s, 1}
end
if f[1] and string.sub(f[1], 14, 21) == call then
  return {2, now, rest, s, 3, string.sub(f[1], 1, 13)}
end
local g = tonumber(string.match(s, '^(%d+):', 40))
local last = tonumber(string.sub(s, 15, 27))
if not g or not last then
  return {14, now}
end
local grace = tonumber(string.sub(b, 11, 20))
local i = ki + kl + 2
local d = string.byte(b, i)
if grace > 0 and string.sub(h, 1, 16) == string.sub(a, 17, 32) and now - last < grace
    and (d == 0 or string.sub(b, i + 1, i + d - 1) == (f[2] or '')) then
  return {2, now, rest, s, 2}
end
if tonumber(string.sub(b, 1, 10)) < g then
  -- A token of this session that was already rotated: revoke the session.
  -- The tombstone is kept as long as the session would have lived.
  local user = string.sub(h, string.byte(h, kb) == 3 and kb + 17 or kb)
  local m = string.sub(KEYS[1], -22)
  i = i + (d > 0 and d or 1)
  tombstone(KEYS[1], 'reuse', user, call)
  redis.call('ZREM', KEYS[2], m)
  redis.call('PUBLISH', string.sub(b, i + 1, i + string.byte(b, i)), 'reuse:' .. m)
  return {3, now, user}
end
return {0, now}
