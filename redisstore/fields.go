package redisstore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Fields of a session hash. Short names keep small hashes small.
//
//	h  keyed hash of the current token's secret (16 bytes), then the user
//	   id: one field, so that Validate reads one field. The predecessor of
//	   the current token is recognised by the hash of the secret derived
//	   from it, so nothing of older tokens is kept.
//	s  state: when the next rotation moves the session in the user's index
//	   ("extend after"), last used, the id of the call that created the
//	   current token (for retries), a checksum of the recorded IP address
//	   and user agent (so that a rotation rewrites them only when they
//	   change), then "generation:key id:idle lifetime"; times in unix ms of
//	   Redis's clock (layout in rotate.lua). One field, so that a rotation
//	   reads and writes it in one piece. The token's idle deadline is last
//	   used + idle lifetime, capped by the absolute deadline.
//	p  last used and creator call id of the previous token: a late retry of
//	   the call that created it still gets its answer
//	c  created, unix ms      x  absolute deadline, unix ms
//	d  device id             n  device name           i  IP address
//	   (user and device ids that are UUIDs are kept in 17 bytes, see ids.go)
//	a  user agent, packed (see useragent.go)
//	r  revocation reason: a revoked session is replaced by a tombstone that
//	   holds r, u (the user id) and q (the id of the call that revoked it,
//	   for retries)
var sessionFields = []string{"h", "s", "c", "x", "d", "n", "i", "a", "r"}

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

// parseState decodes an s field (see rotate.lua for the layout).
func parseState(s string) (state, error) {
	const tail = 13 + 1 + 13 + callIDLen + 4
	if len(s) < tail || s[13] != ':' {
		return state{}, fmt.Errorf("redisstore: bad session state %q", s)
	}
	parts := strings.Split(s[tail:], ":")
	if len(parts) != 3 {
		return state{}, fmt.Errorf("redisstore: bad session state %q", s)
	}
	ext, err0 := strconv.ParseInt(s[:13], 10, 64)
	last, err1 := strconv.ParseInt(s[14:27], 10, 64)
	gen, err2 := strconv.ParseUint(parts[0], 10, 32)
	kid, err3 := strconv.ParseUint(parts[1], 10, 8)
	idle, err4 := strconv.ParseInt(parts[2], 10, 64)
	if err := errors.Join(err0, err1, err2, err3, err4); err != nil {
		return state{}, fmt.Errorf("redisstore: bad session state %q", s)
	}
	return state{extend: ext, gen: uint32(gen), keyID: byte(kid), lastUsed: last, idle: idle}, nil
}

// record is a session hash as ListSessions reads it.
type record struct {
	userID, revoked                     string
	deviceID, deviceName, ip, userAgent string
	st                                  state
	created, absolute                   int64
}

// readRecord decodes an HMGET of sessionFields. A missing session has an
// empty userID, a revoked one a reason.
func readRecord(v []any) (record, error) {
	if len(v) != len(sessionFields) {
		return record{}, fmt.Errorf("redisstore: HMGET returned %d fields, want %d", len(v), len(sessionFields))
	}
	str := func(i int) string {
		s, _ := v[i].(string)
		return s
	}
	r := record{
		revoked:  str(8),
		deviceID: loadedID(str(4)), deviceName: str(5), ip: str(6), userAgent: str(7),
	}
	if h := str(0); len(h) > hashLen {
		r.userID = loadedID(h[hashLen:])
	}
	if r.userID == "" || r.revoked != "" {
		return r, nil
	}
	var err error
	if r.st, err = parseState(str(1)); err != nil {
		return record{}, err
	}
	r.created, err = strconv.ParseInt(str(2), 10, 64)
	if err != nil {
		return record{}, fmt.Errorf("redisstore: bad session field c: %w", err)
	}
	r.absolute, err = strconv.ParseInt(str(3), 10, 64)
	if err != nil {
		return record{}, fmt.Errorf("redisstore: bad session field x: %w", err)
	}
	return r, nil
}

func (r *record) session(id string) Session {
	return Session{
		ID:               id,
		UserID:           r.userID,
		DeviceID:         r.deviceID,
		DeviceName:       r.deviceName,
		IPAddress:        r.ip,
		UserAgent:        unpackUserAgent(r.userAgent),
		CreatedAt:        time.UnixMilli(r.created),
		LastUsedAt:       time.UnixMilli(r.st.lastUsed),
		ExpiresAt:        time.UnixMilli(r.st.expires(r.absolute)),
		SessionExpiresAt: time.UnixMilli(r.absolute),
	}
}
