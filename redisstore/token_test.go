package redisstore

import (
	"bytes"
	"strings"
	"testing"
)

func testKey(t testing.TB) *key {
	t.Helper()
	return newKey(7, []byte("unit-test-secret-unit-test-secret-0123"))
}

func mintForTest(t testing.TB, k *key) (token, string) {
	t.Helper()
	var tok token
	uh := bytes.Repeat([]byte{0xA5}, userHashLen)
	sid := bytes.Repeat([]byte{0x3C}, 16)
	tok.setHeader(k.id, uh, sid, 41, 1_800_000_000_123, 1_900_000_000_456)
	copy(tok.b[offSecret:offMAC], bytes.Repeat([]byte("fixed secret "), 3)) // deterministic across fuzz workers
	tok.seal(k)
	return tok, tok.encode(DefaultTokenPrefix)
}

func TestTokenRoundTrip(t *testing.T) {
	k := testKey(t)
	want, s := mintForTest(t, k)
	if !strings.HasPrefix(s, DefaultTokenPrefix) || len(s) != len(DefaultTokenPrefix)+encodedLen {
		t.Fatalf("encoded token %d bytes, want prefix %q and %d bytes", len(s), DefaultTokenPrefix, len(DefaultTokenPrefix)+encodedLen)
	}
	var got token
	if !parseToken(s, DefaultTokenPrefix, &got) {
		t.Fatal("parseToken rejected a token it encoded")
	}
	if got != want {
		t.Fatal("decoded token differs from the encoded one")
	}
	if !got.verify(k) {
		t.Fatal("MAC does not verify")
	}
	if got.keyID() != 7 || got.generation() != 41 || got.expiresMS() != 1_800_000_000_123 || got.absoluteMS() != 1_900_000_000_456 {
		t.Fatalf("fields: kid %d gen %d exp %d abs %d", got.keyID(), got.generation(), got.expiresMS(), got.absoluteMS())
	}
	// The stored hash is not any part of the token.
	kr, _ := newKeyring([]byte("unit-test-secret-unit-test-secret-0123"), nil)
	var h [hashLen]byte
	kr.secretHash(&h, &got)
	if bytes.Contains(got.b[:], h[:8]) {
		t.Fatal("the keyed hash appears inside the token")
	}
}

func TestTokenRejects(t *testing.T) {
	k := testKey(t)
	_, s := mintForTest(t, k)
	other := newKey(7, []byte("another-secret-another-secret-01234567"))
	var tok token
	if !parseToken(s, DefaultTokenPrefix, &tok) {
		t.Fatal("valid token rejected")
	}
	if tok.verify(other) {
		t.Fatal("MAC verified under another key")
	}
	for i := len(DefaultTokenPrefix); i < len(s); i++ {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		var t2 token
		if parseToken(string(b), DefaultTokenPrefix, &t2) && t2.verify(k) {
			t.Fatalf("token with character %d changed still parses and verifies", i)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	k := testKey(f)
	_, s := mintForTest(f, k)
	f.Add(s)
	f.Add("")
	f.Add(DefaultTokenPrefix)
	f.Add(s[:len(s)-1] + "=")
	f.Add(strings.Repeat("A", len(s)))
	f.Fuzz(func(t *testing.T, in string) {
		var tok token
		if !parseToken(in, DefaultTokenPrefix, &tok) {
			return
		}
		// Whatever parses re-encodes to itself (the encoding is canonical)...
		if got := tok.encode(DefaultTokenPrefix); got != in {
			t.Fatalf("parse/encode not canonical: %q -> %q", in, got)
		}
		// ...and only the genuine token verifies.
		if tok.verify(k) && in != s {
			t.Fatalf("a token that was never minted verifies: %q", in)
		}
	})
}

func BenchmarkParseVerify(b *testing.B) {
	k := testKey(b)
	_, s := mintForTest(b, k)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ { // not b.Loop: the module supports Go 1.22
		var tok token
		if !parseToken(s, DefaultTokenPrefix, &tok) || !tok.verify(k) {
			b.Fatal("rejected")
		}
	}
}
