-- move_take.lua: on the Redis the store moves from (Options.MoveFrom), take
-- keys of one hash tag out of service, in one atomic step: each key is
-- dumped into the tag's move record and deleted, so that a service instance
-- still configured for this Redis finds no session to rotate (not found,
-- never a second successor). The record keeps the data on this Redis until
-- the keys are restored on the new one (move_put.lua) and the record is
-- deleted (move_done.lua); a record left by a move that stopped half way is
-- returned to the next caller, who finishes it. The same step sets the
-- tag's moved marker, so that such an instance answers "moved, retry"
-- (ErrMoved) rather than "unknown" for the keys it no longer finds.
--
-- KEYS[1] -> the tag's move record (hash): '#' -> id of the move, and per
--            key moved: key name -> its deadline (PEXPIRETIME: unix ms, 13
--            digits, all zeros for none) followed by its DUMP
-- KEYS[2] -> the tag's moved marker (string '1'), set with a TTL of ARGV[3]
--            ms whenever keys are taken
-- KEYS[3] -> with ARGV[2] = '1': the user's session index; its sessions
--            must all be among KEYS[4..]
-- KEYS[3..] or KEYS[4..] -> the keys to move
-- ARGV[1] -> id of this move (random)
-- ARGV[2] -> '1' if KEYS[3] is an index, else '0'
-- ARGV[3] -> how long the moved marker stays (ms)
-- ARGV[4..] -> with ARGV[2] = '1': the index member of each of KEYS[4..]
--
-- Returns {code, now (unix ms, this Redis's clock), ...}:
--   {0, now}                 nothing to move: no record, no key exists
--   {1, now, '#', id, key, deadline .. dump, ...}
--                            the record: this call's (every key written
--                            above was taken), or one an earlier move left,
--                            to finish first; nothing written then
--   {15, now, member, ...}   the index has these members, whose sessions
--                            are not among the keys: call again with them;
--                            nothing written
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rec = redis.call('HGETALL', KEYS[1])
if #rec > 0 then
  return {1, now, unpack(rec)}
end
if ARGV[2] == '1' then
  local passed = {}
  for i = 4, #ARGV do
    passed[ARGV[i]] = true
  end
  local missing = {}
  for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    if not passed[m] then
      missing[#missing + 1] = m
    end
  end
  if #missing > 0 then
    return {15, now, unpack(missing)}
  end
end
local out = {'#', ARGV[1]}
local keep = 0
for i = 3, #KEYS do
  local d = redis.call('DUMP', KEYS[i])
  if d then
    local deadline = redis.call('PEXPIRETIME', KEYS[i])
    if deadline < 0 then
      deadline = 0
    elseif deadline > keep then
      keep = deadline
    end
    out[#out + 1] = KEYS[i]
    out[#out + 1] = string.format('%013d', deadline) .. d
  end
end
if #out == 2 then
  return {0, now}
end
redis.call('HSET', KEYS[1], unpack(out))
redis.call('DEL', unpack(KEYS, 3))
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
if keep > 0 then
  redis.call('PEXPIREAT', KEYS[1], keep)
end
return {1, now, unpack(out)}
