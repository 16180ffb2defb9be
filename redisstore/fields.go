package redisstore

import (
	"fmt"
	"strconv"
	"time"
)

// Field names of a session hash. Short names keep small hashes small.
//
//	u user id        g generation of the current token
//	h hash of the current token           p hash of its predecessor
//	k key id of the current token         t last used (login or rotation), unix ms
//	e idle deadline, unix ms              x absolute deadline, unix ms
//	c created, unix ms                    d, n, i, a device id, device name, IP, user agent
//	r revocation reason: a revoked session keeps only this field (a tombstone)
var sessionFields = []string{"u", "g", "h", "t", "e", "x", "c", "d", "n", "i", "a", "r"}

type fields struct {
	userID, hash, revoked                     string
	deviceID, deviceName, ip, userAgent       string
	gen, lastUsed, expires, absolute, created int64
}

// readFields decodes an HMGET of sessionFields.
func readFields(v []any) (fields, error) {
	if len(v) != len(sessionFields) {
		return fields{}, fmt.Errorf("redisstore: HMGET returned %d fields, want %d", len(v), len(sessionFields))
	}
	str := func(i int) string {
		s, _ := v[i].(string)
		return s
	}
	f := fields{
		userID: str(0), hash: str(2), revoked: str(11),
		deviceID: str(7), deviceName: str(8), ip: str(9), userAgent: str(10),
	}
	if f.userID == "" {
		return f, nil
	}
	for _, n := range []struct {
		i   int
		dst *int64
	}{{1, &f.gen}, {3, &f.lastUsed}, {4, &f.expires}, {5, &f.absolute}, {6, &f.created}} {
		x, err := strconv.ParseInt(str(n.i), 10, 64)
		if err != nil {
			return fields{}, fmt.Errorf("redisstore: session field %s: %w", sessionFields[n.i], err)
		}
		*n.dst = x
	}
	return f, nil
}

func (f *fields) session(id string) Session {
	return Session{
		ID:               id,
		UserID:           f.userID,
		DeviceID:         f.deviceID,
		DeviceName:       f.deviceName,
		IPAddress:        f.ip,
		UserAgent:        f.userAgent,
		CreatedAt:        time.UnixMilli(f.created),
		LastUsedAt:       time.UnixMilli(f.lastUsed),
		ExpiresAt:        time.UnixMilli(f.expires),
		SessionExpiresAt: time.UnixMilli(f.absolute),
	}
}
