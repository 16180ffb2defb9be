package redisstore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The s field of a session hash (layout in schema.go), which issue.lua and
// rotate.lua write and Rotate, Validate and ListSessions read.

// state is the decoded s field.
type state struct {
	extend   int64 // extend after
	gen      uint32
	keyID    byte
	lastUsed int64
	idle     int64 // ms
}

// expires returns the idle deadline of the token the state describes, in a
// session whose absolute deadline is absMS.
func (st state) expires(absMS int64) int64 { return min(st.lastUsed+st.idle, absMS) }

// parseState decodes an s field (layout in schema.go).
func parseState(s string) (state, error) {
	if len(s) < stRest || s[stLast-1] != ':' {
		return state{}, fmt.Errorf("redisstore: bad session state %q", s)
	}
	parts := strings.Split(s[stRest:], ":")
	if len(parts) != 3 {
		return state{}, fmt.Errorf("redisstore: bad session state %q", s)
	}
	ext, err0 := strconv.ParseInt(s[stExtend:stLast-1], 10, 64)
	last, err1 := strconv.ParseInt(s[stLast:stCall], 10, 64)
	gen, err2 := strconv.ParseUint(parts[0], 10, 32)
	kid, err3 := strconv.ParseUint(parts[1], 10, 8)
	idle, err4 := strconv.ParseInt(parts[2], 10, 64)
	if err := errors.Join(err0, err1, err2, err3, err4); err != nil {
		return state{}, fmt.Errorf("redisstore: bad session state %q", s)
	}
	return state{extend: ext, gen: uint32(gen), keyID: byte(kid), lastUsed: last, idle: idle}, nil
}

// appendStatePrefix appends "generation:key id:" for the s field.
func appendStatePrefix(b []byte, gen uint32, keyID byte) []byte {
	b = strconv.AppendUint(b, uint64(gen), 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(keyID), 10)
	return append(b, ':')
}

// clientSum is the checksum of a recorded IP address and user agent (as
// given, not packed) that the s field keeps, so that a rotation rewrites them only when they
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
