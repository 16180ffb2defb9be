package reliability_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/internal/tokenlayout"
	"github.com/sessioncache/sessioncache/redisstore"
)

// store wraps the library's Store and remembers every token it hands out.
type store struct {
	*redisstore.Store
}

func (s store) Issue(ctx context.Context, userID string, c redisstore.Client) (redisstore.Grant, error) {
	g, err := s.Store.Issue(ctx, userID, c)
	remember(g.Token)
	return g, err
}

func (s store) Rotate(ctx context.Context, raw string, c redisstore.Client) (redisstore.Grant, error) {
	g, err := s.Store.Rotate(ctx, raw, c)
	remember(g.Token)
	return g, err
}

func wrap(t testing.TB, c redis.UniversalClient, opt redisstore.Options) store {
	t.Helper()
	return store{redistest.NewStore(t, c, opt).Store}
}

// Offsets in a token's payload (internal/tokenlayout).
const (
	offSecret = tokenlayout.Secret
	offMAC    = tokenlayout.MAC
	offCRC    = tokenlayout.CRC
	// encSecret is where the first base64 character that encodes secret
	// bytes alone sits in the token's body (a character per 6 bits, a
	// group of 4 per 3 bytes).
	encSecret = (offSecret + 2) / 3 * 4
)

// needles returns byte strings that only a leaked token would put
// somewhere: part of a refresh token's secret, raw and as encoded in the
// token, and its MAC; the start of an access token's signature.
func needles() map[string]string {
	tokens.Lock()
	all := append([]string(nil), tokens.all...)
	access := append([]string(nil), tokens.access...)
	tokens.Unlock()
	out := make(map[string]string, 3*len(all)+len(access))
	for i, tok := range access {
		if sig := tok[strings.LastIndexByte(tok, '.')+1:]; len(sig) >= 24 {
			out[sig[:24]] = fmt.Sprintf("access token #%d (signature)", i)
		}
	}
	for i, tok := range all {
		raw, ok := tokenlayout.Decode(tok, redisstore.DefaultTokenPrefix)
		if !ok || len(raw) < offCRC {
			continue
		}
		body := tok[len(redisstore.DefaultTokenPrefix):]
		name := fmt.Sprintf("token #%d", i)
		out[body[encSecret:encSecret+24]] = name + " (encoded secret)"
		out[string(raw[offSecret:offSecret+16])] = name + " (raw secret)"
		out[string(raw[offMAC:offCRC])] = name + " (raw MAC)"
	}
	return out
}

var tokenShape = regexp.MustCompile(regexp.QuoteMeta(redisstore.DefaultTokenPrefix) + `[A-Za-z0-9_-]{20,}`)

// jwtShape is a JWS in compact form whose header and payload are JSON
// objects (base64url of `{"`): an access token.
var jwtShape = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}`)

// leaks returns what in data looks like a token or a piece of one the suite
// handed out.
func leaks(data []byte, ns map[string]string) []string {
	var out []string
	if m := tokenShape.Find(data); m != nil {
		out = append(out, fmt.Sprintf("token-shaped string %.12q...", m))
	}
	if m := jwtShape.Find(data); m != nil {
		out = append(out, fmt.Sprintf("JWT-shaped string %.12q...", m))
	}
	for _, n := range []int{24, 16} {
		for i := 0; i+n <= len(data); i++ {
			if what, ok := ns[string(data[i:i+n])]; ok && len(what) > 0 {
				out = append(out, what)
				if len(out) > 5 {
					return out
				}
			}
		}
	}
	return out
}

var scannedBytes, scannedKeys atomic.Int64

// fillerPrefix starts the keys that tests write to fill Redis (DEBUG
// POPULATE, SET); the scan skips them.
const fillerPrefix = "filler:"

// startServer starts a redis-server for the test and registers, before its
// stop, a scan of its whole keyspace and of its files (append-only file,
// RDB) for tokens.
func startServer(t testing.TB, args ...string) *redistest.Server {
	t.Helper()
	s := redistest.StartServer(t, args...)
	t.Cleanup(func() { scanServer(t, s) })
	return s
}

func scanServer(t testing.TB, s *redistest.Server) {
	t.Helper()
	ns := needles()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: 500 * time.Millisecond})
	defer c.Close()
	if c.Ping(ctx).Err() == nil {
		if found := scanKeyspace(ctx, t, c, ns); len(found) > 0 {
			t.Errorf("keyspace of %s holds token material: %v", s.Addr, found)
		}
	}
	filepath.WalkDir(s.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		scannedBytes.Add(int64(len(data)))
		if found := leaks(data, ns); len(found) > 0 {
			t.Errorf("%s holds token material: %v", path, found)
		}
		return nil
	})
}

// scanKeyspace reads every key of the server (names and contents) and
// looks for token material.
func scanKeyspace(ctx context.Context, t testing.TB, c *redis.Client, ns map[string]string) []string {
	var found []string
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, "*", 1000).Result()
		if err != nil {
			t.Logf("scan %s: %v", c.Options().Addr, err)
			return found
		}
		types := make([]*redis.StatusCmd, len(keys))
		c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				types[i] = p.Type(ctx, k)
			}
			return nil
		})
		vals := make([]redis.Cmder, len(keys))
		c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				switch types[i].Val() {
				case "hash":
					vals[i] = p.HGetAll(ctx, k)
				case "zset":
					vals[i] = p.ZRange(ctx, k, 0, -1)
				case "string":
					vals[i] = p.Get(ctx, k)
				}
			}
			return nil
		})
		for i, k := range keys {
			if strings.HasPrefix(k, fillerPrefix) {
				continue // unrelated data a test wrote, not the store's
			}
			scannedKeys.Add(1)
			data := []byte(k)
			switch v := vals[i].(type) {
			case *redis.MapStringStringCmd:
				for f, x := range v.Val() {
					data = append(append(append(data, 0), f...), x...)
				}
			case *redis.StringSliceCmd:
				data = append(append(data, 0), strings.Join(v.Val(), "\x00")...)
			case *redis.StringCmd:
				data = append(append(data, 0), v.Val()...)
			}
			scannedBytes.Add(int64(len(data)))
			found = append(found, leaks(data, ns)...)
		}
		if cursor = next; cursor == 0 {
			return found
		}
	}
}

// TestLeakScannerFindsTokens proves the scan can fail: a token written to
// Redis, raw or encoded, is found.
func TestLeakScannerFindsTokens(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	ctx := bg(t)
	st := wrap(t, c, redisstore.Options{KeyPrefix: redistest.NewPrefix()})
	g, err := st.Issue(ctx, "leak-probe", redisstore.Client{})
	if err != nil {
		t.Fatal(err)
	}
	// An access token as the service shapes them (RFC 9068: a JWS of
	// JSON header and claims), its ES256 signature 64 random bytes.
	sig := make([]byte, 64)
	rand.Read(sig)
	access := "eyJhbGciOiJFUzI1NiIsImtpZCI6IjEiLCJ0eXAiOiJhdCtqd3QifQ.eyJzdWIiOiJsZWFrLXByb2JlIn0." + base64.RawURLEncoding.EncodeToString(sig)
	remember(access)
	ns := needles()
	if found := scanKeyspace(ctx, t, c, ns); len(found) != 0 {
		t.Fatalf("clean keyspace reported: %v", found)
	}
	raw, _ := tokenlayout.Decode(g.Token, redisstore.DefaultTokenPrefix)
	for name, v := range map[string]string{
		"whole token":            g.Token,
		"body only":              strings.TrimPrefix(g.Token, redisstore.DefaultTokenPrefix),
		"raw payload":            string(raw),
		"raw secret":             string(raw[offSecret:offMAC]),
		"in a hash":              "x" + g.Token[10:],
		"raw mac only":           string(raw[offMAC:offCRC]),
		"access token":           access,
		"access token signature": access[strings.LastIndexByte(access, '.')+1:],
	} {
		c.Set(ctx, "probe", v, 0)
		if found := scanKeyspace(ctx, t, c, ns); len(found) == 0 {
			t.Errorf("%s in Redis not found by the scan", name)
		}
		c.Del(ctx, "probe")
	}
}
