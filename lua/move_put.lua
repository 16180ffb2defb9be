-- move_put.lua: on the Redis the store moves to, restore the keys of one
-- hash tag that move_take.lua took out of the old Redis. It is idempotent:
-- a key that exists here already is newer than its dump (every call of a
-- store with Options.MoveFrom moves the user's keys before it touches
-- them) and is kept, but for a user's session index, whose members are
-- merged (the highest keep-until wins). The tag's mark remembers the last
-- move restored, so that a second caller finishing the same move (it read
-- the record before the first deleted it) changes nothing, even if the
-- keys changed here since.
--
-- KEYS[1] -> the tag's mark (string: id of the last move restored)
-- KEYS[2] -> the tag's scratch key, for merging an index
-- KEYS[3..] -> the keys moved
-- ARGV[1] -> id of the move
-- ARGV[2] -> how long the mark stays (ms)
-- ARGV[3..] -> per key of KEYS[3..], three values: its deadline (unix ms,
--              as the old Redis had it; 0 = none), 'u' for an index or 's'
--              for another key, its DUMP
--
-- Returns {code, now (unix ms, Redis's clock), n}:
--   {1, now, n}  restored: n keys written (restored or merged)
--   {12, now, 0} this move was restored before; nothing written
-- A dump this Redis cannot read (made by a newer version) is an error
-- reply; the keys restored before it stay, and a retry skips them.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return {12, now, 0}
end
local exists = {}
local at = {}
for i = 3, #KEYS do
  exists[i] = redis.call('EXISTS', KEYS[i]) == 1
  if exists[i] then
    at[i] = redis.call('PEXPIRETIME', KEYS[i])
  end
end
-- restore writes key from dump with the deadline the old Redis had.
local function restore(key, deadline, dump, ...)
  if deadline > 0 then
    redis.call('RESTORE', key, deadline, dump, 'ABSTTL', ...)
  else
    redis.call('RESTORE', key, 0, dump, ...)
  end
end
local n = 0
for i = 3, #KEYS do
  local a = 3 * (i - 3) + 3
  local deadline, kind, dump = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2]
  if not exists[i] then
    restore(KEYS[i], deadline, dump)
    n = n + 1
  elseif kind == 'u' then
    restore(KEYS[2], 0, dump, 'REPLACE')
    redis.call('ZUNIONSTORE', KEYS[i], 2, KEYS[i], KEYS[2], 'AGGREGATE', 'MAX')
    redis.call('DEL', KEYS[2])
    if deadline > 0 and at[i] > 0 then
      redis.call('PEXPIREAT', KEYS[i], math.max(deadline, at[i]))
    end
    n = n + 1
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, now, n}
