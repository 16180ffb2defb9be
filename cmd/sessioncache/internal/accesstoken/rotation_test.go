package accesstoken

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// epochStart returns the start of the epoch after the one of t.
func nextEpochStart(t time.Time, period time.Duration) time.Time {
	return time.Unix(0, (epochOf(t, period)+1)*int64(period))
}

// TestRotationAcrossEpochs follows the keys over several epochs with a moved
// clock: at every moment sampled, the key set holds the key that signs now
// and the key that signs next; a token signed at the very end of an epoch
// verifies in the next one until its exp; and its key leaves the key set only
// once the token has expired.
func TestRotationAcrossEpochs(t *testing.T) {
	for _, alg := range algs {
		t.Run("alg="+alg, func(t *testing.T) {
			for _, cache := range []int{0, -1} {
				t.Run(fmt.Sprintf("cache=%v", cache == 0), func(t *testing.T) {
					testRotation(t, alg, cache)
				})
			}
		})
	}
}

func testRotation(t *testing.T, alg string, cacheSize int) {
	const period = 3 * time.Hour
	const ttl = 10 * time.Minute
	c := newClock(t0)
	cfg := testConfig(alg, c)
	cfg.Period, cfg.TTL, cfg.JWKSMaxAge, cfg.CacheSize = period, ttl, time.Hour, cacheSize
	a := newAuthority(t, cfg)
	// next signs an epoch ahead of a: what a will sign one period later.
	nc := newClock(t0.Add(period))
	ncfg := cfg
	ncfg.Now = nc.Now
	next := newAuthority(t, ncfg)

	start := nextEpochStart(t0, period)
	seen := map[string]bool{}
	for _, off := range []time.Duration{0, time.Nanosecond, time.Minute, period / 2, period - ttl, period - time.Second, period - time.Nanosecond} {
		for e := range 3 {
			now := start.Add(time.Duration(e)*period + off)
			c.Set(now)
			nc.Set(now.Add(period))
			tok, _ := issue(t, a)
			kid := kidOf(t, tok)
			nextTok, _ := issue(t, next)
			published := kids(t, a.JWKS())
			if len(published) != 3 {
				t.Fatalf("at %v: %d keys published, want 3", now, len(published))
			}
			if !contains(published, kid) {
				t.Errorf("at %v: the signing key %s is not published", now, kid)
			}
			if !contains(published, kidOf(t, nextTok)) {
				t.Errorf("at %v: the next epoch's key is not published", now)
			}
			if kid == kidOf(t, nextTok) {
				t.Errorf("at %v: the next epoch signs with the same key", now)
			}
			seen[kid] = true
		}
	}
	if len(seen) != 3 {
		t.Errorf("%d signing keys over 3 epochs, want 3", len(seen))
	}

	// A token signed in the last nanosecond of an epoch.
	end := start.Add(period - time.Nanosecond)
	c.Set(end)
	tok, claims := issue(t, a)
	kid := kidOf(t, tok)
	if want := end.Truncate(time.Second).Add(ttl); !claims.ExpiresAt.Equal(want) {
		t.Fatalf("exp %v, want %v", claims.ExpiresAt, want)
	}
	// It verifies in the next epoch until its exp, and its key stays
	// published all that time.
	for _, at := range []time.Time{end.Add(time.Nanosecond), end.Add(ttl / 2), claims.ExpiresAt.Add(-time.Nanosecond)} {
		c.Set(at)
		if _, err := a.Verify(tok); err != nil {
			t.Errorf("at exp - %v: %v", claims.ExpiresAt.Sub(at), err)
		}
		if epochOf(at, period) != epochOf(end, period)+1 {
			t.Fatalf("test bug: %v is not in the next epoch", at)
		}
	}
	for _, at := range []time.Time{claims.ExpiresAt, claims.ExpiresAt.Add(time.Second)} {
		c.Set(at)
		if _, err := a.Verify(tok); !errors.Is(err, ErrExpired) {
			t.Errorf("at exp + %v: %v, want ErrExpired", at.Sub(claims.ExpiresAt), err)
		}
	}
	// The key stays published until the end of the epoch after the one it
	// signed in, long after its last token expired, and leaves then.
	for _, at := range []time.Time{claims.ExpiresAt, end.Add(period)} {
		c.Set(at)
		if !contains(kids(t, a.JWKS()), kid) {
			t.Errorf("at %v after its last token: the key is no longer published", at.Sub(end))
		}
	}
	c.Set(end.Add(period + time.Nanosecond))
	if contains(kids(t, a.JWKS()), kid) {
		t.Errorf("two epochs after it signed, the key is still published")
	}
	if _, err := a.Verify(tok); err == nil {
		t.Errorf("a token verifies after its key was retired")
	}
	// A key is published a whole period before it signs.
	c.Set(end.Add(time.Nanosecond - period))
	if !contains(kids(t, a.JWKS()), kid) {
		t.Errorf("a period before it signs, the key is not published")
	}
	c.Set(end.Add(-2 * period))
	if contains(kids(t, a.JWKS()), kid) {
		t.Errorf("two periods before it signs, the key is published")
	}
}

// TestSkewedInstances checks that instances sharing a secret, with clocks
// apart by a few seconds, accept each other's tokens, including across an
// epoch boundary that one has passed and the other has not; and that an
// instance with another secret accepts none.
func TestSkewedInstances(t *testing.T) {
	for _, alg := range algs {
		t.Run("alg="+alg, func(t *testing.T) {
			boundary := nextEpochStart(t0, DefaultPeriod)
			for _, skew := range []time.Duration{-5 * time.Second, -time.Second, time.Second, 5 * time.Second} {
				for _, at := range []time.Time{t0, boundary.Add(-skew / 2)} {
					ca, cb := newClock(at), newClock(at.Add(skew))
					a := newAuthority(t, testConfig(alg, ca))
					b := newAuthority(t, testConfig(alg, cb))
					other := testConfig(alg, cb)
					other.Secret = otherSecret
					o := newAuthority(t, other)
					for _, p := range []struct {
						name     string
						from, to *Authority
					}{{"a to b", a, b}, {"b to a", b, a}} {
						tok, _ := issue(t, p.from)
						if _, err := p.to.Verify(tok); err != nil {
							t.Errorf("skew %v at %v, %s: %v", skew, at, p.name, err)
						}
						if _, err := o.Verify(tok); !errors.Is(err, ErrInvalid) {
							t.Errorf("skew %v at %v, %s: another secret's instance: %v, want ErrInvalid", skew, at, p.name, err)
						}
					}
					otok, _ := issue(t, o)
					if _, err := a.Verify(otok); !errors.Is(err, ErrInvalid) {
						t.Errorf("a token of another secret: %v, want ErrInvalid", err)
					}
				}
			}
		})
	}
}
