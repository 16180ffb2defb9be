-- list.lua: one page of a user's session index, newest keep-until first
-- (roughly the most recently used first). Read-only. The work is bounded by
-- the page size, however many sessions the user has.
--
-- The cursor is the score and member of the last entry of the previous page.
-- If that entry is still in the index with the same score, the page starts
-- right after it; otherwise (it was revoked, or rotated to a later
-- keep-until) after every entry with a higher score.
--
-- KEYS[1] -> the user's session index (zset: session id -> keep-until)
-- ARGV[1] -> cursor score ("" = the first page)
-- ARGV[2] -> cursor member
-- ARGV[3] -> entries to return, at most (the caller asks one more than a
--            page, to know whether another page follows)
--
-- Returns: a flat list of member, score pairs, in order.
local start = 0
if ARGV[1] ~= '' then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if score and tonumber(score) == tonumber(ARGV[1]) then
    start = redis.call('ZREVRANK', KEYS[1], ARGV[2]) + 1
  else
    start = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')
  end
end
return redis.call('ZREVRANGE', KEYS[1], start, start + tonumber(ARGV[3]) - 1, 'WITHSCORES')
