package dpop

import (
	"errors"
	"strings"
	"testing"
)

// FuzzVerify: no input makes Verify panic or answer anything but a proof
// or a refusal with one of its reasons; an accepted proof has a jti and a
// thumbprint, and an input that is not exactly one well-formed JWS is
// never accepted. Seeds: a valid proof of each algorithm and variants.
func FuzzVerify(f *testing.F) {
	for _, k := range keysByAlg(f) {
		p := sign(f, k, goodHeader(f, k), goodClaims())
		f.Add(p)
		f.Add(p + "x")
		f.Add(strings.Replace(p, ".", "..", 1))
	}
	f.Add("")
	f.Add("a.b.c")
	f.Add(strings.Repeat("A", MaxProofLen+1))
	reasons := map[string]bool{ReasonMissing: true, ReasonMultiple: true, ReasonTooLong: true, ReasonMalformed: true,
		ReasonType: true, ReasonKey: true, ReasonSignature: true, ReasonClaims: true, ReasonMethod: true, ReasonURI: true,
		ReasonIssuedAt: true, ReasonATH: true}
	now := t0
	v := verifierAt(&now, nil)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := v.Verify([]string{s}, request())
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !reasons[Reason(err)] {
				t.Fatalf("refused with %v (reason %q)", err, Reason(err))
			}
			return
		}
		if len(s) > MaxProofLen || strings.Count(s, ".") != 2 {
			t.Fatalf("accepted %d bytes with %d dots", len(s), strings.Count(s, "."))
		}
		if p.JTI == "" || len(p.JKT) != 43 {
			t.Fatalf("accepted with jti %q and jkt %q", p.JTI, p.JKT)
		}
	})
}
