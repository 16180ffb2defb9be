package accesstoken

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// BenchmarkIssue signs tokens as Issue does; sub-benchmark signer=go-jose
// builds the same token with go-jose's signer (one signer per key, made
// once), the baseline Issue's own JWS writer must beat.
func BenchmarkIssue(b *testing.B) {
	for _, alg := range algs {
		a := newAuthority(b, testConfig(alg, newClock(t0)))
		notAfter := t0.Add(time.Hour)
		b.Run(fmt.Sprintf("alg=%s/signer=own", alg), func(b *testing.B) {
			b.ReportAllocs()
			start := cpuTime(b)
			for b.Loop() {
				if _, _, err := a.Issue("user-1", "sess-1", "web", "", notAfter); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, start)
		})
		b.Run(fmt.Sprintf("alg=%s/signer=go-jose", alg), func(b *testing.B) {
			k := a.keyring(t0).signing()
			signer, err := jose.NewSigner(jose.SigningKey{Algorithm: a.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}},
				(&jose.SignerOptions{}).WithType(tokenType))
			if err != nil {
				b.Fatal(err)
			}
			type claims struct {
				Iss      string `json:"iss"`
				Sub      string `json:"sub"`
				Aud      string `json:"aud"`
				Exp      int64  `json:"exp"`
				Iat      int64  `json:"iat"`
				Jti      string `json:"jti"`
				ClientID string `json:"client_id"`
				Sid      string `json:"sid"`
			}
			b.ReportAllocs()
			start := cpuTime(b)
			for b.Loop() {
				now := a.now()
				c := claims{a.issuer, "user-1", a.audience, now.Add(a.ttl).Unix(), now.Unix(), "AAAAAAAAAAAAAAAAAAAAAA", "web", "sess-1"}
				tok, err := jwt.Signed(signer).Claims(c).Serialize()
				if err != nil {
					b.Fatal(err)
				}
				if len(tok) == 0 {
					b.Fatal("empty token")
				}
			}
			reportCPU(b, start)
		})
	}
}

// BenchmarkVerify verifies one valid token: cache=off is the whole check
// (go-jose's parse and signature check, then the claims), cache=on a token
// seen before.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range algs {
		for _, cache := range []bool{false, true} {
			b.Run(fmt.Sprintf("alg=%s/cache=%s", alg, map[bool]string{false: "off", true: "on"}[cache]), func(b *testing.B) {
				cfg := testConfig(alg, newClock(t0))
				if !cache {
					cfg.CacheSize = -1
				}
				a := newAuthority(b, cfg)
				tok, _ := issue(b, a)
				b.ReportAllocs()
				start := cpuTime(b)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := a.Verify(tok); err != nil {
							b.Fatal(err)
						}
					}
				})
				reportCPU(b, start)
			})
		}
	}
}

// BenchmarkVerifyRefreshToken is the cost of telling a refresh token
// presented where an access token belongs.
func BenchmarkVerifyRefreshToken(b *testing.B) {
	a := newAuthority(b, testConfig(ES256, newClock(t0)))
	const refresh = "sct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	b.ReportAllocs()
	start := cpuTime(b)
	for b.Loop() {
		if _, err := a.Verify(refresh); !errors.Is(err, ErrMalformed) {
			b.Fatal(err)
		}
	}
	reportCPU(b, start)
}

// BenchmarkJWKS is the cost of serving the key set within an epoch.
func BenchmarkJWKS(b *testing.B) {
	a := newAuthority(b, testConfig(ES256, newClock(t0)))
	b.ReportAllocs()
	for b.Loop() {
		if len(a.JWKS()) == 0 {
			b.Fatal("empty")
		}
	}
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per operation since start: unlike ns/op,
// it does not grow when other work shares the machine's cores.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
}
