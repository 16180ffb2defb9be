-- touch.lua: rewrite a key's TTL unchanged. It is a write, so it enters the
-- replication stream after every earlier write to the key; a WAIT on the
-- same connection then tells whether replicas have those earlier writes.
-- With a field name, it first checks that the key holds that field: a
-- revocation's tombstone must be on the master the WAIT runs on (after a
-- failover between the revocation and the WAIT it may not be, and a WAIT
-- there would acknowledge a revocation that was lost).
--
-- KEYS[1] -> any key of the store
-- ARGV[1] -> optional: a hash field KEYS[1] must hold (the tombstone's r)
--
-- Returns:
--   1  the key exists (with the field, if named) and was touched
--   0  the key does not exist, or lacks the field (nothing written)
if ARGV[1] and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
return 0
