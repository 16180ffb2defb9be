-- dpop_replay.lua: remember the jti of a DPoP proof, or refuse it if it was
-- seen (RFC 9449 section 11.1). Proofs are kept in hashes, one per bucket
-- and time window, rather than a key each: a hash of up to 128 small fields
-- stays a compact listpack, so that a proof costs some 15 bytes of Redis
-- memory instead of a key's 117. The window comes from Redis's TIME, so
-- every instance files a proof under the same window.
--
-- KEYS[1..3] -> the bucket's hashes of windows w-1, w and w+1, w being the
--               caller's estimate of the current window (its clock may be
--               off by less than a window); all in the bucket's slot
-- ARGV[1]    -> w, the window KEYS[2] is for
-- ARGV[2]    -> the window's length (ms)
-- ARGV[3]    -> the proof's field: 8 bytes of SHA-256(jkt "." jti)
--
-- Returns:
--   1  remembered: the proof was not seen
--   0  seen within the last windows: a replay (nothing written)
--  -1  Redis's window is not among the three keys (a caller's clock off by
--      more than a window); nothing written
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local len = tonumber(ARGV[2])
local i = math.floor(now / len) - tonumber(ARGV[1]) + 2
if i < 2 or i > 3 then
  return -1
end
for j = 1, 3 do
  if redis.call('HEXISTS', KEYS[j], ARGV[3]) == 1 then
    return 0
  end
end
redis.call('HSET', KEYS[i], ARGV[3], 1)
-- Kept until the end of the next window: a proof is remembered at least a
-- whole window after it was filed.
redis.call('PEXPIREAT', KEYS[i], (math.floor(now / len) + 2) * len)
return 1
