package dpop

import (
	"testing"
)

// BenchmarkVerify is the CPU a proof costs the service, by algorithm
// (without the replay cache's Redis command).
func BenchmarkVerify(b *testing.B) {
	now := t0
	v := verifierAt(&now, nil)
	const at = "an-access-token"
	for _, alg := range []string{"ES256", "EdDSA", "PS256"} {
		k := keysByAlg(b)[alg]
		c := goodClaims()
		c["ath"] = AccessTokenHash(at)
		p := []string{sign(b, k, goodHeader(b, k), c)}
		req := Request{Method: testMethod, URI: testURI, AccessToken: at}
		b.Run("alg="+alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(p, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
