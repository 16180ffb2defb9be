package redisstore

// Moving onto another Redis (Options.MoveFrom): a store on the new Redis
// moves a user's keys from the old one before it touches them, and MoveKey
// moves any key the store wrote there, for a program that walks the old
// keyspace. Each move takes the keys of one hash tag out of the old Redis
// into a move record, in one step (move_take.lua), restores them on the new
// Redis (move_put.lua) and deletes the record (move_done.lua). Whoever
// finds a record finishes its move first, so the keys are never out of
// both Redises at once, and a move that stopped half way is finished by the
// next caller.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/lua"
)

var (
	scriptMoveTake = redis.NewScript(lua.MoveTake)
	scriptMovePut  = redis.NewScript(lua.MovePut)
	scriptMoveDone = redis.NewScript(lua.MoveDone)
)

// Keys of the move, one of each per hash tag: prefix{T}:m is the move
// record on the old Redis and the mark of the last move restored on the new
// one; prefix{T}:t is a scratch key on the new one, where an index is
// restored before its members are merged into the index there; prefix{T}:g
// is the moved marker on the old Redis (schema.go).
const (
	moveRecord  = ":m"
	moveScratch = ":t"
	movedMarker = ":" + string(kindMoved)
)

// movedMarkerTTL is how long the old Redis keeps a tag's moved marker after
// the tag's keys were last taken: long enough to cover a rolling update of
// the service's configuration, during which an instance still configured
// for the old Redis answers ErrMoved (retry) for them rather than
// ErrUnknown. Once it expires such an instance answers ErrUnknown again.
const movedMarkerTTL = 24 * time.Hour

// movedAway decides the outcome for a token whose session a store without
// Options.MoveFrom does not find (err is what it would answer otherwise):
// ErrMoved if a store with MoveFrom moved the keys of the session's hash
// tag away from this Redis lately (the tag's moved marker exists), else
// err. It costs one read, on this miss path only. A Redis failure is an
// error.
func (s *Store) movedAway(ctx context.Context, index string, err error) error {
	if err != ErrUnknown || s.opt.MoveFrom != nil {
		return err
	}
	marker := index[:len(s.opt.KeyPrefix)+tagLen+2] + movedMarker
	cmd, _ := s.batch.run(ctx, &call{args: []any{"exists", marker}, route: marker})
	n, rerr := cmd.Int64()
	if rerr != nil {
		return fmt.Errorf("redisstore: %w", rerr)
	}
	if n > 0 {
		return ErrMoved
	}
	return err
}

// moveMarkTTL is how long the new Redis remembers a move it restored: far
// longer than a caller takes between reading a record and restoring it.
const moveMarkTTL = time.Minute

// maxMoveRounds bounds the rounds of one move: a record left by an earlier
// move, and sessions added to the index since it was read, each cost one.
const maxMoveRounds = 8

// moveIn moves the keys of the user whose index is given, and the session
// key if not "", from Options.MoveFrom, if it is set.
func (s *Store) moveIn(ctx context.Context, index, session string) error {
	if s.opt.MoveFrom == nil {
		return nil
	}
	var sessions []string
	if session != "" {
		sessions = []string{session}
	}
	_, err := s.moveTag(ctx, index[:len(s.opt.KeyPrefix)+tagLen+2], index, sessions)
	return err
}

// MoveKey moves one key that a store with the same KeyPrefix wrote on
// Options.MoveFrom, with the keys that belong with it, onto the store's
// Redis, as every call of the store does for the user it touches: for a
// user's session index, the user's sessions; for a move record left by a
// move that stopped half way, its keys. A key the new Redis holds already
// is kept (it is newer); an index is merged. It returns how many keys it
// wrote on the new Redis (0 if the key is gone from the old one: moved
// already). A key of another kind than the store's, and a moved marker
// (nothing to move), return ErrInvalidArgument; a Redis failure is an error, and the keys are then
// on one Redis or the other, never lost: the next call finishes the move.
// Moving a bucket of legacy lookup entries copies the entries the new Redis
// lacks, then deletes them from the old; run no ImportLegacy against the
// old Redis meanwhile.
func (s *Store) MoveKey(ctx context.Context, key string) (int, error) {
	if s.opt.MoveFrom == nil {
		return 0, argError("key", "cannot be moved: Options.MoveFrom is not set")
	}
	p := s.opt.KeyPrefix
	end := strings.IndexByte(key, '}')
	if !strings.HasPrefix(key, p+"{") || end < 0 || len(key) < end+3 || key[end+1] != ':' {
		return 0, argError("key", "%q is not a key of the store", truncate(key))
	}
	tag := key[:end+1]
	switch kind, rest := key[end+2], key[end+3:]; {
	case kind == kindLookup && rest == "":
		return s.moveLookups(ctx, key)
	case len(tag) != len(p)+tagLen+2:
	case kind == kindIndex && len(rest) > 1:
		return s.moveTag(ctx, tag, key, nil)
	case kind == kindSession && len(rest) == 23:
		return s.moveTag(ctx, tag, "", []string{key})
	case kind == moveRecord[1] && rest == "":
		return s.moveTag(ctx, tag, "", nil)
	}
	return 0, argError("key", "%q is not a key of the store", truncate(key))
}

// moveTag moves keys of one hash tag: index (if not "") with all its
// sessions, and sessions. It returns how many keys it wrote.
func (s *Store) moveTag(ctx context.Context, tag, index string, sessions []string) (int, error) {
	var idb [16]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return 0, fmt.Errorf("redisstore: move id: %w", err)
	}
	id := hex.EncodeToString(idb[:])
	moved := 0
	for range maxMoveRounds {
		keys := append(make([]string, 0, 3+len(sessions)), tag+moveRecord, tag+movedMarker)
		args := []any{id, "0", movedMarkerTTL.Milliseconds()}
		if index != "" {
			keys = append(keys, index)
			args[1] = "1"
			for _, k := range sessions {
				args = append(args, memberOf(k))
			}
		}
		keys = append(keys, sessions...)
		r, err := parseReply(scriptMoveTake.Run(ctx, s.opt.MoveFrom, keys, args...).Result())
		if err != nil {
			return moved, err
		}
		switch r.code {
		case codeNone:
			return moved, nil
		case codeMembers:
			for _, m := range r.strings(0) {
				if len(m) != 22 {
					return moved, fmt.Errorf("redisstore: index %s holds a bad member", index)
				}
				sessions = append(sessions, sessionKey(index, s.opt.KeyPrefix, m))
			}
		case codeOK:
			n, recID, err := s.putRecord(ctx, tag, r)
			moved += n
			if err != nil {
				return moved, err
			}
			if err := scriptMoveDone.Run(ctx, s.opt.MoveFrom, []string{tag + moveRecord}, recID).Err(); err != nil {
				return moved, fmt.Errorf("redisstore: %w", err)
			}
			if recID == id {
				return moved, nil
			}
		default:
			return moved, r.unexpected("move_take")
		}
	}
	return moved, fmt.Errorf("redisstore: the move of %s did not settle in %d rounds", tag, maxMoveRounds)
}

// putRecord restores the keys of a move record (move_take.lua's reply) on
// the store's Redis. It returns how many keys it wrote and the move's id.
func (s *Store) putRecord(ctx context.Context, tag string, r reply) (int, string, error) {
	f := r.strings(0)
	if len(f)%2 != 0 {
		return 0, "", fmt.Errorf("redisstore: move record of %s has %d fields", tag, len(f))
	}
	keys := []string{tag + moveRecord, tag + moveScratch}
	args := []any{"", moveMarkTTL.Milliseconds()}
	for i := 0; i < len(f); i += 2 {
		k, v := f[i], f[i+1]
		if k == "#" {
			args[0] = v
			continue
		}
		if len(v) < 13 || !strings.HasPrefix(k, tag+":") || len(k) < len(tag)+3 {
			return 0, "", fmt.Errorf("redisstore: move record of %s holds a bad entry", tag)
		}
		deadline, err := strconv.ParseInt(v[:13], 10, 64)
		if err != nil {
			return 0, "", fmt.Errorf("redisstore: move record of %s holds a bad deadline", tag)
		}
		if deadline > 0 && deadline <= r.now {
			continue // expired: it would be gone from the old Redis too
		}
		kind := "s"
		if k[len(tag)+1] == kindIndex {
			kind = "u"
		}
		keys = append(keys, k)
		args = append(args, deadline, kind, v[13:])
	}
	id, _ := args[0].(string)
	if id == "" {
		return 0, "", fmt.Errorf("redisstore: move record of %s has no id", tag)
	}
	pr, err := parseReply(scriptMovePut.Run(ctx, s.rdb, keys, args...).Result())
	if err != nil {
		return 0, "", err
	}
	n, err := pr.int(0)
	return int(n), id, err
}

// moveLookups copies the entries of a bucket of legacy lookup entries onto
// the store's Redis with lookup.lua (as the import writes them: the bucket
// never exists there without a TTL, kept at the latest deadline it has on
// either Redis), then deletes the copied entries from Options.MoveFrom. An
// entry never changes once written, so writing one the new Redis holds
// already changes nothing. It returns 1 if it wrote anything.
func (s *Store) moveLookups(ctx context.Context, bucket string) (int, error) {
	old := s.opt.MoveFrom
	entries, err := old.HGetAll(ctx, bucket).Result()
	if err != nil {
		return 0, fmt.Errorf("redisstore: %w", err)
	}
	if len(entries) == 0 {
		return 0, nil
	}
	deadline, err := old.Do(ctx, "pexpiretime", bucket).Int64()
	if err != nil {
		return 0, fmt.Errorf("redisstore: %w", err)
	}
	switch {
	case deadline == -2:
		return 0, nil // expired since it was read
	case deadline < 0:
		return 0, fmt.Errorf("%w: lookup bucket %s has no TTL on the old Redis", ErrCorrupt, bucket)
	}
	fields := make([]string, 0, len(entries))
	cmds := make([]*redis.Cmd, 0, len(entries))
	// Errors are the commands': read below.
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for f, v := range entries {
			cmds = append(cmds, scriptLookup.EvalSha(ctx, p, []string{bucket}, f, v, deadline))
			fields = append(fields, f)
		}
		return nil
	})
	for i, c := range cmds {
		err := c.Err()
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			// The script cache lost it (a restart, a failover): EVAL.
			err = scriptLookup.Run(ctx, s.rdb, []string{bucket}, fields[i], entries[fields[i]], deadline).Err()
		}
		if err != nil {
			return 0, fmt.Errorf("redisstore: %w", err)
		}
	}
	if err := old.HDel(ctx, bucket, fields...).Err(); err != nil {
		return 0, fmt.Errorf("redisstore: %w", err)
	}
	return 1, nil
}
