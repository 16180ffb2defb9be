package redisstore

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"strings"

	"github.com/sessioncache/sessioncache/internal/tokenlayout"
)

// A token's binary payload, before base64url and the prefix, is laid out in
// internal/tokenlayout (the table is there). Redis keeps only a keyed hash
// of the current token's secret (see keyring.secretHash): the MAC already
// binds the secret to every other field, and a hash of the secret alone lets
// a script recognise the immediate predecessor of the current token by the
// hash of the secret derived from it.
const (
	tokenVersion = tokenlayout.Version

	offKeyID    = tokenlayout.KeyID
	offUser     = tokenlayout.User
	offSession  = tokenlayout.Session
	offGen      = tokenlayout.Gen
	offExpires  = tokenlayout.Expires
	offAbsolute = tokenlayout.Absolute
	offSecret   = tokenlayout.Secret
	offMAC      = tokenlayout.MAC
	offCRC      = tokenlayout.CRC
	payloadLen  = tokenlayout.Len

	userHashLen = offSession - offUser
	secretLen   = offMAC - offSecret
	macLen      = offCRC - offMAC
	hashLen     = 16 // stored keyed hash of a token's secret

	encodedLen = tokenlayout.EncodedLen // base64url without padding
)

// b64 decodes strictly: the unused low bits of the last character must be
// zero, so each token has exactly one spelling.
var b64 = base64.RawURLEncoding.Strict()

// token is a parsed refresh token. It holds secret material: never log it.
type token struct {
	b [payloadLen]byte
}

func (t *token) keyID() byte        { return t.b[offKeyID] }
func (t *token) userHash() []byte   { return t.b[offUser:offSession] }
func (t *token) sessionID() []byte  { return t.b[offSession:offGen] }
func (t *token) generation() uint32 { return binary.BigEndian.Uint32(t.b[offGen:]) }
func (t *token) expiresMS() int64   { return getUint48(t.b[offExpires:]) }
func (t *token) absoluteMS() int64  { return getUint48(t.b[offAbsolute:]) }
func (t *token) secret() []byte     { return t.b[offSecret:offMAC] }
func (t *token) mac() []byte        { return t.b[offMAC:offCRC] }

// signed is the part of the payload the MAC covers.
func (t *token) signed() []byte { return t.b[:offMAC] }

// authenticated is the part of the payload that derivations cover.
func (t *token) authenticated() []byte { return t.b[:offCRC] }

func (t *token) setHeader(keyID byte, userHash, sessionID []byte, gen uint32, expiresMS, absoluteMS int64) {
	t.b[0] = tokenVersion
	t.b[offKeyID] = keyID
	copy(t.b[offUser:offSession], userHash)
	copy(t.b[offSession:offGen], sessionID)
	binary.BigEndian.PutUint32(t.b[offGen:], gen)
	putUint48(t.b[offExpires:], expiresMS)
	putUint48(t.b[offAbsolute:], absoluteMS)
}

// seal writes the MAC and the checksum. The secret must be in place.
func (t *token) seal(k *key) {
	k.mac(t.b[offMAC:offCRC], t.signed())
	binary.BigEndian.PutUint32(t.b[offCRC:], crc32.ChecksumIEEE(t.b[:offCRC]))
}

// encode renders the token as prefix + base64url(payload).
func (t *token) encode(prefix string) string {
	var sb strings.Builder
	sb.Grow(len(prefix) + encodedLen)
	sb.WriteString(prefix)
	var buf [encodedLen]byte
	b64.Encode(buf[:], t.b[:])
	sb.Write(buf[:])
	return sb.String()
}

// parseToken checks the shape of s: prefix, length, alphabet, version and
// checksum. It does not check the MAC: that needs the key ring.
func parseToken(s, prefix string, t *token) bool {
	if len(s) != len(prefix)+encodedLen || !strings.HasPrefix(s, prefix) {
		return false
	}
	var src [encodedLen]byte
	copy(src[:], s[len(prefix):])
	n, err := b64.Decode(t.b[:], src[:])
	if err != nil || n != payloadLen {
		return false
	}
	if t.b[0] != tokenVersion {
		return false
	}
	return binary.BigEndian.Uint32(t.b[offCRC:]) == crc32.ChecksumIEEE(t.b[:offCRC])
}

// verify reports whether the token's MAC is valid under k, in constant time.
func (t *token) verify(k *key) bool {
	var sum [macLen]byte
	k.mac(sum[:], t.signed())
	return subtle.ConstantTimeCompare(sum[:], t.mac()) == 1
}

func putUint48(b []byte, v int64) {
	_ = b[5]
	b[0] = byte(v >> 40)
	b[1] = byte(v >> 32)
	b[2] = byte(v >> 24)
	b[3] = byte(v >> 16)
	b[4] = byte(v >> 8)
	b[5] = byte(v)
}

func getUint48(b []byte) int64 {
	_ = b[5]
	return int64(b[0])<<40 | int64(b[1])<<32 | int64(b[2])<<24 | int64(b[3])<<16 | int64(b[4])<<8 | int64(b[5])
}
