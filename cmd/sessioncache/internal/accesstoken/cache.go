package accesstoken

import (
	"crypto/sha256"
	"sync"
)

// cached is a verified token: its claims and the epoch of the key that
// signed it.
type cached struct {
	claims Claims
	epoch  int64
}

// cache remembers verified tokens by the SHA-256 of their text, in two
// generations of at most size/2 entries each: when the current one is full it
// becomes the old one and the old one is dropped, and a hit in the old one
// moves to the current one. Memory stays bounded without a list to maintain,
// and tokens in use stay in.
type cache struct {
	mu       sync.Mutex
	half     int
	cur, old map[[sha256.Size]byte]cached
}

func newCache(size int) *cache {
	half := max(size/2, 1)
	return &cache{half: half, cur: make(map[[sha256.Size]byte]cached, half)}
}

func (c *cache) get(k [sha256.Size]byte) (cached, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.cur[k]; ok {
		return e, true
	}
	e, ok := c.old[k]
	if ok {
		delete(c.old, k)
		c.putLocked(k, e)
	}
	return e, ok
}

func (c *cache) put(k [sha256.Size]byte, e cached) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(k, e)
}

func (c *cache) putLocked(k [sha256.Size]byte, e cached) {
	if len(c.cur) >= c.half {
		c.old, c.cur = c.cur, make(map[[sha256.Size]byte]cached, c.half)
	}
	c.cur[k] = e
}

// hashToken returns the key of raw, at most MaxTokenLen bytes, in the
// cache. (The copy to the stack spares a heap allocation per call.)
func hashToken(raw string) [sha256.Size]byte {
	var buf [MaxTokenLen]byte
	return sha256.Sum256(buf[:copy(buf[:], raw)])
}
