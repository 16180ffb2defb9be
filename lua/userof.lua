-- userof.lua: not a script of its own. lua.go puts it in front of every
-- script that reads the user out of a session's h field (issue, evict,
-- revoke, revoke_all, import), so that they share one copy.
--
-- userOf returns the user id a live session's h field ends with: after the
-- 16-byte hash, the client binding if any (byte 2, the client id's length,
-- the client id) and the key binding if any (byte 3, 16 bytes of the DPoP
-- key's thumbprint); nil for a damaged h, too short for what it announces.
local function userOf(h)
  local i = 17
  if string.byte(h, i) == 2 then
    i = i + 2 + (string.byte(h, i + 1) or #h)
  end
  if string.byte(h, i) == 3 then
    i = i + 17
  end
  if i > #h then
    return nil
  end
  return string.sub(h, i)
end
