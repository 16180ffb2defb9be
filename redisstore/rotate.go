package redisstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Rotate exchanges the current refresh token of a session for its successor,
// atomically: of any number of concurrent rotations of one token, exactly one
// creates the successor. The session's idle deadline starts again from
// Redis's clock (never past its absolute deadline), and c's IP address and
// user agent are recorded.
//
// Within Options.Grace of a rotation, presenting the token it replaced again
// (a second browser tab) returns the same successor with Grant.Replayed set,
// and revokes nothing. Any other token of the session presented after its
// rotation (an older one, or the predecessor after the grace window) is a
// replay: the whole session is revoked and Rotate returns ErrReused, with
// a Grant that names the revoked session and its user (and holds no token).
//
// A retry of the same call after a lost reply (go-redis retries by default)
// is recognised by the call's id, with or without grace, and returns what
// the first attempt returned, even if another tab got the same successor
// by a grace replay and rotated it once more meanwhile. The record is
// bounded: a retry that arrives after two more rotations, or a retry of a
// grace replay after one, is treated as what it then looks like, a replay.
//
// With Options.LegacyHash set, a legacy token (of the system the store
// replaces, imported with ImportLegacy) is accepted too, with the same
// guarantees: its first rotation converts it into a token of this store,
// atomically; within grace it gets the same successor again; any later
// presentation, or that of an older token of its family, is a replay.
//
// If c.ClientID is set and the session is bound to another client, Rotate
// returns ErrWrongClient and changes nothing (see Client). A session bound
// to a DPoP key is refused, before anything else is decided and with
// nothing written, without c.JKT (ErrKeyRequired) or with another one
// (ErrWrongKey): so a token presented without the key neither rotates nor
// revokes. With c.BindJKT, a rotation binds a session bound to no key to
// c.JKT in the same atomic step. A reuse
// revocation is published on the revocation channel in the same atomic
// step (see WatchRevocations).
//
// Other outcomes: ErrMalformed and ErrUnknown (decided without Redis for
// garbage and forgeries, which never revoke anything), ErrExpired, ErrRevoked
// (a *RevokedError with the reason) for a session revoked earlier, and
// ErrCorrupt (reported as an EventCorrupt) if the session hash is damaged,
// a field missing or malformed (nothing is written), or holds another user
// id than the token's. A Redis
// failure is returned as an error; the rotation then happened in full or not
// at all.
func (s *Store) Rotate(ctx context.Context, raw string, c Client) (Grant, error) {
	ip, err := c.check()
	if err != nil {
		return Grant{}, err
	}
	f := getRotateFrame()
	owned := true
	defer func() { putRotateFrame(f, owned) }()
	old, next := &f.old, &f.next
	k, err := s.open(raw, old)
	if err != nil {
		if s.isLegacy(raw, err) {
			return s.rotateLegacy(ctx, raw, c, ip)
		}
		return Grant{}, err
	}
	gen := old.generation() + 1
	if gen == 0 {
		return Grant{}, ErrExpired // 2^32 rotations
	}
	signer := s.kr.signer
	k.succ(next.b[offSecret:offMAC], old.authenticated())
	var oldHash, nextHash [hashLen]byte
	s.kr.secretHash(&oldHash, old)
	s.kr.secretHash(&nextHash, next)
	if err := f.pack(&rotateArgs{
		oldHash: &oldHash, nextHash: &nextHash, keyID: signer.id, gen: gen,
		absMS: old.absoluteMS(), idleMS: s.opt.IdleTTL.Milliseconds(),
		graceMS: s.opt.Grace.Milliseconds(), marginMS: s.margin(),
		checkDevice: s.opt.GraceSameDevice, device: storedID(c.DeviceID), ip: ip, ua: c.UserAgent,
		clientID: c.ClientID, jkt: c.JKT, bind: c.BindJKT, channel: s.channel,
	}); err != nil {
		return Grant{}, fmt.Errorf("redisstore: call id: %w", err)
	}
	ks := keysFor(s.opt.KeyPrefix, old.userHash(), old.sessionID())
	if err := s.moveIn(ctx, ks.index, ks.session); err != nil {
		return Grant{}, err
	}
	f.keys = [2]string{ks.session, ks.index}
	f.call.route = ks.session
	var cmd *redis.Cmd
	cmd, owned = s.batch.run(ctx, &f.call)
	r, err := parseRotateReply(cmd.Result())
	if err != nil {
		return Grant{}, err
	}
	g := Grant{
		SessionID:        sessionIDString(memberOf(ks.session)),
		SessionExpiresAt: time.UnixMilli(old.absoluteMS()),
	}
	switch r.code {
	case codeOK:
		if err := s.grantBound(&g, r.field(0), old, &c); err != nil {
			return Grant{}, s.corrupt(ctx, err, "", g.SessionID, r.now)
		}
		expMS := min(r.now+s.opt.IdleTTL.Milliseconds(), old.absoluteMS())
		next.setHeader(signer.id, old.userHash(), old.sessionID(), gen, expMS, old.absoluteMS())
		next.seal(signer)
		g.Token, g.ExpiresAt = next.encode(s.opt.TokenPrefix), time.UnixMilli(expMS)
		return g, nil
	case codeHandOut:
		if err := s.grantBound(&g, r.field(0), old, &c); err != nil {
			return Grant{}, s.corrupt(ctx, err, "", g.SessionID, r.now)
		}
		nk, expMS, kind, err := s.handOut(r, gen, old.absoluteMS())
		if err != nil {
			return Grant{}, s.corrupt(ctx, err, "", g.SessionID, r.now)
		}
		next.setHeader(nk.id, old.userHash(), old.sessionID(), gen, expMS, old.absoluteMS())
		next.seal(nk)
		g.Token, g.ExpiresAt = next.encode(s.opt.TokenPrefix), time.UnixMilli(expMS)
		switch kind {
		case handOutGrace:
			g.Replayed = true
			s.emit(ctx, Event{Kind: EventGraceReplay, UserID: g.UserID, SessionID: g.SessionID, Time: time.UnixMilli(r.now)})
		case handOutRetry, handOutPrevious:
			// The first attempt created this token: no event, as then.
		}
		return g, nil
	case codeReused, codeRevoked, codeExpired, codeClient, codeWrongKey, codeNoKey, codeCorrupt:
		return s.refusal(ctx, r, old, ks.session, "rotate.lua")
	case codeNone:
		return Grant{}, s.movedAway(ctx, ks.index, missing(old, r.now))
	default:
		return Grant{}, r.unexpected("rotate.lua")
	}
}

// handOut reads a hand-out reply {2, now, rest, s, kind[, last]} (rotate.lua,
// legacy.lua): the token to hand out is the successor of the presented one
// (the script matched the hash of its secret, or this call's id), of
// generation gen; it returns the key and the idle deadline it was minted
// with, to derive it again, and the kind of hand-out.
func (s *Store) handOut(r reply, gen uint32, absMS int64) (*key, int64, int64, error) {
	st, err := parseState(r.field(1))
	kind, kerr := r.int(2)
	if err == nil && kerr == nil && kind == handOutPrevious {
		// The previous token: its last used is in p; its key id and idle
		// lifetime are taken from the current one (they differ only if a
		// deploy changed them between two rotations).
		st.gen--
		st.lastUsed, err = strconv.ParseInt(r.field(3), 10, 64)
	}
	if err != nil || kerr != nil || st.gen != gen || s.kr.byID[st.keyID] == nil {
		return nil, 0, 0, fmt.Errorf("%w: cannot hand out generation %d from state %q", ErrCorrupt, gen, r.field(1))
	}
	return s.kr.byID[st.keyID], st.expires(absMS), kind, nil
}

// reused answers a reuse that a script detected ({3, now, user}): the
// script revoked t's session (whose key is sessionKey). It returns a Grant
// that names the session and its user, and ErrReused.
// refusal answers a refused rotation: rotate.lua and legacy.lua answer a
// reuse, a revoked or expired session, another client, a wrong or missing
// DPoP key and a damaged session with the same codes. Only a reuse returns
// a Grant: the session and user it revoked.
func (s *Store) refusal(ctx context.Context, r reply, old *token, sessionKey, script string) (Grant, error) {
	switch r.code {
	case codeReused:
		return s.reused(ctx, r, old, sessionKey)
	case codeRevoked:
		return Grant{}, &RevokedError{Reason: Reason(r.field(0))}
	case codeExpired:
		return Grant{}, ErrExpired
	case codeClient:
		return Grant{}, ErrWrongClient
	case codeWrongKey:
		return Grant{}, ErrWrongKey
	case codeNoKey:
		return Grant{}, ErrKeyRequired
	case codeCorrupt:
		return Grant{}, s.corrupt(ctx, errDamaged(script), "", sessionIDString(memberOf(sessionKey)), r.now)
	}
	return Grant{}, r.unexpected(script)
}

func (s *Store) reused(ctx context.Context, r reply, t *token, sessionKey string) (Grant, error) {
	sid := sessionIDString(memberOf(sessionKey))
	user, err := s.boundUser(r.field(0), t)
	if err != nil {
		return Grant{}, s.corrupt(ctx, err, "", sid, r.now)
	}
	s.emit(ctx, Event{Kind: EventReuseDetected, UserID: user, SessionID: sid, Reason: ReasonReuse, Time: time.UnixMilli(r.now)})
	revoked := Grant{SessionID: sid, UserID: user}
	if err := s.awaitReplicas(ctx, sessionKey, true); err != nil {
		return revoked, errors.Join(ErrReused, err)
	}
	return revoked, ErrReused
}

// grantBound fills in g the bindings and the user id of rest (what follows
// the hash in the session's h field, as the script answers it), checking
// the user id against old. The script checked any key binding against c's.
func (s *Store) grantBound(g *Grant, rest string, old *token, c *Client) error {
	b, user, err := s.boundRest(rest, old)
	if err != nil {
		return err
	}
	g.ClientID, g.UserID = b.clientID, user
	if b.keyBound {
		g.JKT = c.JKT
	}
	return nil
}

// parseRotateReply reads rotate.lua's answer: {code, now, ...}, with now as
// text in the answers given before the script parses it ({5, now}, {6,
// now}), or, on the hot path, one string: now (13 digits), then the rest of
// h (the client binding, if any, and the user id), for code codeOK.
func parseRotateReply(v any, err error) (reply, error) {
	if err != nil {
		return reply{}, fmt.Errorf("redisstore: %w", err)
	}
	if s, ok := v.(string); ok {
		now, err := strconv.ParseInt(s[:min(len(s), 13)], 10, 64)
		if err != nil || len(s) < 13 {
			return reply{}, fmt.Errorf("redisstore: unexpected script reply %q", truncate(s))
		}
		return reply{code: codeOK, now: now, arr: []any{s[13:]}}, nil
	}
	if arr, ok := v.([]any); ok && len(arr) >= 2 {
		if s, ok := arr[1].(string); ok {
			if now, err := strconv.ParseInt(s, 10, 64); err == nil {
				arr[1] = now
			}
		}
	}
	return parseReply(v, nil)
}

// The frame. Rotate is the hot path: it runs through a pooled frame whose two
// script arguments are written into fixed buffers. go-redis writes
// encoding.BinaryMarshaler arguments without boxing them, so a rotation
// allocates little beyond what go-redis itself needs.

// fastArg is ARGV[1] of rotate.lua: what every rotation needs.
type fastArg struct {
	b [2*hashLen + 13 + 13 + 1 + callIDLen + 4 + 16 + 20]byte
	n int
}

// MarshalBinary implements encoding.BinaryMarshaler for go-redis.
func (a *fastArg) MarshalBinary() ([]byte, error) { return a.b[:a.n], nil }

// slowArg is ARGV[2] of rotate.lua: what only the slower outcomes read.
type slowArg struct {
	b [34 + 2 + MaxClientIDLen + 1 + keyBindingLen + 1 + 1 + MaxDeviceIDLen + 1 + maxKeyPrefixLen + len(revocationChannel) + 1 + maxIPLen + MaxUserAgentLen]byte
	n int
}

// MarshalBinary implements encoding.BinaryMarshaler for go-redis.
func (a *slowArg) MarshalBinary() ([]byte, error) { return a.b[:a.n], nil }

type rotateFrame struct {
	old, next token
	keys      [2]string
	args      [2]any
	fast      fastArg
	slow      slowArg
	call      call
}

var rotateFrames = sync.Pool{New: func() any {
	f := &rotateFrame{}
	f.args = [2]any{&f.fast, &f.slow}
	f.call.script, f.call.keys, f.call.args = scriptRotate, f.keys[:], f.args[:]
	return f
}}

func getRotateFrame() *rotateFrame { return rotateFrames.Get().(*rotateFrame) }

// putRotateFrame returns f to the pool, or, if the batcher still holds
// its call (owned is false: the caller left), only wipes its tokens.
func putRotateFrame(f *rotateFrame, owned bool) {
	// Drop the secret material of both tokens, and references to strings.
	f.old, f.next = token{}, token{}
	if !owned {
		return
	}
	f.keys = [2]string{}
	f.call.route = ""
	f.fast, f.slow = fastArg{}, slowArg{}
	rotateFrames.Put(f)
}

// rotateArgs are the inputs of rotate.lua, before packing.
type rotateArgs struct {
	oldHash, nextHash *[hashLen]byte
	keyID             byte   // of the successor
	gen               uint32 // of the successor
	absMS, idleMS     int64
	graceMS, marginMS int64
	checkDevice       bool
	device, ip        string // stored forms
	ua                string // as given; packed here
	clientID          string // as given; "" accepts any client
	jkt               string // as given; "" for none
	bind              bool   // bind an unbound session to jkt
	channel           string // the revocation channel
}

// pack writes both arguments of rotate.lua (see its header for the
// layout), with a new call id.
func (f *rotateFrame) pack(a *rotateArgs) error {
	b := f.fast.b[:0]
	b = append(b, a.oldHash[:]...)
	b = append(b, a.nextHash[:]...)
	b = appendPadded(b, a.absMS, 13)
	b = appendPadded(b, a.absMS-a.idleMS, 13)
	l := len(b)
	b = append(b, 0)
	b = b[:len(b)+callIDLen]
	if err := newCallID(b[len(b)-callIDLen:]); err != nil {
		return err
	}
	b = binary.BigEndian.AppendUint32(b, clientSum(a.ip, a.ua))
	p := len(b)
	b = appendStatePrefix(b, a.gen, a.keyID)
	b[l] = byte(len(b) - p)
	b = strconv.AppendInt(b, a.idleMS, 10)
	f.fast.n = len(b)

	b = f.slow.b[:0]
	b = appendPadded(b, int64(a.gen-1), 10)
	b = appendPadded(b, a.graceMS, 10)
	b = appendPadded(b, a.marginMS, 13)
	b = append(b, 0)
	c := len(b)
	b = appendClientBinding(b, a.clientID)
	b[c-1] = byte(len(b) - c)
	b = append(b, 0)
	k := len(b)
	b = appendKeyBinding(b, a.jkt)
	b[k-1] = byte(len(b) - k)
	if a.bind {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	if a.checkDevice {
		b = append(b, byte(len(a.device)+1))
		b = append(b, a.device...)
	} else {
		b = append(b, 0)
	}
	b = append(b, byte(len(a.channel)))
	b = append(b, a.channel...)
	b = append(b, byte(len(a.ip)))
	b = append(b, a.ip...)
	b = appendPackedUserAgent(b, a.ua)
	f.slow.n = len(b)
	return nil
}

// appendPadded appends v in decimal, zero-padded to width digits.
func appendPadded(b []byte, v int64, width int) []byte {
	var d [20]byte
	s := strconv.AppendInt(d[:0], v, 10)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}
