package redisstore

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"
	"unicode"
	"unicode/utf8"
)

// Session is one login on one device: the family of every token rotated
// from the token that Issue returned.
type Session struct {
	ID         string // the session id, a UUID
	UserID     string
	DeviceID   string
	DeviceName string
	IPAddress  string // as of the last rotation
	UserAgent  string // as of the last rotation
	CreatedAt  time.Time
	LastUsedAt time.Time // the login or the last rotation
	// ExpiresAt is the idle deadline: the session ends then unless its
	// current token is rotated first.
	ExpiresAt time.Time
	// SessionExpiresAt is the absolute deadline, fixed at login.
	SessionExpiresAt time.Time
}

// Grant is a refresh token handed out by Issue or Rotate. Its String,
// GoString and LogValue methods hide the token, so that printing or logging
// a Grant does not leak it.
type Grant struct {
	// Token is the raw refresh token: hand it to the client and forget it.
	// The store keeps only a keyed hash of it.
	Token     string
	SessionID string
	UserID    string
	// ExpiresAt is the token's idle deadline, SessionExpiresAt the session's
	// absolute deadline.
	ExpiresAt        time.Time
	SessionExpiresAt time.Time
	// Replayed is true when Rotate answered a replay of the immediate
	// predecessor within the grace window with the current token, instead
	// of creating a new one.
	Replayed bool
}

func (g Grant) String() string {
	return fmt.Sprintf("Grant{Token:[redacted] SessionID:%s UserID:%q ExpiresAt:%s SessionExpiresAt:%s Replayed:%t}",
		g.SessionID, g.UserID, g.ExpiresAt.Format(time.RFC3339), g.SessionExpiresAt.Format(time.RFC3339), g.Replayed)
}

// GoString hides the token from %#v.
func (g Grant) GoString() string { return g.String() }

// LogValue hides the token from log/slog.
func (g Grant) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("session_id", g.SessionID),
		slog.String("user_id", g.UserID),
		slog.Time("expires_at", g.ExpiresAt),
		slog.Time("session_expires_at", g.SessionExpiresAt),
		slog.Bool("replayed", g.Replayed),
	)
}

// Client describes who presents a token: the device and the connection.
// Every field is optional.
type Client struct {
	// DeviceID is a stable id of the device or app install (at most 128
	// bytes). Recorded at login; with Options.GraceSameDevice, compared on
	// grace replays.
	DeviceID string
	// DeviceName is a name a person recognises, such as "Firefox on Linux"
	// (at most 128 bytes). Recorded at login only.
	DeviceName string
	// IPAddress is the client's address, IPv4 or IPv6. Recorded at login and
	// updated by each rotation.
	IPAddress string
	// UserAgent is the client's User-Agent header (at most 512 bytes).
	// Recorded at login and updated by each rotation.
	UserAgent string
}

// Input limits, in bytes.
const (
	MaxUserIDLen     = 256
	MaxDeviceIDLen   = 128
	MaxDeviceNameLen = 128
	MaxUserAgentLen  = 512
)

func validateUserID(id string) error {
	if id == "" {
		return argError("user id", "is empty")
	}
	return checkText("user id", id, MaxUserIDLen)
}

func (c *Client) validate() error {
	if err := checkText("device id", c.DeviceID, MaxDeviceIDLen); err != nil {
		return err
	}
	if err := checkText("device name", c.DeviceName, MaxDeviceNameLen); err != nil {
		return err
	}
	if err := checkText("user agent", c.UserAgent, MaxUserAgentLen); err != nil {
		return err
	}
	if c.IPAddress != "" {
		if _, err := netip.ParseAddr(c.IPAddress); err != nil {
			return argError("IP address", "%q is not an IPv4 or IPv6 address", truncate(c.IPAddress))
		}
	}
	return nil
}

// checkText accepts valid UTF-8 without control characters, up to max bytes.
func checkText(what, s string, max int) error {
	if len(s) > max {
		return argError(what, "is %d bytes, at most %d allowed", len(s), max)
	}
	if !utf8.ValidString(s) {
		return argError(what, "is not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return argError(what, "holds a control character")
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
