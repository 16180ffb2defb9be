package dpop

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replays is the jti replay cache (RFC 9449 section 4.3 step 11, section
// 11.1), in Redis: one key per proof, <prefix>dpop:<h>, h the base64url of
// the first 16 bytes of SHA-256(jkt "." jti), set with SET NX PX: one
// command per proof, which expires by itself, and touches one key, so it
// works on a cluster. It stores neither the proof nor its jti. The value is
// "1", one of Redis's shared integers: a key costs its name, its entry and
// its expiry (deploy/README.md sizes it).
type Replays struct {
	client redis.UniversalClient
	prefix string
	ttl    time.Duration
}

// NewReplays returns the replay cache of client under keyPrefix (the
// store's), remembering each jti for ttl (Verifier.ReplayTTL).
func NewReplays(client redis.UniversalClient, keyPrefix string, ttl time.Duration) *Replays {
	return &Replays{client: client, prefix: keyPrefix + "dpop:", ttl: ttl}
}

// Check records p's jti, and refuses (ReasonReplayed, wrapping ErrInvalid)
// a jti of p's key seen within the ttl. A Redis failure is returned as is:
// the proof is then neither accepted nor remembered.
func (r *Replays) Check(ctx context.Context, p Proof) error {
	fresh, err := r.client.SetNX(ctx, r.Key(p), 1, r.ttl).Result()
	if err != nil {
		return err
	}
	if !fresh {
		return invalid(ReasonReplayed)
	}
	return nil
}

// Key returns the key that remembers p's jti.
func (r *Replays) Key(p Proof) string {
	h := sha256.New()
	h.Write([]byte(p.JKT))
	h.Write([]byte{'.'})
	h.Write([]byte(p.JTI))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	var b [22]byte
	base64.RawURLEncoding.Encode(b[:], sum[:16])
	return r.prefix + string(b[:])
}
