package redisstore

import (
	"strings"
	"testing"

	"github.com/google/uuid"
)

// slot computes the Redis Cluster hash slot of a key (CRC16/XMODEM of its
// hash tag), to check the layout without a cluster.
func slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc % 16384)
}

func TestSlot(t *testing.T) {
	// Known values from the Redis Cluster specification.
	if got := slot("123456789"); got != 0x31C3%16384 {
		t.Fatalf("slot(123456789) = %d, want %d", got, 0x31C3%16384)
	}
	if slot("{user1000}.following") != slot("{user1000}.followers") {
		t.Fatal("hash tags not honoured")
	}
}

func TestKeysOfAUserShareASlot(t *testing.T) {
	kr, err := newKeyring([]byte("keys-test-secret-keys-test-secret-01"), nil)
	if err != nil {
		t.Fatal(err)
	}
	slots := map[int]bool{}
	for u := 0; u < 500; u++ {
		user := uuid.NewString()
		var uh [userHashLen]byte
		kr.userHash(uh[:], user)
		idx := indexKey("sc:", uh[:])
		for s := 0; s < 4; s++ {
			sid := uuid.New()
			ks := keysFor("sc:", uh[:], sid[:])
			if ks.index != idx {
				t.Fatalf("keysFor index %q != indexKey %q", ks.index, idx)
			}
			if slot(ks.session) != slot(ks.index) {
				t.Fatalf("session %q and index %q in different slots", ks.session, ks.index)
			}
			m := memberOf(ks.session)
			if sessionKey(idx, "sc:", m) != ks.session {
				t.Fatalf("sessionKey(%q) = %q, want %q", m, sessionKey(idx, "sc:", m), ks.session)
			}
			if sessionIDString(m) != sid.String() {
				t.Fatalf("session id %q, want %q", sessionIDString(m), sid)
			}
			if strings.Contains(ks.session, user) || strings.Contains(ks.index, user) {
				t.Fatal("a key names the user")
			}
		}
		slots[slot(idx)] = true
	}
	// No global hash tag: 500 users land on many slots.
	if len(slots) < 450 {
		t.Fatalf("500 users use only %d slots", len(slots))
	}
}

func TestUserHashIsKeyed(t *testing.T) {
	a, _ := newKeyring([]byte("keys-test-secret-keys-test-secret-01"), nil)
	b, _ := newKeyring([]byte("keys-test-secret-keys-test-secret-02"), nil)
	var ha, hb [userHashLen]byte
	a.userHash(ha[:], "alice")
	b.userHash(hb[:], "alice")
	if ha == hb {
		t.Fatal("user placement does not depend on the secret")
	}
}
