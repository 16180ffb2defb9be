package redisstore

import (
	"encoding/binary"
	mrand "math/rand/v2"
	"strconv"
	"sync"
)

// Rotate is the hot path: it runs through a pooled frame whose script
// arguments are pointers into the frame. go-redis writes *int64, *string and
// encoding.BinaryMarshaler arguments without boxing them, so a rotation
// allocates little beyond what go-redis itself needs.

// binArg is a script argument written from a fixed buffer.
type binArg struct {
	b [hashLen*2 + 64]byte
	n int
}

// MarshalBinary implements encoding.BinaryMarshaler for go-redis.
func (a *binArg) MarshalBinary() ([]byte, error) { return a.b[:a.n], nil }

type rotateFrame struct {
	old, next token
	keys      [2]string
	args      [10]any

	packed                             binArg // ARGV[1]
	now, exp, keep, gen, tokExp, grace int64  // ARGV[2..7]
	device, ip                         string // ARGV[8..9]
	userAgent                          uaArg  // ARGV[10]
}

// uaArg is the packed user agent, written from a fixed buffer.
type uaArg struct {
	b [MaxUserAgentLen]byte
	n int
}

// MarshalBinary implements encoding.BinaryMarshaler for go-redis.
func (a *uaArg) MarshalBinary() ([]byte, error) { return a.b[:a.n], nil }

func (a *uaArg) set(ua string) { a.n = len(appendPackedUserAgent(a.b[:0], ua)) }

var rotateFrames = sync.Pool{New: func() any {
	f := &rotateFrame{}
	f.args = [10]any{&f.packed, &f.now, &f.exp, &f.keep, &f.gen, &f.tokExp, &f.grace, &f.device, &f.ip, &f.userAgent}
	return f
}}

func getRotateFrame() *rotateFrame { return rotateFrames.Get().(*rotateFrame) }

func putRotateFrame(f *rotateFrame) {
	// Drop references to strings, and the secret material of both tokens.
	f.keys = [2]string{}
	f.device, f.ip = "", ""
	f.userAgent.n = 0
	f.old, f.next = token{}, token{}
	f.packed = binArg{}
	rotateFrames.Put(f)
}

// pack writes the presented token's hash, the successor's hash, an id for
// this call and the successor's state into ARGV[1].
func (f *rotateFrame) pack(oldHash, nextHash *[hashLen]byte, st state) {
	copy(f.packed.b[:hashLen], oldHash[:])
	copy(f.packed.b[hashLen:], nextHash[:])
	binary.BigEndian.PutUint64(f.packed.b[2*hashLen:], callID())
	f.packed.n = len(st.appendTo(f.packed.b[:2*hashLen+8]))
}

// callID returns an id for one call of the store. A client retry resends the
// call's arguments, id included, so a script can recognise the effect of its
// own earlier attempt whose reply was lost. Ids need to be unique, not
// secret.
func callID() uint64 { return mrand.Uint64() }

// validateFrame runs Validate's HGET without allocating its arguments.
type validateFrame struct {
	t    token
	key  string
	args [3]any
}

var validateFrames = sync.Pool{New: func() any {
	f := &validateFrame{}
	f.args = [3]any{"hget", &f.key, "h"}
	return f
}}

func getValidateFrame() *validateFrame { return validateFrames.Get().(*validateFrame) }

func putValidateFrame(f *validateFrame) {
	f.t, f.key = token{}, ""
	validateFrames.Put(f)
}

func (st state) appendTo(b []byte) []byte {
	b = strconv.AppendUint(b, uint64(st.gen), 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(st.keyID), 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, st.lastUsed, 10)
	b = append(b, ':')
	return strconv.AppendInt(b, st.expires, 10)
}
