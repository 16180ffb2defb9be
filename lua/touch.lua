-- touch.lua: rewrite a key's TTL unchanged. It is a write, so it enters the
-- replication stream after every earlier write to the key; a WAIT on the
-- same connection then tells whether replicas have those earlier writes.
--
-- KEYS[1] -> any key of the store
--
-- Returns:
--   1  the key exists and was touched
--   0  the key does not exist (nothing written)
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
return 0
