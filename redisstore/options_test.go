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
	for name, tc := range map[string]struct {
		opt    Options
		option string // the one the error names
	}{
		"no secret":        {Options{}, "Secret"},
		"short secret":     {Options{Secret: []byte("short")}, "Secret"},
		"short key":        {Options{Secret: secret, Keys: []Key{{ID: 1, Secret: []byte("short")}}}, "Keys[0].Secret"},
		"duplicate key id": {Options{Secret: secret, Keys: []Key{{ID: 1, Secret: secret}, {ID: 1, Secret: secret}}}, "Keys[1].ID"},
		"brace in prefix":  {Options{Secret: secret, KeyPrefix: "app{1}:"}, "KeyPrefix"},
		"bad token prefix": {Options{Secret: secret, TokenPrefix: "bad-prefix"}, "TokenPrefix"},
		"long prefix":      {Options{Secret: secret, TokenPrefix: "abcdefghijklmnopq"}, "TokenPrefix"},
		"idle under 1ms":   {Options{Secret: secret, IdleTTL: time.Microsecond}, "IdleTTL"},
		"absolute < idle":  {Options{Secret: secret, IdleTTL: time.Hour, AbsoluteTTL: time.Minute}, "AbsoluteTTL"},
		"grace >= idle":    {Options{Secret: secret, IdleTTL: time.Minute, Grace: time.Minute}, "Grace"},
		"grace > max":      {Options{Secret: secret, Grace: MaxGrace + time.Millisecond}, "Grace"},
		"lifetime > 100y":  {Options{Secret: secret, AbsoluteTTL: 101 * 365 * 24 * time.Hour}, "AbsoluteTTL"},
		"replicas < 0":     {Options{Secret: secret, RevocationReplicas: -1}, "RevocationReplicas"},
		"wait under 1ms":   {Options{Secret: secret, ReplicationTimeout: time.Microsecond}, "ReplicationTimeout"},
	} {
		_, err := New(rdb, tc.opt)
		var oe *OptionError
		if !errors.Is(err, ErrInvalidOptions) || !errors.As(err, &oe) || oe.Option != tc.option {
			t.Errorf("%s: New err = %v, want an *OptionError naming %s", name, err, tc.option)
		}
		if verr := tc.opt.Validate(); verr == nil || err == nil || verr.Error() != err.Error() {
			t.Errorf("%s: Validate = %v, New = %v: want the same error", name, verr, err)
		}
	}
	if err := (Options{Secret: secret}).Validate(); err != nil {
		t.Errorf("Validate of the defaults: %v", err)
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
		if s.opt.Grace != 0 {
			t.Errorf("Grace %v gives %v, want 0 (off)", g, s.opt.Grace)
		}
	}
	s, _ = New(rdb, Options{Secret: secret, Grace: MaxGrace})
	if s.opt.Grace != MaxGrace {
		t.Errorf("Grace MaxGrace gives %v", s.opt.Grace)
	}
	for _, c := range []int{NoSessionCap, -5} {
		s, _ = New(rdb, Options{Secret: secret, MaxSessions: c})
		if s.opt.MaxSessions != 0 {
			t.Errorf("MaxSessions %d gives %d, want 0 (no cap)", c, s.opt.MaxSessions)
		}
	}
	for _, n := range []int{NoBatching, -5} {
		s, _ = New(rdb, Options{Secret: secret, MaxInFlight: n})
		if s.opt.MaxInFlight != 0 || s.batch.limit != 0 {
			t.Errorf("MaxInFlight %d gives %d (batcher %d), want 0 (no batching)", n, s.opt.MaxInFlight, s.batch.limit)
		}
	}
	s, _ = New(rdb, Options{Secret: secret})
	if s.opt.MaxInFlight != DefaultMaxInFlight || s.batch.limit != DefaultMaxInFlight {
		t.Errorf("MaxInFlight 0 gives %d (batcher %d), want DefaultMaxInFlight", s.opt.MaxInFlight, s.batch.limit)
	}
}
