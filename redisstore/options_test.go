package redisstore

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestNewValidatesOptions(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer rdb.Close()
	secret := []byte("options-test-secret-options-test-secret")
	for name, opt := range map[string]Options{
		"no secret":        {},
		"short secret":     {Secret: []byte("short")},
		"short key":        {Secret: secret, Keys: []Key{{ID: 1, Secret: []byte("short")}}},
		"duplicate key id": {Secret: secret, Keys: []Key{{ID: 1, Secret: secret}, {ID: 1, Secret: secret}}},
		"brace in prefix":  {Secret: secret, KeyPrefix: "app{1}:"},
		"bad token prefix": {Secret: secret, TokenPrefix: "bad-prefix"},
		"long prefix":      {Secret: secret, TokenPrefix: "abcdefghijklmnopq"},
		"absolute < idle":  {Secret: secret, IdleTTL: time.Hour, AbsoluteTTL: time.Minute},
		"grace >= idle":    {Secret: secret, IdleTTL: time.Minute, Grace: time.Minute},
		"grace > max":      {Secret: secret, Grace: MaxGrace + time.Millisecond},
		"lifetime > 100y":  {Secret: secret, AbsoluteTTL: 101 * 365 * 24 * time.Hour},
	} {
		if _, err := New(rdb, opt); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: New err = %v, want ErrInvalidOptions", name, err)
		}
	}
	if _, err := New(nil, Options{Secret: secret}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("nil client: err = %v", err)
	}
	s, err := New(rdb, Options{Secret: secret})
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	o := s.opt
	if o.KeyPrefix != DefaultKeyPrefix || o.TokenPrefix != DefaultTokenPrefix || o.IdleTTL != DefaultIdleTTL ||
		o.AbsoluteTTL != DefaultAbsoluteTTL || o.Grace != DefaultGrace || o.MaxSessions != DefaultMaxSessions {
		t.Errorf("defaults not applied: %+v", o)
	}
	for _, g := range []time.Duration{NoGrace, -time.Hour} {
		s, _ = New(rdb, Options{Secret: secret, Grace: g})
		if s.opt.Grace != NoGrace {
			t.Errorf("Grace %v gives %v, want NoGrace", g, s.opt.Grace)
		}
	}
	s, _ = New(rdb, Options{Secret: secret, Grace: MaxGrace})
	if s.opt.Grace != MaxGrace {
		t.Errorf("Grace MaxGrace gives %v", s.opt.Grace)
	}
	for _, c := range []int{NoSessionCap, -5} {
		s, _ = New(rdb, Options{Secret: secret, MaxSessions: c})
		if s.opt.MaxSessions != NoSessionCap {
			t.Errorf("MaxSessions %d gives %d, want NoSessionCap", c, s.opt.MaxSessions)
		}
	}
}
