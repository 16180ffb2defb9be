package redisstore

import "github.com/google/uuid"

// User ids and device ids are often UUIDs: 36 characters that hold 16
// bytes. Stored as a marker byte and the 16 bytes, they keep a session
// within a smaller allocation. Input never holds control characters, so the
// marker cannot begin a real id. Only the canonical lowercase form is
// compacted, so that expanding gives back exactly the id that was given.
const uuidMarker = 0x01

// storedID returns the form of id that Redis keeps.
func storedID(id string) string {
	if len(id) != 36 {
		return id
	}
	u, err := uuid.Parse(id)
	if err != nil || u.String() != id {
		return id
	}
	var b [17]byte
	b[0] = uuidMarker
	copy(b[1:], u[:])
	return string(b[:])
}

// loadedID returns the id that a stored form stands for.
func loadedID(s string) string {
	if len(s) != 17 || s[0] != uuidMarker {
		return s
	}
	var u uuid.UUID
	copy(u[:], s[1:])
	return u.String()
}
