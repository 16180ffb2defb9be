package dpop

import (
	"crypto/rand"
	"encoding/base64"
	"runtime"
	"strings"
	"testing"
)

// maxAllocPerProof bounds what one Verify may allocate, whatever the proof
// up to MaxProofLen. Parsing allocates in proportion to the input; the most
// per byte is go-jose's, for header members (about 1.8 KB each, measured:
// some 800 KB for the 450 that fit in 8 KB).
const maxAllocPerProof = 1 << 20

// The worst inputs within 8 KB allocate a bounded amount: an RSA key of
// some 40,000 bits, claims nested a thousand deep, thousands of header
// members, a proof of 8 KB of claims, and garbage.
func TestVerifyAllocatesBoundedly(t *testing.T) {
	k := keysByAlg(t)["ES256"]
	huge := make([]byte, 4200)
	rand.Read(huge)
	hugeRSA := map[string]any{"typ": "dpop+jwt", "alg": "RS256", "jwk": map[string]any{"kty": "RSA", "e": "AQAB", "n": base64.RawURLEncoding.EncodeToString(huge)}}
	nested := goodClaims()
	nested["x"] = []any{}
	var deep any = []any{}
	for range 1000 {
		deep = []any{deep}
	}
	nested["x"] = deep
	wide := goodHeader(t, k)
	for i := range 450 {
		wide[strings.Repeat("k", 3)+string(rune('a'+i%26))+string(rune('a'+i/26))] = 1
	}
	big := goodClaims()
	big["pad"] = strings.Repeat("x", 5500)
	inputs := map[string]string{
		"an RSA key of 33,600 bits": b64JSON(t, hugeRSA) + "." + b64JSON(t, goodClaims()) + "." + base64.RawURLEncoding.EncodeToString(huge[:256]),
		"claims nested 1000 deep":   sign(t, k, goodHeader(t, k), nested),
		"450 header members":        sign(t, k, wide, goodClaims()),
		"5.5 KB of claims":          sign(t, k, goodHeader(t, k), big),
		"8 KB of garbage":           strings.Repeat("A", MaxProofLen-2) + "..",
	}
	now := t0
	v := verifierAt(&now, nil)
	for name, in := range inputs {
		if len(in) > MaxProofLen {
			t.Fatalf("%s: %d bytes, over the limit: the test proves nothing", name, len(in))
		}
		const runs = 20
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range runs {
			v.Verify([]string{in}, request())
		}
		runtime.ReadMemStats(&after)
		per := (after.TotalAlloc - before.TotalAlloc) / runs
		t.Logf("%s (%d bytes): %d bytes allocated per Verify", name, len(in), per)
		if per > maxAllocPerProof {
			t.Errorf("%s: %d bytes allocated per Verify, more than %d", name, per, maxAllocPerProof)
		}
	}
}
