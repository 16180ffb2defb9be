package dpop

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

var nonceSecret = []byte("a root secret of at least thirty-two bytes")

// A nonce is good in its slot, the one after and the one before (from
// whichever instance: the same secret makes the same nonces), and in no
// other, and one of another secret is never good.
func TestNonces(t *testing.T) {
	now := t0
	clock := func() time.Time { return now }
	a, err := NewNonces(nonceSecret, time.Minute, clock)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewNonces(nonceSecret, time.Minute, clock)
	other, _ := NewNonces([]byte("another secret of at least thirty-two bytes"), time.Minute, clock)
	n := a.Current()
	if len(n) != nonceLen {
		t.Fatalf("a nonce of %d characters, want %d", len(n), nonceLen)
	}
	if b.Current() != n || !b.Valid(n) {
		t.Error("another instance with the same secret does not make and accept the same nonce")
	}
	if other.Valid(n) {
		t.Error("an instance of another secret accepts the nonce")
	}
	now = now.Add(-time.Minute)
	if !a.Valid(n) {
		t.Error("the nonce of the next slot is refused (an instance a little behind)")
	}
	for i, want := range []bool{true, true, false, false} {
		now = t0.Add(time.Duration(i) * time.Minute)
		if got := a.Valid(n); got != want {
			t.Errorf("%d slots later: Valid %v, want %v", i, got, want)
		}
	}
	if a.Current() == n {
		t.Error("the nonce did not change with the slot")
	}
	for _, bad := range []string{"", "x", strings.Repeat("A", nonceLen), n[:nonceLen-1] + "!", strings.ToUpper(n)} {
		if a.Valid(bad) {
			t.Errorf("Valid(%q) = true", bad)
		}
	}
	if _, err := NewNonces(nonceSecret, time.Millisecond, clock); err == nil {
		t.Error("a nonce period of 1ms was accepted")
	}
}

// With nonces on, a proof without one, or with a stale one, is refused
// with ErrUseNonce; one with the current nonce passes. A proof bad for
// another reason says that reason first.
func TestVerifyNonce(t *testing.T) {
	now := t0
	nonces, _ := NewNonces(nonceSecret, time.Minute, func() time.Time { return now })
	v := verifierAt(&now, nonces)
	k := keysByAlg(t)["ES256"]
	proof := func(nonce any) string {
		c := goodClaims()
		if nonce != nil {
			c["nonce"] = nonce
		}
		c["iat"] = now.Unix()
		return sign(t, k, goodHeader(t, k), c)
	}
	if _, err := v.Verify([]string{proof(nil)}, request()); !errors.Is(err, ErrUseNonce) || Reason(err) != "use_nonce" {
		t.Errorf("no nonce: %v, want ErrUseNonce", err)
	}
	if _, err := v.Verify([]string{proof(7)}, request()); !errors.Is(err, ErrInvalid) {
		t.Errorf("a numeric nonce: %v, want ErrInvalid", err)
	}
	cur := nonces.Current()
	if _, err := v.Verify([]string{proof(cur)}, request()); err != nil {
		t.Errorf("the current nonce: %v", err)
	}
	now = now.Add(2 * time.Minute)
	if _, err := v.Verify([]string{proof(cur)}, request()); !errors.Is(err, ErrUseNonce) {
		t.Errorf("a nonce two slots old: %v, want ErrUseNonce", err)
	}
	bad := proof(nil)
	bad = bad[:len(bad)-4] + "AAAA"
	if _, err := v.Verify([]string{bad}, request()); Reason(err) != ReasonSignature {
		t.Errorf("a bad signature and no nonce: %v, want the signature's refusal", err)
	}
}

// The Clock is Redis's: its offset is measured from the middle of the
// round trip, it keeps the last offset when a reading fails, and it is the
// local clock before the first.
func TestClock(t *testing.T) {
	local := t0
	redisAhead := 90 * time.Second
	fail := false
	c := NewClock(func(context.Context) (time.Time, error) {
		if fail {
			return time.Time{}, errors.New("down")
		}
		r := local.Add(redisAhead)
		local = local.Add(2 * time.Millisecond) // the round trip
		return r, nil
	}, func() time.Time { return local })
	if c.Synced() || !c.Now().Equal(local) {
		t.Fatal("before a reading the clock is not the local one")
	}
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Read at local t0 + 90s; the middle of the round trip is t0 + 1ms.
	if got, want := c.Now().Sub(local), redisAhead-time.Millisecond; got != want {
		t.Errorf("offset %v, want %v", got, want)
	}
	fail = true
	if err := c.Sync(context.Background()); err == nil {
		t.Fatal("a failed reading gave no error")
	}
	if got, want := c.Now().Sub(local), redisAhead-time.Millisecond; got != want || !c.Synced() {
		t.Errorf("after a failed reading: offset %v, want %v kept", got, want)
	}
}
