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

func TestRotateAllocations(t *testing.T) {
	f := getRotateFrame()
	defer putRotateFrame(f, true)
	var h1, h2 [hashLen]byte
	a := &rotateArgs{oldHash: &h1, nextHash: &h2, gen: 7, absMS: 1764520000123, idleMS: 1209600000, graceMS: 15000, marginMS: 75600000,
		ip: "203.0.113.77", ua: "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 Chrome/126.0"}
	if n := testing.AllocsPerRun(100, func() { f.pack(a) }); n != 0 {
		t.Errorf("packing rotate.lua's arguments allocates %v times", n)
	}
}
