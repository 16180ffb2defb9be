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
	labelNext = "sessioncache v1 successor"
	labelUser = "sessioncache v1 user placement"
	labelHash = "sessioncache v1 secret hash"
)

// key holds the keys derived from one secret. Each purpose has its own key so
// that no value computed for one purpose can stand in for another.
type key struct {
	id   byte
	macs hmacPool // token MAC and the keyed hash stored in Redis
	next hmacPool // derives a successor's secret from its predecessor
}

func newKey(id byte, secret []byte) *key {
	return &key{
		id:   id,
		macs: newHMACPool(deriveKey(secret, labelMAC)),
		next: newHMACPool(deriveKey(secret, labelNext)),
	}
}

func (k *key) mac(dst, msg []byte)  { k.macs.sum(dst, msg) }
func (k *key) succ(dst, msg []byte) { k.next.sum(dst, msg) }

// keyring holds every key that verifies tokens; signer signs new ones.
type keyring struct {
	signer *key
	byID   [256]*key
	user   hmacPool // user id -> user hash (placement), from Options.Secret
	hash   hmacPool // token secret -> the hash Redis keeps, from Options.Secret
}

func newKeyring(secret []byte, keys []Key) (*keyring, error) {
	if len(secret) < MinSecretLen {
		return nil, optionError("Secret", fmt.Sprintf("%d bytes", len(secret)), "must be at least %d bytes", MinSecretLen)
	}
	if len(keys) == 0 {
		keys = []Key{{ID: 0, Secret: secret}}
	}
	kr := &keyring{user: newHMACPool(deriveKey(secret, labelUser)), hash: newHMACPool(deriveKey(secret, labelHash))}
	for i, k := range keys {
		if len(k.Secret) < MinSecretLen {
			return nil, optionError(fmt.Sprintf("Keys[%d].Secret", i), fmt.Sprintf("%d bytes", len(k.Secret)), "must be at least %d bytes", MinSecretLen)
		}
		if kr.byID[k.ID] != nil {
			return nil, optionError(fmt.Sprintf("Keys[%d].ID", i), k.ID, "must differ from every other key's id")
		}
		kr.byID[k.ID] = newKey(k.ID, k.Secret)
	}
	kr.signer = kr.byID[keys[0].ID]
	return kr, nil
}

// userHash writes the placement hash of userID to dst (userHashLen bytes).
func (kr *keyring) userHash(dst []byte, userID string) {
	kr.user.sum(dst[:userHashLen], []byte(userID))
}

// secretHash writes to h the keyed hash of t's secret: all that Redis keeps
// of a token. It is keyed by Options.Secret, not by the signing key, so that
// it stays the same across signing-key rotation: the hash of a successor
// derived now matches the hash stored when that successor was minted.
func (kr *keyring) secretHash(h *[hashLen]byte, t *token) {
	kr.hash.sum(h[:], t.secret())
}

func deriveKey(secret []byte, label string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// hmacPool reuses keyed HMAC states: building one costs several allocations
// and two SHA-256 blocks, and every token operation needs a few. Each state
// carries its own buffers, so that hashing does not move its input or output
// to the heap.
type hmacPool struct{ p *sync.Pool }

type hmacState struct {
	h   hash.Hash
	in  [payloadLen]byte
	out [sha256.Size]byte
}

func newHMACPool(k []byte) hmacPool {
	return hmacPool{p: &sync.Pool{New: func() any { return &hmacState{h: hmac.New(sha256.New, k)} }}}
}

// sum writes the HMAC of msg, truncated to len(dst) bytes, to dst.
func (p hmacPool) sum(dst, msg []byte) {
	st := p.p.Get().(*hmacState)
	for len(msg) > 0 {
		n := copy(st.in[:], msg)
		st.h.Write(st.in[:n])
		msg = msg[n:]
	}
	st.h.Sum(st.out[:0])
	st.h.Reset()
	copy(dst, st.out[:])
	p.p.Put(st)
}
