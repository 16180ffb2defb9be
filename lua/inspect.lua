-- inspect.lua: what Validate reads to explain why a token is not the
-- current one of a live session. Read-only.
--
-- KEYS[1] -> the session hash
--
-- Returns {now (unix ms, Redis's clock), r, s}: the revocation reason and
-- the state field of the session, each false when absent (both false: the
-- session does not exist, so it expired or Redis lost it).
local t = redis.call('TIME')
local f = redis.call('HMGET', KEYS[1], 'r', 's')
return {tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), f[1], f[2]}
