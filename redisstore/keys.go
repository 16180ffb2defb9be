package redisstore

// Key layout. All keys of one user share the hash tag {T}, where T encodes
// the first 6 bytes of the user hash (a keyed hash of the user id), so every
// script touches one cluster slot, and users spread over all slots.
//
//	<prefix>{T}:s:<session id>   hash: one session (token family)
//	<prefix>{T}:u:<U>            zset: the user's sessions, scored by expiry
//
// U encodes the other 6 bytes of the user hash. Neither key names the user.
// Session ids are 16 random bytes, written as 22 base64url characters.

const tagLen = 8 // base64url of 6 bytes

type keys struct {
	session string
	index   string
}

// keysFor builds the keys of a session; userHash is userHashLen bytes,
// sessionID 16 bytes.
func keysFor(prefix string, userHash, sessionID []byte) keys {
	var tag, rest [tagLen]byte
	b64.Encode(tag[:], userHash[:6])
	b64.Encode(rest[:], userHash[6:])
	var sid [22]byte
	b64.Encode(sid[:], sessionID)

	var buf [160]byte
	base := append(buf[:0], prefix...)
	base = append(base, '{')
	base = append(base, tag[:]...)
	base = append(base, "}:s:"...)
	base = append(base, sid[:]...)
	n := len(base)
	base = append(base, prefix...)
	base = append(base, '{')
	base = append(base, tag[:]...)
	base = append(base, "}:u:"...)
	base = append(base, rest[:]...)
	// One allocation for both keys.
	s := string(base)
	return keys{session: s[:n], index: s[n:]}
}

// indexKey builds the key of a user's session index.
func indexKey(prefix string, userHash []byte) string {
	var tag, rest [tagLen]byte
	b64.Encode(tag[:], userHash[:6])
	b64.Encode(rest[:], userHash[6:])
	return prefix + "{" + string(tag[:]) + "}:u:" + string(rest[:])
}

// sessionKey builds the key of a session in the same slot as index, from
// the session's member in the index.
func sessionKey(index, prefix, member string) string {
	// index is prefix + "{T}:u:U"; the session key is prefix + "{T}:s:" + member.
	return index[:len(prefix)+tagLen+2] + ":s:" + member
}
