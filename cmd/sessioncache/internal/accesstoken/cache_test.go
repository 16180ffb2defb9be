package accesstoken

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestCacheAnswersOnlyWhatVerifyWould checks that a remembered token is
// still refused once it has expired or its key is retired, that the cache
// stays within its size, and that a token that fell out verifies again.
func TestCacheAnswersOnlyWhatVerifyWould(t *testing.T) {
	c := newClock(t0)
	cfg := testConfig(ES256, c)
	cfg.CacheSize = 4
	a := newAuthority(t, cfg)
	tok, want := issue(t, a)
	for i := range 2 {
		got, err := a.Verify(tok)
		if err != nil || got != want {
			t.Fatalf("Verify #%d: %+v, %v; want %+v", i+1, got, err, want)
		}
	}
	if _, ok := a.cache.get(hashToken(tok)); !ok {
		t.Fatal("a verified token is not in the cache")
	}
	c.Set(want.ExpiresAt)
	if _, err := a.Verify(tok); !errors.Is(err, ErrExpired) {
		t.Errorf("a remembered token at its exp: %v, want ErrExpired", err)
	}
	c.Set(want.ExpiresAt.Add(-time.Second))
	if _, err := a.Verify(tok); err != nil {
		t.Errorf("a remembered token before its exp: %v", err)
	}
	// Move the clock back to before the token was issued: a remembered
	// token is no more trusted than a new one.
	c.Set(want.IssuedAt.Add(-Leeway - time.Second))
	if _, err := a.Verify(tok); !errors.Is(err, ErrInvalid) {
		t.Errorf("a remembered token before its iat: %v, want ErrInvalid", err)
	}
	// Two epochs away its key is not published: a remembered token is
	// refused, as it would be without the cache. (Only a clock moved back
	// gets there: forward, exp comes a whole period first.)
	c.Set(t0.Add(-2 * DefaultPeriod))
	if _, err := a.Verify(tok); !errors.Is(err, errUnknownKid) {
		t.Errorf("a remembered token whose key is not published: %v, want %v", err, errUnknownKid)
	}
	c.Set(t0)

	var toks []string
	for i := range 20 {
		tok, _, err := a.Issue(fmt.Sprint("user-", i), "s", "c", "", t0.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
		if _, err := a.Verify(tok); err != nil {
			t.Fatal(err)
		}
		if n := len(a.cache.cur) + len(a.cache.old); n > 4 {
			t.Fatalf("%d tokens remembered, CacheSize 4", n)
		}
	}
	for _, tok := range toks {
		if _, err := a.Verify(tok); err != nil {
			t.Errorf("a token that left the cache: %v", err)
		}
	}
}

// TestVerifyConcurrent verifies and issues from many goroutines across an
// epoch boundary (run with -race).
func TestVerifyConcurrent(t *testing.T) {
	for _, size := range []int{0, 8} {
		t.Run(fmt.Sprint("cache=", size), func(t *testing.T) {
			c := newClock(nextEpochStart(t0, DefaultPeriod).Add(-time.Second))
			cfg := testConfig(EdDSA, c)
			cfg.CacheSize = size
			a := newAuthority(t, cfg)
			var toks []string
			for range 16 {
				tok, _ := issue(t, a)
				toks = append(toks, tok)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for g := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 50 {
						if g == 0 && i == 25 {
							c.Add(2 * time.Second)
						}
						if _, err := a.Verify(toks[(g+i)%len(toks)]); err != nil {
							errs <- err
							return
						}
						if i%10 == 0 {
							if _, _, err := a.Issue("u", "s", "c", "", t0.Add(48*time.Hour)); err != nil {
								errs <- err
								return
							}
							_ = a.JWKS()
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}
