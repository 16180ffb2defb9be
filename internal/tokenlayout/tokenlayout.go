// Package tokenlayout is the binary layout of a redisstore refresh token,
// defined once: redisstore encodes and parses tokens with these offsets, and
// the tests that take a token apart (to forge one, to look for its secret in
// a keyspace, to read its generation) use them too, instead of numbers of
// their own.
//
// A token is a prefix followed by the base64url (no padding) of a payload:
//
//	off len  field
//	  0   1  format version (Version)
//	  1   1  key id that signed the token
//	  2  12  user hash: keyed hash of the user id; its first 6 bytes are the cluster hash tag
//	 14  16  session (family) id
//	 30   4  generation: 0 at login, +1 per rotation
//	 34   6  idle deadline of this token, unix ms
//	 40   6  absolute deadline of its session, unix ms
//	 46  32  secret: crypto/rand at login, derived from the predecessor after
//	 78  16  MAC: HMAC-SHA256(bytes 0..77) under the key, truncated
//	 94   4  CRC-32 (IEEE) of bytes 0..93, to reject typos and garbage offline
package tokenlayout

import (
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"strings"
)

// Offsets into the payload, and its length.
const (
	Version = 1 // the format version, byte 0

	KeyID    = 1
	User     = 2
	Session  = 14
	Gen      = 30
	Expires  = 34
	Absolute = 40
	Secret   = 46
	MAC      = 78
	CRC      = 94
	Len      = 98

	// EncodedLen is the length of the payload in base64url without padding.
	EncodedLen = (Len*8 + 5) / 6
)

// Decode returns the payload of tok, or false when tok does not have the
// prefix or is not base64url. It checks neither the length nor the CRC.
func Decode(tok, prefix string) ([]byte, bool) {
	body, ok := strings.CutPrefix(tok, prefix)
	if !ok {
		return nil, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	return raw, err == nil
}

// Encode returns the token of payload raw under prefix, with the CRC
// recomputed: a payload changed anywhere before the CRC (to forge a token)
// still passes the offline checksum, so only the MAC can refuse it.
func Encode(raw []byte, prefix string) string {
	if len(raw) == Len {
		binary.BigEndian.PutUint32(raw[CRC:], crc32.ChecksumIEEE(raw[:CRC]))
	}
	return prefix + base64.RawURLEncoding.EncodeToString(raw)
}

// Generation returns the generation of tok, or -1 if it cannot be decoded.
func Generation(tok, prefix string) int {
	raw, ok := Decode(tok, prefix)
	if !ok || len(raw) != Len {
		return -1
	}
	return int(binary.BigEndian.Uint32(raw[Gen:]))
}

// KeyIDOf returns the id of the key that signed tok, or -1 if it cannot be
// decoded.
func KeyIDOf(tok, prefix string) int {
	raw, ok := Decode(tok, prefix)
	if !ok || len(raw) != Len {
		return -1
	}
	return int(raw[KeyID])
}
