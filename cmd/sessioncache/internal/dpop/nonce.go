package dpop

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"time"
)

// Clock is the fleet's clock: Redis's, read now and then, and kept as an
// offset from the local clock, so that every instance judges a proof's iat
// and a nonce's slot by the same time however far its own clock is off.
// Until the first reading it is the local clock. It is safe for concurrent
// use.
type Clock struct {
	read   func(ctx context.Context) (time.Time, error)
	local  func() time.Time
	offset atomic.Int64 // Redis's time less the local one, in ns
	synced atomic.Bool
}

// NewClock returns a Clock that reads Redis's time with read (TIME on one
// chosen node: every instance must ask the same one) and the local time
// with local (default time.Now).
func NewClock(read func(ctx context.Context) (time.Time, error), local func() time.Time) *Clock {
	if local == nil {
		local = time.Now
	}
	return &Clock{read: read, local: local}
}

// Now returns Redis's time as of the last Sync.
func (c *Clock) Now() time.Time {
	return c.local().Add(time.Duration(c.offset.Load()))
}

// Synced reports whether Sync succeeded at least once.
func (c *Clock) Synced() bool { return c.synced.Load() }

// Sync reads Redis's time and sets the offset, taking the reading to be
// from halfway through the round trip.
func (c *Clock) Sync(ctx context.Context) error {
	before := c.local()
	t, err := c.read(ctx)
	if err != nil {
		return err
	}
	after := c.local()
	mid := before.Add(after.Sub(before) / 2)
	c.offset.Store(int64(t.Sub(mid)))
	c.synced.Store(true)
	return nil
}

// Run syncs every interval until ctx ends; failed readings go to onError
// and leave the offset as it was.
func (c *Clock) Run(ctx context.Context, every time.Duration, onError func(error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, every)
			if err := c.Sync(rctx); err != nil && onError != nil && ctx.Err() == nil {
				onError(err)
			}
			cancel()
		}
	}
}

// Nonces are the server nonces of RFC 9449 section 8, derived rather than
// stored: the nonce of slot s = floor(t / Period), t the fleet's Clock, is
//
//	base64url(s as 8 bytes big-endian || HMAC-SHA256(k, s)[:16])
//
// where k = HMAC-SHA256(secret, "sessioncache dpop nonce v1"). Every
// instance holds the secret, so every instance makes and accepts the same
// nonces with no coordination; one accepts the nonces of the current slot
// and of the one before (so a nonce stays good for one to two Periods) and
// of the one after (an instance a little behind at a slot's start).
type Nonces struct {
	key    [sha256.Size]byte
	period time.Duration
	now    func() time.Time
	cur    atomic.Pointer[nonce]
}

type nonce struct {
	slot uint64
	text string
}

// MinNoncePeriod is the shortest nonce period.
const MinNoncePeriod = time.Second

// nonceLen is the length of a nonce's text: 24 bytes in base64url.
const nonceLen = 32

// NewNonces returns the nonces of secret (the store's root secret), a new
// one every period, by the clock now (Clock.Now).
func NewNonces(secret []byte, period time.Duration, now func() time.Time) (*Nonces, error) {
	if period < MinNoncePeriod {
		return nil, errors.New("dpop: the nonce period must be at least 1s")
	}
	if len(secret) == 0 {
		return nil, errors.New("dpop: the nonce secret is empty")
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("sessioncache dpop nonce v1"))
	n := &Nonces{period: period, now: now}
	m.Sum(n.key[:0])
	return n, nil
}

// Current returns the nonce of the current slot, for the DPoP-Nonce header.
func (n *Nonces) Current() string {
	s := n.slot()
	if c := n.cur.Load(); c != nil && c.slot == s {
		return c.text
	}
	c := &nonce{slot: s, text: n.of(s)}
	n.cur.Store(c)
	return c.text
}

// Valid reports whether s is the nonce of the current slot, the one before
// or the one after.
func (n *Nonces) Valid(s string) bool {
	if len(s) != nonceLen {
		return false
	}
	var b [24]byte
	if _, err := base64.RawURLEncoding.Decode(b[:], []byte(s)); err != nil {
		return false
	}
	slot := binary.BigEndian.Uint64(b[:8])
	cur := n.slot()
	if slot+1 < cur || slot > cur+1 {
		return false
	}
	mac := n.mac(slot)
	return hmac.Equal(mac[:16], b[8:])
}

func (n *Nonces) slot() uint64 { return uint64(n.now().UnixNano() / int64(n.period)) }

func (n *Nonces) mac(slot uint64) [sha256.Size]byte {
	m := hmac.New(sha256.New, n.key[:])
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], slot)
	m.Write(b[:])
	var sum [sha256.Size]byte
	m.Sum(sum[:0])
	return sum
}

func (n *Nonces) of(slot uint64) string {
	var b [24]byte
	binary.BigEndian.PutUint64(b[:8], slot)
	mac := n.mac(slot)
	copy(b[8:], mac[:16])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
