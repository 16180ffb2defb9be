package redisstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Legacy tokens: the refresh tokens of the system the store replaces (a SQL
// table of token hashes), imported by ImportLegacy (import.go) and accepted
// by Rotate and RevokeToken when Options.LegacyHash is set.
//
// Such a token carries nothing of ours: not the user's hash tag, not the
// session id. What finds its session is a lookup entry (schema.go): a field,
// named by a keyed hash of the digest the old system stored for the token,
// of one of 65,536 lookup hashes (buckets, each on a slot of its own: one
// key per token would cost more than twice the memory). Presenting a legacy
// token reads its entry, then runs the atomic script on the session's slot
// (legacy.lua). The import writes an entry once per row and never changes
// it, so the read and the script need no atomicity between them;
// everything that decides is in the script.
//
// While its legacy token is current, an imported session keeps, as any
// session does, the keyed hash of a secret in h: the secret of a virtual
// token derived from the digest (legacySecret), which is never handed out.
// Its first rotation (the conversion) hands out a token of this store whose
// secret derives from the digest too (legacyNext): two tabs, or a retry,
// presenting the legacy token get the same successor, and a later
// presentation is recognised as a replay, as for any token. Tokens of this
// store never take this path: the common path (Rotate of one of them) is
// unchanged.

// Purposes of the legacy key (derived from Options.Secret, like the hash
// Redis keeps, so that it survives signing-key rotation), each a byte
// before the digest.
const (
	legacyLookup = 'l' // the lookup key's name
	legacySecret = 's' // the secret whose hash h holds while the legacy token is current
	legacyNext   = 'n' // the secret of its successor, the session's first token of this store

	labelLegacy = "sessioncache v1 legacy"
)

// Limits of the legacy path.
const (
	// MaxLegacyDigestLen is the longest digest Options.LegacyHash may return
	// and LegacyRow.Digest may hold (SHA-512 is 64 bytes).
	MaxLegacyDigestLen = 64
	// maxLegacyTokenLen bounds a legacy token, so that a long string is
	// refused before it is hashed.
	maxLegacyTokenLen = 2048
	// lookupBucketLen and lookupFieldLen: how much of the keyed hash names
	// the lookup hash (the bucket, its hash tag) and the field in it.
	lookupBucketLen = 2
	lookupFieldLen  = 12
	// lookupVersion opens every lookup value.
	lookupVersion = 1
	// lookupLen is a lookup value: version, user hash, session id, order.
	lookupLen = 1 + userHashLen + 16 + 8
	// legacyGen is the generation of a session's first token of this store;
	// the legacy token it replaces is generation 0.
	legacyGen = 1
)

// legacy is the store's legacy path; nil when Options.LegacyHash is not set.
type legacy struct {
	hash func(string) []byte
	key  hmacPool
}

func newLegacy(secret []byte, hash func(string) []byte) *legacy {
	if hash == nil {
		return nil
	}
	return &legacy{hash: hash, key: newHMACPool(deriveKey(secret, labelLegacy))}
}

// derive writes the legacy key's HMAC of purpose and digest to dst.
func (l *legacy) derive(dst []byte, purpose byte, digest []byte) {
	var msg [1 + MaxLegacyDigestLen]byte
	msg[0] = purpose
	n := copy(msg[1:], digest)
	l.key.sum(dst, msg[:1+n])
}

// lookupAt names the lookup entry of a row whose digest is digest: the
// bucket prefix + "{B}:l", B base64url of the keyed hash's first 2 bytes,
// and the field, its next 12 bytes.
func (l *legacy) lookupAt(prefix string, digest []byte) (bucket, field string) {
	var id [lookupBucketLen + lookupFieldLen]byte
	l.derive(id[:], legacyLookup, digest)
	var buf [maxKeyPrefixLen + 16]byte
	b := append(append(buf[:0], prefix...), '{')
	b = b64.AppendEncode(b, id[:lookupBucketLen])
	b = append(b, '}', ':', kindLookup)
	return string(b), string(id[lookupBucketLen:])
}

// virtual returns the keyed hashes of the virtual secret of the legacy
// token with this digest (what h holds while it is current) and of its
// successor's secret, and fills next's secret.
func (s *Store) virtual(digest []byte, next *token) (cur, succ [hashLen]byte) {
	var sec [secretLen]byte
	s.legacy.derive(sec[:], legacySecret, digest)
	s.kr.hash.sum(cur[:], sec[:])
	s.legacy.derive(next.b[offSecret:offMAC], legacyNext, digest)
	s.kr.secretHash(&succ, next)
	return cur, succ
}

// lookup is a decoded lookup value.
type lookup struct {
	userHash  [userHashLen]byte
	sessionID [16]byte
	order     int64 // the row's creation, unix µs: orders a family's rows
}

func (lk *lookup) encode() string {
	var b [lookupLen]byte
	b[0] = lookupVersion
	copy(b[1:], lk.userHash[:])
	copy(b[1+userHashLen:], lk.sessionID[:])
	binary.BigEndian.PutUint64(b[1+userHashLen+16:], uint64(lk.order))
	return string(b[:])
}

func decodeLookup(v string) (lookup, error) {
	var lk lookup
	if len(v) != lookupLen || v[0] != lookupVersion {
		return lk, fmt.Errorf("%w: a legacy lookup entry holds %d bytes, not a lookup of version %d", ErrCorrupt, len(v), lookupVersion)
	}
	copy(lk.userHash[:], v[1:])
	copy(lk.sessionID[:], v[1+userHashLen:])
	lk.order = int64(binary.BigEndian.Uint64([]byte(v[1+userHashLen+16:])))
	return lk, nil
}

// orderText writes an order as the scripts compare it: 16 digits (unix µs
// until the year 2286).
func orderText(order int64) string {
	return string(appendPadded(nil, max(order, 0), 16))
}

// isLegacy reports whether raw, refused by open with err, takes the legacy
// path: the path is on, and raw is no malformed token of this store (it
// does not start with TokenPrefix).
func (s *Store) isLegacy(raw string, err error) bool {
	return s.legacy != nil && err == ErrMalformed && len(raw) > 0 && len(raw) <= maxLegacyTokenLen &&
		!strings.HasPrefix(raw, s.opt.TokenPrefix)
}

// findLegacy hashes a legacy token and reads its lookup entry: ErrUnknown
// if there is none (never imported, or every session of its bucket ended
// long ago).
func (s *Store) findLegacy(ctx context.Context, raw string) (lookup, []byte, error) {
	digest := s.legacy.hash(raw)
	if len(digest) == 0 || len(digest) > MaxLegacyDigestLen {
		return lookup{}, nil, ErrMalformed
	}
	bucket, field := s.legacy.lookupAt(s.opt.KeyPrefix, digest)
	cmd, _ := s.batch.run(ctx, &call{args: []any{"hget", bucket, field}, route: bucket})
	v, err := cmd.Text()
	if err == redis.Nil && s.opt.MoveFrom != nil {
		// Not moved yet: MoveKey moves lookup buckets.
		v, err = s.opt.MoveFrom.HGet(ctx, bucket, field).Result()
	}
	if err == redis.Nil {
		return lookup{}, nil, ErrUnknown
	}
	if err != nil {
		return lookup{}, nil, fmt.Errorf("redisstore: %w", err)
	}
	lk, err := decodeLookup(v)
	return lk, digest, err
}

// rotateLegacy is Rotate for a legacy token: it converts the token into
// the session's first token of this store, or answers its replay.
func (s *Store) rotateLegacy(ctx context.Context, raw string, c Client, ip string) (Grant, error) {
	lk, digest, err := s.findLegacy(ctx, raw)
	if err != nil {
		return Grant{}, err
	}
	var old, next token
	defer func() { old, next = token{}, token{} }()
	old.setHeader(0, lk.userHash[:], lk.sessionID[:], 0, 0, 0)
	cur, succ := s.virtual(digest, &next)
	var callID [callIDLen]byte
	if err := newCallID(callID[:]); err != nil {
		return Grant{}, fmt.Errorf("redisstore: call id: %w", err)
	}
	signer := s.kr.signer
	tail := binary.BigEndian.AppendUint32(nil, clientSum(ip, c.UserAgent))
	tail = strconv.AppendInt(appendStatePrefix(tail, legacyGen, signer.id), s.opt.IdleTTL.Milliseconds(), 10)
	device := ""
	if s.opt.GraceSameDevice {
		device = "=" + storedID(c.DeviceID)
	}
	ks := keysFor(s.opt.KeyPrefix, lk.userHash[:], lk.sessionID[:])
	if err := s.moveIn(ctx, ks.index, ks.session); err != nil {
		return Grant{}, err
	}
	bind := "0"
	if c.BindJKT {
		bind = "1"
	}
	r, err := parseReply(s.script(ctx, scriptLegacy, []string{ks.session, ks.index},
		cur[:], succ[:], orderText(lk.order), callID[:], tail, s.opt.IdleTTL.Milliseconds(), s.opt.Grace.Milliseconds(), s.margin(),
		appendClientBinding(nil, c.ClientID), appendKeyBinding(nil, c.JKT), bind, device, s.channel, ip, packUserAgent(c.UserAgent)).Result())
	if err != nil {
		return Grant{}, err
	}
	g := Grant{SessionID: sessionIDString(memberOf(ks.session))}
	switch r.code {
	case codeOK, codeHandOut:
		if err := s.grantBound(&g, r.field(0), &old, &c); err != nil {
			return Grant{}, s.corrupt(ctx, err, "", g.SessionID, r.now)
		}
		xf := 1 // {1, now, rest, x}; {2, now, rest, s, kind, last, x}
		if r.code == codeHandOut {
			xf = 4
		}
		absMS, err := strconv.ParseInt(r.field(xf), 10, 64)
		if err != nil {
			return Grant{}, s.corrupt(ctx, fmt.Errorf("%w: session field x %q", ErrCorrupt, r.field(xf)), "", g.SessionID, r.now)
		}
		g.SessionExpiresAt = time.UnixMilli(absMS)
		k, expMS := signer, min(r.now+s.opt.IdleTTL.Milliseconds(), absMS)
		if r.code == codeHandOut {
			var kind int64
			if k, expMS, kind, err = s.handOut(r, legacyGen, absMS); err != nil {
				return Grant{}, s.corrupt(ctx, err, "", g.SessionID, r.now)
			}
			if kind == handOutGrace {
				g.Replayed = true
				s.emit(ctx, Event{Kind: EventGraceReplay, UserID: g.UserID, SessionID: g.SessionID, Time: time.UnixMilli(r.now)})
			}
		}
		next.setHeader(k.id, lk.userHash[:], lk.sessionID[:], legacyGen, expMS, absMS)
		next.seal(k)
		g.Token, g.ExpiresAt = next.encode(s.opt.TokenPrefix), time.UnixMilli(expMS)
		return g, nil
	case codeReused, codeRevoked, codeExpired, codeClient, codeWrongKey, codeNoKey, codeCorrupt:
		return s.refusal(ctx, r, &old, ks.session, "legacy.lua")
	case codeNone:
		// The lookup key proves the family was imported: its session has
		// ended (or Redis lost it), unless a move took it.
		if err := s.movedAway(ctx, ks.index, ErrUnknown); err != ErrUnknown {
			return Grant{}, err
		}
		return Grant{}, ErrExpired
	default:
		return Grant{}, r.unexpected("legacy.lua")
	}
}
