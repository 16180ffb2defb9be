-- lookup.lua: write the lookup entry of one imported legacy token
-- (import.go), and keep its bucket's TTL at the latest absolute deadline
-- of the sessions it names, in one step: a bucket never exists without a
-- TTL, and an entry never outlives its session's deadline's bucket.
--
-- KEYS[1] -> the bucket (hash: field -> where a legacy token's session is)
-- ARGV[1] -> the field (12 bytes of a keyed hash of the token's digest)
-- ARGV[2] -> the value (version, user hash, session id, the row's order)
-- ARGV[3] -> the session's absolute deadline (unix ms)
--
-- Returns 1.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PEXPIREAT', KEYS[1], ARGV[3], 'GT') == 0 and redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
end
return 1
