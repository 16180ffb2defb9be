package redisstore

import (
	"crypto/rand"
	"encoding/binary"
	"strconv"
	"sync"
)

// Rotate is the hot path: it runs through a pooled frame whose two script
// arguments are written into fixed buffers. go-redis writes
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
	b [34 + 2 + MaxClientIDLen + 1 + MaxDeviceIDLen + 1 + maxKeyPrefixLen + len(revocationChannel) + 1 + maxIPLen + MaxUserAgentLen]byte
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

// clientSum is the checksum of a recorded IP address and user agent (as
// given, not packed) that
// the s field keeps, so that a rotation rewrites them only when they
// change. Zero means "not both known": a caller that gives only one of them
// makes the script write it.
func clientSum(ip, ua string) uint32 {
	if ip == "" || ua == "" {
		return 0
	}
	// FNV-1a, inline: hash/fnv would allocate on the hot path.
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for i := 0; i < len(ip); i++ {
		h = (h ^ uint32(ip[i])) * prime
	}
	h *= prime // the separator, a zero byte
	for i := 0; i < len(ua); i++ {
		h = (h ^ uint32(ua[i])) * prime
	}
	if h == 0 {
		return 1
	}
	return h
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

// callIDLen is the length of a call id. A client retry resends the call's
// arguments, id included, so a script recognises the effect of its own
// earlier attempt whose reply was lost. Ids must be unique, not secret;
// 8 bytes from crypto/rand make a collision between two calls of one session
// negligible.
const callIDLen = 8

func newCallID(dst []byte) error {
	_, err := rand.Read(dst[:callIDLen])
	return err
}

// validateFrame runs Validate's HGET without allocating its arguments.
type validateFrame struct {
	t    token
	key  string
	args [3]any
	call call
}

var validateFrames = sync.Pool{New: func() any {
	f := &validateFrame{}
	f.args = [3]any{"hget", &f.key, fHash}
	f.call.args = f.args[:]
	return f
}}

func getValidateFrame() *validateFrame { return validateFrames.Get().(*validateFrame) }

// putValidateFrame is putRotateFrame for Validate.
func putValidateFrame(f *validateFrame, owned bool) {
	f.t = token{}
	if !owned {
		return
	}
	f.key, f.call.route = "", ""
	validateFrames.Put(f)
}

// appendStatePrefix appends "generation:key id:" for the s field.
func appendStatePrefix(b []byte, gen uint32, keyID byte) []byte {
	b = strconv.AppendUint(b, uint64(gen), 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(keyID), 10)
	return append(b, ':')
}
