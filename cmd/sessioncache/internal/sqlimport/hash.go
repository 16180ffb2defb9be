package sqlimport

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/sessioncache/sessioncache/redisstore"
)

// How the old table turned a token into what it stores: the names the
// service's SESSIONCACHE_LEGACY_HASH setting takes.
const (
	HashOff        = "off"
	HashSHA256     = "sha256"
	HashSHA512     = "sha512"
	HashHMACSHA256 = "hmac-sha256"
	HashPlain      = "plain"
)

// Hashes lists the hash settings, for usage texts.
var Hashes = []string{HashOff, HashSHA256, HashSHA512, HashHMACSHA256, HashPlain}

// HashFunc returns what redisstore.Options.LegacyHash takes for a table
// whose tokens are hashed as name says: the digest of a presented token,
// as raw bytes. key is the HMAC key of hmac-sha256 (a "pepper"), nil for
// the others. A table of plain tokens (plain) is matched by the SHA-256 of
// the token, which the import computes from the column in the same way.
// HashOff returns nil: the legacy path is off.
func HashFunc(name string, key []byte) (func(string) []byte, error) {
	if name != HashHMACSHA256 && key != nil {
		return nil, fmt.Errorf("a key is for %s only, not %s", HashHMACSHA256, name)
	}
	switch name {
	case HashOff:
		return nil, nil
	case HashSHA256, HashPlain:
		return func(tok string) []byte {
			h := sha256.Sum256([]byte(tok))
			return h[:]
		}, nil
	case HashSHA512:
		return func(tok string) []byte {
			h := sha512.Sum512([]byte(tok))
			return h[:]
		}, nil
	case HashHMACSHA256:
		if len(key) == 0 {
			return nil, fmt.Errorf("%s needs its key", HashHMACSHA256)
		}
		k := append([]byte(nil), key...)
		return func(tok string) []byte {
			m := hmac.New(sha256.New, k)
			m.Write([]byte(tok))
			return m.Sum(nil)
		}, nil
	}
	return nil, fmt.Errorf("unknown token hash %q: want one of %s", name, strings.Join(Hashes, ", "))
}

// Encodings of a text hash column (a bytea column holds the raw digest).
const (
	EncodingHex       = "hex"
	EncodingBase64    = "base64"    // standard alphabet, padded or not
	EncodingBase64URL = "base64url" // URL alphabet, padded or not
)

// digestOf turns a value of the hash column into the digest the service's
// LegacyHash computes for the token: the raw bytes of a bytea column; a
// text column decoded (hex in either case, or base64); for plain tokens,
// the SHA-256 of the column's text.
func digestOf(hash, encoding string, v any) ([]byte, error) {
	var d []byte
	switch v := v.(type) {
	case []byte:
		if hash == HashPlain {
			d = hashPlain(string(v))
			break
		}
		d = v
	case string:
		var err error
		switch {
		case hash == HashPlain:
			d = hashPlain(v)
		case encoding == EncodingHex:
			d, err = hex.DecodeString(v)
		case encoding == EncodingBase64:
			d, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "="))
		case encoding == EncodingBase64URL:
			d, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(v, "="))
		default:
			err = fmt.Errorf("unknown hash encoding %q", encoding)
		}
		if err != nil {
			return nil, fmt.Errorf("hash column: %v", err)
		}
	default:
		return nil, fmt.Errorf("hash column holds a %T, want text or bytea", v)
	}
	if len(d) == 0 || len(d) > redisstore.MaxLegacyDigestLen {
		return nil, fmt.Errorf("hash column holds %d bytes, want 1 to %d", len(d), redisstore.MaxLegacyDigestLen)
	}
	return d, nil
}

func hashPlain(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}
