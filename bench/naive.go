package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/redisstore"
)

// Naive is the Redis store a user writes without Lua: the same layout as the
// library (a hash per session, a zset per user), made atomic with go-redis's
// optimistic transactions (WATCH, read, MULTI ... EXEC, retry when a watched
// key changed). A rotation costs WATCH, HMGET and MULTI/EXEC: three round
// trips where the library needs one, and a retry whenever another session of
// the same user rotated in between, since each rotation slides the user's
// index. It keeps the current and the previous token's hash, so it detects
// the replay of the immediate predecessor only, and has no grace window.
type Naive struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
	// retries counts transactions that a concurrent write aborted.
	retries atomic.Int64
}

// Retries returns how many transactions a concurrent write aborted so far.
func (n *Naive) Retries() int64 { return n.retries.Load() }

// NewNaive returns a naive store whose keys start with prefix and whose
// sessions live ttl after their last rotation.
func NewNaive(rdb redis.UniversalClient, prefix string, ttl time.Duration) *Naive {
	return &Naive{rdb: rdb, prefix: prefix, ttl: ttl}
}

// naiveMaxTries bounds the retries of one optimistic transaction.
const naiveMaxTries = 1000

// naiveSplit parses "<user id, base64url>.<session id>.<secret, base64url>"
// and hashes the secret.
func naiveSplit(tok string) (user, sid string, h [32]byte, err error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", "", h, redisstore.ErrMalformed
	}
	u, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return "", "", h, redisstore.ErrMalformed
	}
	return string(u), parts[1], sha256.Sum256([]byte(parts[2])), nil
}

func (n *Naive) keys(user, sid string) (session, index string) {
	tag := n.prefix + "{" + user + "}:"
	return tag + "s:" + sid, tag + "u"
}

func naiveSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// Issue implements Store: one MULTI/EXEC, no WATCH (the session is new).
func (n *Naive) Issue(ctx context.Context, userID string, c redisstore.Client) (string, error) {
	var sid [12]byte
	if _, err := rand.Read(sid[:]); err != nil {
		return "", err
	}
	secret, err := naiveSecret()
	if err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString([]byte(userID)) + "." + base64.RawURLEncoding.EncodeToString(sid[:]) + "." + secret
	_, s, h, _ := naiveSplit(tok)
	sk, ik := n.keys(userID, s)
	now := time.Now()
	exp := now.Add(n.ttl).UnixMilli()
	_, err = n.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, sk, "u", userID, "h", h[:], "g", 0, "e", exp, "c", now.UnixMilli(),
			"d", c.DeviceID, "n", c.DeviceName, "i", c.IPAddress, "a", c.UserAgent)
		p.PExpire(ctx, sk, n.ttl)
		p.ZRemRangeByScore(ctx, ik, "-inf", strconv.FormatInt(now.UnixMilli(), 10))
		p.ZAdd(ctx, ik, redis.Z{Score: float64(exp), Member: s})
		p.PExpire(ctx, ik, n.ttl)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("bench: naive issue: %w", err)
	}
	return tok, nil
}

// watch runs fn in an optimistic transaction on keys, again while a
// concurrent write aborts it.
func (n *Naive) watch(ctx context.Context, fn func(*redis.Tx) error, keys ...string) error {
	for try := 0; try < naiveMaxTries; try++ {
		err := n.rdb.Watch(ctx, fn, keys...)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
		n.retries.Add(1)
	}
	return errNaiveContention
}

// errNaiveContention: a naive transaction kept being aborted by concurrent
// writes.
var errNaiveContention = errors.New("bench: naive store: too much contention")

// Rotate implements Store.
func (n *Naive) Rotate(ctx context.Context, tok string, c redisstore.Client) (string, bool, error) {
	user, sid, h, err := naiveSplit(tok)
	if err != nil {
		return "", false, err
	}
	secret, err := naiveSecret()
	if err != nil {
		return "", false, err
	}
	next := tok[:strings.LastIndexByte(tok, '.')+1] + secret
	nh := sha256.Sum256([]byte(secret))
	sk, ik := n.keys(user, sid)
	var outcome error
	err = n.watch(ctx, func(tx *redis.Tx) error {
		v, err := tx.HMGet(ctx, sk, "h", "p", "e", "g", "r").Result()
		if err != nil {
			return err
		}
		cur, _ := v[0].(string)
		prev, _ := v[1].(string)
		exp, _ := v[2].(string)
		gen, _ := v[3].(string)
		if r, _ := v[4].(string); r != "" {
			outcome = &redisstore.RevokedError{Reason: redisstore.Reason(r)}
			return nil
		}
		now := time.Now()
		switch {
		case cur != "" && subtle.ConstantTimeCompare([]byte(cur), h[:]) == 1:
			if e, _ := strconv.ParseInt(exp, 10, 64); now.UnixMilli() >= e {
				outcome = redisstore.ErrExpired
				return nil
			}
			g, _ := strconv.Atoi(gen)
			newExp := now.Add(n.ttl).UnixMilli()
			_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, sk, "h", nh[:], "p", h[:], "g", g+1, "e", newExp, "i", c.IPAddress, "a", c.UserAgent)
				p.PExpire(ctx, sk, n.ttl)
				p.ZAdd(ctx, ik, redis.Z{Score: float64(newExp), Member: sid})
				p.PExpire(ctx, ik, n.ttl)
				return nil
			})
			outcome = nil
			return err
		case prev != "" && subtle.ConstantTimeCompare([]byte(prev), h[:]) == 1:
			_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, sk, "r", string(redisstore.ReasonReuse))
				p.ZRem(ctx, ik, sid)
				return nil
			})
			outcome = redisstore.ErrReused
			return err
		}
		outcome = redisstore.ErrUnknown
		return nil
	}, sk, ik)
	if err != nil {
		return "", false, fmt.Errorf("bench: naive rotate: %w", err)
	}
	if outcome != nil {
		return "", false, outcome
	}
	return next, false, nil
}

// Validate implements Store: one HMGET.
func (n *Naive) Validate(ctx context.Context, tok string) error {
	user, sid, h, err := naiveSplit(tok)
	if err != nil {
		return err
	}
	sk, _ := n.keys(user, sid)
	v, err := n.rdb.HMGet(ctx, sk, "h", "e", "r").Result()
	if err != nil {
		return fmt.Errorf("bench: naive validate: %w", err)
	}
	cur, _ := v[0].(string)
	exp, _ := v[1].(string)
	if r, _ := v[2].(string); r != "" {
		return &redisstore.RevokedError{Reason: redisstore.Reason(r)}
	}
	if cur == "" || subtle.ConstantTimeCompare([]byte(cur), h[:]) != 1 {
		return redisstore.ErrUnknown
	}
	if e, _ := strconv.ParseInt(exp, 10, 64); time.Now().UnixMilli() >= e {
		return redisstore.ErrExpired
	}
	return nil
}

// ListSessions implements Store: the index, then every session in one
// pipeline.
func (n *Naive) ListSessions(ctx context.Context, userID string) (int, error) {
	_, ik := n.keys(userID, "")
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	ids, err := n.rdb.ZRangeByScore(ctx, ik, &redis.ZRangeBy{Min: "(" + now, Max: "+inf"}).Result()
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	cmds, err := n.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			sk, _ := n.keys(userID, id)
			p.HMGet(ctx, sk, "u", "e", "r", "c", "d", "n", "i", "a")
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("bench: naive list: %w", err)
	}
	live := 0
	for _, c := range cmds {
		v := c.(*redis.SliceCmd).Val()
		if r, _ := v[2].(string); r == "" && v[0] != nil {
			live++
		}
	}
	return live, nil
}

// RevokeSession implements Store.
func (n *Naive) RevokeSession(ctx context.Context, tok string) error {
	user, sid, _, err := naiveSplit(tok)
	if err != nil {
		return err
	}
	sk, ik := n.keys(user, sid)
	return n.watch(ctx, func(tx *redis.Tx) error {
		v, err := tx.HMGet(ctx, sk, "u", "r").Result()
		if err != nil {
			return err
		}
		if r, _ := v[1].(string); r != "" || v[0] == nil {
			return nil
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, sk, "r", string(redisstore.ReasonLogout))
			p.ZRem(ctx, ik, sid)
			return nil
		})
		return err
	}, sk, ik)
}

// RevokeAll implements Store.
func (n *Naive) RevokeAll(ctx context.Context, userID string) (int, error) {
	_, ik := n.keys(userID, "")
	var revoked int
	err := n.watch(ctx, func(tx *redis.Tx) error {
		ids, err := tx.ZRange(ctx, ik, 0, -1).Result()
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, id := range ids {
				sk, _ := n.keys(userID, id)
				p.HSet(ctx, sk, "r", string(redisstore.ReasonLogoutAll))
			}
			p.Del(ctx, ik)
			return nil
		})
		revoked = len(ids)
		return err
	}, ik)
	return revoked, err
}
