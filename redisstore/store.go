package redisstore

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// Store keeps refresh tokens and login sessions in Redis. It is safe for
// concurrent use. It works unchanged on a single Redis, behind Sentinel
// (redis.NewFailoverClient) and on Redis Cluster (redis.NewClusterClient):
// every operation touches the keys of one user, which share a cluster slot.
type Store struct {
	rdb     redis.UniversalClient
	opt     Options
	kr      *keyring
	batch   *batcher
	channel string  // the revocation channel (schema.go)
	legacy  *legacy // nil: legacy tokens are not accepted (legacy.go)
}

// New returns a Store on rdb. The caller owns rdb: the Store never closes
// it. New checks the options but does not contact Redis; call Ping for that.
func New(rdb redis.UniversalClient, opt Options) (*Store, error) {
	if rdb == nil {
		return nil, optionError("client", "nil", "New needs a Redis client")
	}
	opt, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	kr, err := newKeyring(opt.Secret, opt.Keys)
	if err != nil {
		return nil, err
	}
	return &Store{rdb: rdb, opt: opt, kr: kr, batch: newBatcher(rdb, opt.MaxInFlight), channel: opt.KeyPrefix + revocationChannel,
		legacy: newLegacy(opt.Secret, opt.LegacyHash)}, nil
}

// BatchStats returns the counts since New. With batching off
// (Options.MaxInFlight NoBatching) Requests equals Calls.
func (s *Store) BatchStats() BatchStats { return s.batch.stats() }

// script runs sc through the batcher, on a call of its own (Rotate and
// Validate use pooled ones).
func (s *Store) script(ctx context.Context, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	cmd, _ := s.batch.run(ctx, &call{script: sc, keys: keys, args: args, route: keys[0]})
	return cmd
}

// Ping checks that Redis answers and loads the scripts into its script
// cache (on every master of a cluster).
func (s *Store) Ping(ctx context.Context) error {
	load := func(ctx context.Context, c redis.Scripter) error {
		for _, sc := range allScripts {
			if err := sc.Load(ctx, c).Err(); err != nil {
				return fmt.Errorf("redisstore: load script: %w", err)
			}
		}
		return nil
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return load(ctx, c) })
	}
	return load(ctx, s.rdb)
}

// CheckEvictionPolicy reads maxmemory-policy with INFO (managed Redis often
// blocks CONFIG), on every master of a cluster. Any policy but noeviction
// can silently delete live sessions and revocations: every key the store
// writes has a TTL, so even the volatile-* policies apply to them. It
// returns an error matching ErrEvictionPolicy for such a policy.
func (s *Store) CheckEvictionPolicy(ctx context.Context) error {
	check := func(ctx context.Context, c redis.Cmdable) error {
		info, err := c.Info(ctx, "memory").Result()
		if err != nil {
			return fmt.Errorf("redisstore: INFO memory: %w", err)
		}
		policy := infoField(info, "maxmemory_policy")
		if policy == "" {
			return fmt.Errorf("redisstore: INFO memory reports no maxmemory_policy")
		}
		if policy != "noeviction" {
			return fmt.Errorf("%w: %s (want noeviction)", ErrEvictionPolicy, policy)
		}
		return nil
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return check(ctx, c) })
	}
	return check(ctx, s.rdb)
}

func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// open parses raw and checks its MAC. It returns the key that signed it.
func (s *Store) open(raw string, t *token) (*key, error) {
	if !parseToken(raw, s.opt.TokenPrefix, t) {
		return nil, ErrMalformed
	}
	k := s.kr.byID[t.keyID()]
	if k == nil || !t.verify(k) {
		return nil, ErrUnknown
	}
	return k, nil
}

// boundRest splits what follows the hash in t's session's h field into the
// bindings and the user id, checking the user id as boundUser does.
func (s *Store) boundRest(rest string, t *token) (b binding, userID string, err error) {
	b, stored, err := splitRest(rest)
	if err != nil {
		return binding{}, "", err
	}
	userID, err = s.boundUser(stored, t)
	return b, userID, err
}

// boundUser returns the user id that Redis holds for t's session, after
// checking that it is the one t was issued for: the token carries a MACed
// keyed hash of it. Anyone who can write to Redis could otherwise make
// their own token report another user's id.
func (s *Store) boundUser(stored string, t *token) (string, error) {
	id := loadedID(stored)
	var uh [userHashLen]byte
	s.kr.userHash(uh[:], id)
	if subtle.ConstantTimeCompare(uh[:], t.userHash()) != 1 {
		return "", ErrCorrupt
	}
	return id, nil
}

// missing decides the outcome for a genuine token whose session Redis does
// not hold, by Redis's clock: it expired, or Redis lost it (a failover that
// dropped the last writes).
func missing(t *token, nowMS int64) error {
	if nowMS >= t.expiresMS() || nowMS >= t.absoluteMS() {
		return ErrExpired
	}
	return ErrUnknown
}

// margin is how long past its idle deadline a session stays in its user's
// index: a rotation updates the index only when the new idle deadline
// passes the session's keep-until, so most rotations leave it alone.
func (s *Store) margin() int64 {
	return s.opt.IdleTTL.Milliseconds() / marginDiv
}

// marginDiv sets the margin: IdleTTL/marginDiv.

const marginDiv = 16

func (s *Store) emit(ctx context.Context, e Event) {
	if s.opt.OnEvent != nil {
		s.opt.OnEvent(ctx, e)
	}
}

// corrupt reports a damaged session (EventCorrupt) if err is ErrCorrupt,
// and returns err. userID is "" when only a token names the session; nowMS
// is Redis's time, 0 if no script answered (the event's Time is then zero).
func (s *Store) corrupt(ctx context.Context, err error, userID, sessionID string, nowMS int64) error {
	if errors.Is(err, ErrCorrupt) {
		e := Event{Kind: EventCorrupt, UserID: userID, SessionID: sessionID}
		if nowMS != 0 {
			e.Time = time.UnixMilli(nowMS)
		}
		s.emit(ctx, e)
	}
	return err
}

// errDamaged is the error for a script's codeCorrupt answer.
func errDamaged(script string) error {
	return fmt.Errorf("%w: %s found the session hash damaged", ErrCorrupt, script)
}

// memberOf returns the session id part of a session key: its member in the
// user's index.
func memberOf(sessionKey string) string { return sessionKey[len(sessionKey)-22:] }

func sessionIDString(member string) string {
	var id uuid.UUID
	if n, err := b64.Decode(id[:], []byte(member)); err != nil || n != len(id) {
		return member
	}
	return id.String()
}

func parseSessionID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return uuid.UUID{}, argError("session id", "%q is not a UUID", truncate(s))
	}
	return id, nil
}

// newCallID writes a new call id (schema.go) to dst.
func newCallID(dst []byte) error {
	_, err := rand.Read(dst[:callIDLen])
	return err
}
