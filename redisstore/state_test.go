package redisstore

import (
	"hash/fnv"
	"testing"
)

func TestClientSumIsFNV1a(t *testing.T) {
	for _, c := range [][2]string{{"192.0.2.1", "curl/8.5.0"}, {"2001:db8::1", "Mozilla/5.0 (X11; Linux x86_64)"}} {
		h := fnv.New32a()
		h.Write([]byte(c[0] + "\x00" + c[1]))
		if got, want := clientSum(c[0], c[1]), h.Sum32(); got != want {
			t.Errorf("clientSum(%q, %q) = %#x, want FNV-1a %#x", c[0], c[1], got, want)
		}
	}
	if clientSum("", "curl/8.5.0") != 0 || clientSum("192.0.2.1", "") != 0 {
		t.Error("clientSum of a partial client is not 0")
	}
}
