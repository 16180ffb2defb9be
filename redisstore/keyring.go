package redisstore

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"hash"
	"sync"
)

// Key is a secret that signs tokens, named by an ID that tokens carry so
// that the secret can be rotated without logging anybody out.
type Key struct {
	// ID names the key inside tokens. IDs in Options.Keys must be distinct.
	ID byte
	// Secret is at least 32 bytes from a cryptographic random source.
	Secret []byte
}

// MinSecretLen is the shortest secret the store accepts, in bytes.
const MinSecretLen = 32

// Labels that separate the keys derived from one secret, one per purpose.
const (
	labelMAC  = "sessioncache v1 token mac"
	labelHash = "sessioncache v1 token hash"
	labelNext = "sessioncache v1 successor"
	labelUser = "sessioncache v1 user placement"
)

// key holds the keys derived from one secret. Each purpose has its own key so
// that no value computed for one purpose can stand in for another.
type key struct {
	id   byte
	macs hmacPool // token MAC
	hash hmacPool // keyed hash stored in Redis in place of the token
	next hmacPool // derives a successor's secret from its predecessor
}

func newKey(id byte, secret []byte) *key {
	return &key{
		id:   id,
		macs: newHMACPool(deriveKey(secret, labelMAC)),
		hash: newHMACPool(deriveKey(secret, labelHash)),
		next: newHMACPool(deriveKey(secret, labelNext)),
	}
}

func (k *key) mac(dst, msg []byte)  { k.macs.sum(dst, msg) }
func (k *key) sum(dst, msg []byte)  { k.hash.sum(dst, msg) }
func (k *key) succ(dst, msg []byte) { k.next.sum(dst, msg) }

// keyring holds every key that verifies tokens; signer signs new ones.
type keyring struct {
	signer *key
	byID   [256]*key
	user   hmacPool // user id -> user hash (placement), from Options.Secret
}

func newKeyring(secret []byte, keys []Key) (*keyring, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("%w: Secret is %d bytes, want at least %d", ErrInvalidOptions, len(secret), MinSecretLen)
	}
	if len(keys) == 0 {
		keys = []Key{{ID: 0, Secret: secret}}
	}
	kr := &keyring{user: newHMACPool(deriveKey(secret, labelUser))}
	for i, k := range keys {
		if len(k.Secret) < MinSecretLen {
			return nil, fmt.Errorf("%w: Keys[%d].Secret is %d bytes, want at least %d", ErrInvalidOptions, i, len(k.Secret), MinSecretLen)
		}
		if kr.byID[k.ID] != nil {
			return nil, fmt.Errorf("%w: Keys[%d].ID %d is used twice", ErrInvalidOptions, i, k.ID)
		}
		kr.byID[k.ID] = newKey(k.ID, k.Secret)
	}
	kr.signer = kr.byID[keys[0].ID]
	return kr, nil
}

// userHash writes the placement hash of userID to dst (userHashLen bytes).
func (kr *keyring) userHash(dst []byte, userID string) {
	var sum [sha256.Size]byte
	h := kr.user.get()
	h.Write([]byte(userID))
	h.Sum(sum[:0])
	kr.user.put(h)
	copy(dst, sum[:userHashLen])
}

func deriveKey(secret []byte, label string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// hmacPool reuses keyed HMAC states: building one costs several allocations
// and two SHA-256 blocks, and every token operation needs a few.
type hmacPool struct{ p *sync.Pool }

func newHMACPool(k []byte) hmacPool {
	return hmacPool{p: &sync.Pool{New: func() any { return hmac.New(sha256.New, k) }}}
}

func (p hmacPool) get() hash.Hash { return p.p.Get().(hash.Hash) }

func (p hmacPool) put(h hash.Hash) {
	h.Reset()
	p.p.Put(h)
}

// sum writes the HMAC of msg, truncated to len(dst) bytes, to dst.
func (p hmacPool) sum(dst, msg []byte) {
	var out [sha256.Size]byte
	h := p.get()
	h.Write(msg)
	h.Sum(out[:0])
	p.put(h)
	copy(dst, out[:])
}
