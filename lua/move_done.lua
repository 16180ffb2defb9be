-- move_done.lua: on the Redis the store moves from, delete a move record
-- once its keys are restored on the new Redis (move_put.lua).
--
-- KEYS[1] -> the tag's move record
-- ARGV[1] -> id of the move
--
-- Returns 1 if the record was this move's and is deleted, 0 if it is gone
-- already (another caller finished the move) or another move's.
if redis.call('HGET', KEYS[1], '#') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
