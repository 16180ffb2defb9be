package redisstore

import (
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
//	s  state: "generation:key id:last used:idle deadline", times in unix ms;
//	   one field, so that a rotation writes it in one piece
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
	gen      uint32
	keyID    byte
	lastUsed int64
	expires  int64
}

func (st state) String() string {
	var b [64]byte
	return string(st.appendTo(b[:0]))
}

func parseState(s string) (state, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 4 {
		return state{}, fmt.Errorf("redisstore: bad session state %q", s)
	}
	gen, err1 := strconv.ParseUint(parts[0], 10, 32)
	kid, err2 := strconv.ParseUint(parts[1], 10, 8)
	last, err3 := strconv.ParseInt(parts[2], 10, 64)
	exp, err4 := strconv.ParseInt(parts[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return state{}, fmt.Errorf("redisstore: bad session state %q", s)
	}
	return state{gen: uint32(gen), keyID: byte(kid), lastUsed: last, expires: exp}, nil
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
		ExpiresAt:        time.UnixMilli(r.st.expires),
		SessionExpiresAt: time.UnixMilli(r.absolute),
	}
}
