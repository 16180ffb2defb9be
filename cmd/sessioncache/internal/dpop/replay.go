package dpop

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/lua"
)

// Replays is the jti replay cache (RFC 9449 section 4.3 step 11, section
// 11.1), in Redis. A proof is remembered by 8 bytes of SHA-256(jkt "."
// jti), never the proof or its jti, as a field of a hash: one hash per
// bucket (16,384 of them, picked by the same hash) and time window (the
// ttl). Up to 128 small fields a hash stays a compact listpack, so that a
// proof costs Redis some 15 bytes rather than the 117 of a key of its own;
// the hashes expire by themselves, a window after their own. One script
// call per proof (lua/dpop_replay.lua), which reads the window from
// Redis's TIME and touches the keys of one bucket, which share a cluster
// slot.
type Replays struct {
	client redis.UniversalClient
	prefix string
	ttl    time.Duration
	now    func() time.Time
}

// buckets is how many hashes share a window's proofs: at 16,384, a window
// holds two million proofs before a hash outgrows a listpack (128 fields),
// and a cluster's slots all get some.
const buckets = 1 << 14

// clockMargin is how far the caller's estimate of Redis's clock may be off
// (an eighth of the window, at most a second): the window it names is that
// of its clock less the margin, so that Redis's window is that one or the
// next (the script checks).
func (r *Replays) clockMargin() time.Duration { return min(time.Second, r.ttl/8) }

// errClockOff: Redis's window is not one this instance named, its reading
// of Redis's clock being off by more than the margin. Nothing was written.
var errClockOff = errors.New("dpop: this instance's reading of Redis's clock is off by more than the replay cache allows")

var replayScript = redis.NewScript(lua.DPoPReplay)

// NewReplays returns the replay cache of client under keyPrefix (the
// store's), remembering each jti for at least ttl (Verifier.ReplayTTL), on
// the clock now (Redis's, as the proofs are judged).
func NewReplays(client redis.UniversalClient, keyPrefix string, ttl time.Duration, now func() time.Time) *Replays {
	if now == nil {
		now = time.Now
	}
	return &Replays{client: client, prefix: keyPrefix + "dpop:", ttl: ttl, now: now}
}

// Check records p's jti, and refuses (ReasonReplayed, wrapping ErrInvalid)
// a jti of p's key seen within the ttl. A Redis failure is returned as is:
// the proof is then neither accepted nor remembered.
func (r *Replays) Check(ctx context.Context, p Proof) error {
	keys, field, w := r.keys(p)
	n, err := replayScript.Run(ctx, r.client, keys[:], w, r.ttl.Milliseconds(), field).Int()
	switch {
	case err != nil:
		return err
	case n == 0:
		return invalid(ReasonReplayed)
	case n < 0:
		return errClockOff
	}
	return nil
}

// keys returns the keys of p's bucket for the windows around now, p's
// field, and the window the middle key is for.
func (r *Replays) keys(p Proof) ([3]string, string, int64) {
	h := sha256.New()
	h.Write([]byte(p.JKT))
	h.Write([]byte{'.'})
	h.Write([]byte(p.JTI))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	bucket := strconv.Itoa(int(binary.BigEndian.Uint16(sum[:2])) % buckets)
	w := r.now().Add(-r.clockMargin()).UnixMilli() / r.ttl.Milliseconds()
	var keys [3]string
	for i := range keys {
		keys[i] = r.prefix + "{" + bucket + "}:" + strconv.FormatInt(w-1+int64(i), 10)
	}
	return keys, string(sum[2:10]), w
}

// Key returns the hash of p's bucket for the window of now (for tests:
// Redis may file it under the next one).
func (r *Replays) Key(p Proof) string {
	keys, _, _ := r.keys(p)
	return keys[1]
}
