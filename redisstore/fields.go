package redisstore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// sessionFields are the fields ListSessions reads, in the order readRecord
// decodes them.
var sessionFields = []string{fHash, fState, fCreated, fAbsolute, fDevice, fName, fIP, fAgent, fReason}

// Positions in sessionFields.
const (
	rfHash = iota
	rfState
	rfCreated
	rfAbsolute
	rfDevice
	rfName
	rfIP
	rfAgent
	rfReason
)

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

// record is a session hash as ListSessions reads it.
type record struct {
	userID, clientID, revoked           string
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
		revoked:  str(rfReason),
		deviceID: loadedID(str(rfDevice)), deviceName: str(rfName), ip: str(rfIP), userAgent: str(rfAgent),
	}
	if h := str(rfHash); len(h) > hashLen {
		client, user, err := splitRest(h[hashLen:])
		if err != nil {
			return record{}, err
		}
		r.clientID, r.userID = client, loadedID(user)
	}
	if r.userID == "" || r.revoked != "" {
		return r, nil
	}
	var err error
	if r.st, err = parseState(str(rfState)); err != nil {
		return record{}, err
	}
	r.created, err = strconv.ParseInt(str(rfCreated), 10, 64)
	if err != nil {
		return record{}, fmt.Errorf("redisstore: bad session field c: %w", err)
	}
	r.absolute, err = strconv.ParseInt(str(rfAbsolute), 10, 64)
	if err != nil {
		return record{}, fmt.Errorf("redisstore: bad session field x: %w", err)
	}
	return r, nil
}

func (r *record) session(id string) Session {
	return Session{
		ID:               id,
		UserID:           r.userID,
		ClientID:         r.clientID,
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
