package dpop

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

// maxBytesPerProof bounds the replay cache's Redis memory per proof in its
// window: issue 18's goal. One key per proof with a TTL measured 117.5 on
// Redis 7.0 (a 32-byte entry in the keyspace and one in the expires table,
// the name's allocation, and the tables' buckets); proofs as fields of a
// window's hashes, which stay listpacks, cost far less.
const maxBytesPerProof = 100

// The replay cache's memory per proof, on a Redis of its own (used_memory
// of INFO memory over 100,000 proofs, with the service's default key
// prefix), and MEMORY USAGE of one key.
func TestReplayMemory(t *testing.T) {
	b := redistest.For(t, redistest.Real).Private(t)
	ctx := context.Background()
	used := func() int64 {
		info, err := b.Client.Info(ctx, "memory").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		t.Fatal("INFO memory has no used_memory")
		return 0
	}
	const proofs = 100_000
	r := NewReplays(b.Client, "sc:", NewVerifier(Config{}).ReplayTTL(), nil)
	proof := func(i int) Proof {
		return Proof{JKT: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I", JTI: fmt.Sprint("jti-", i)}
	}
	before := used()
	var wg sync.WaitGroup
	const workers = 32
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < proofs; i += workers {
				if err := r.Check(ctx, proof(i)); err != nil {
					t.Errorf("proof %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	per := float64(used()-before) / proofs
	keys := b.Client.DBSize(ctx).Val()
	t.Logf("%d proofs in %d hashes: %.1f bytes each (used_memory)", proofs, keys, per)
	if per > maxBytesPerProof {
		t.Errorf("%.1f bytes per proof, more than %d", per, maxBytesPerProof)
	}
	// Every hash is still a listpack, and expires by itself within two
	// windows.
	var cursor uint64
	for {
		ks, next, err := b.Client.Scan(ctx, cursor, "sc:dpop:*", 1000).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			if enc := b.Client.ObjectEncoding(ctx, k).Val(); enc != "listpack" {
				t.Fatalf("hash %q is a %s", k, enc)
			}
			if ttl := b.Client.PTTL(ctx, k).Val(); ttl <= 0 || ttl > 2*r.ttl {
				t.Fatalf("hash %q has TTL %v, want at most two windows", k, ttl)
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
}
