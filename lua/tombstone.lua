-- tombstone.lua: not a script of its own. lua.go puts it in front of every
-- script that revokes a session (issue, evict, rotate, revoke, revoke_all,
-- legacy, import), so that they share one copy.
--
-- tombstone turns the session hash k into a tombstone in place, keeping its
-- TTL, so that k never goes missing: while k's slot migrates, a command of
-- a script on a key the node does not hold fails (the node would redirect
-- it) after the script's earlier commands ran, and DEL then HSET would lose
-- the session and its tombstone. It deletes all of the session's fields
-- but one first: at maxmemory, Redis refuses HSET as a script's first
-- write, not HDEL, nor any command after a first write.
local function tombstone(k, r, u, q)
  local fields = redis.call('HKEYS', k)
  local last = table.remove(fields)
  if #fields > 0 then
    redis.call('HDEL', k, unpack(fields))
  end
  redis.call('HSET', k, 'r', r, 'u', u, 'q', q)
  if last ~= 'r' and last ~= 'u' and last ~= 'q' then
    redis.call('HDEL', k, last)
  end
end
