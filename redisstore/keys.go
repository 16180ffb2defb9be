package redisstore

// Keys are built here; schema.go describes them.

const tagLen = 8 // base64url of 6 bytes

type keys struct {
	session string
	index   string
}

// keysFor builds the keys of a session; userHash is userHashLen bytes,
// sessionID 16 bytes. Both keys share one allocation.
func keysFor(prefix string, userHash, sessionID []byte) keys {
	var buf [160]byte
	b := appendTagged(buf[:0], prefix, userHash, kindSession)
	b = b64.AppendEncode(b, sessionID)
	n := len(b)
	b = appendTagged(b, prefix, userHash, kindIndex)
	b = b64.AppendEncode(b, userHash[6:])
	s := string(b)
	return keys{session: s[:n], index: s[n:]}
}

// indexKey builds the key of a user's session index.
func indexKey(prefix string, userHash []byte) string {
	var buf [64]byte
	return string(b64.AppendEncode(appendTagged(buf[:0], prefix, userHash, kindIndex), userHash[6:]))
}

// appendTagged appends prefix + "{T}:" + kind + ":", where T, the hash tag,
// encodes the first 6 bytes of the user hash.
func appendTagged(b []byte, prefix string, userHash []byte, kind byte) []byte {
	b = append(b, prefix...)
	b = append(b, '{')
	b = b64.AppendEncode(b, userHash[:6])
	return append(b, '}', ':', kind, ':')
}

// sessionKey builds the key of a session in the same slot as index, from
// the session's member in the index.
func sessionKey(index, prefix, member string) string {
	// index is prefix + "{T}:u:U"; the session key is prefix + "{T}:s:" + member.
	return index[:len(prefix)+tagLen+2] + ":s:" + member
}
