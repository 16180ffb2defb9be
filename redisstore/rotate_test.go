package redisstore

import "testing"

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
