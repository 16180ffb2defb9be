package redisstore

import (
	"encoding/base64"
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
	ID       string // the session id, a UUID
	UserID   string
	ClientID string // the client it was issued to; "" for none
	// KeyBound says the session is bound to a DPoP key (Client.JKT).
	KeyBound   bool
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
	// ClientID is the client the session was issued to ("" for none).
	ClientID string
	// JKT is the thumbprint of the DPoP key the session is bound to (the
	// caller's Client.JKT, which matched), or "" for a session bound to
	// none.
	JKT string
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
	return fmt.Sprintf("Grant{Token:[redacted] SessionID:%s UserID:%q ClientID:%q JKT:%q ExpiresAt:%s SessionExpiresAt:%s Replayed:%t}",
		g.SessionID, g.UserID, g.ClientID, g.JKT, g.ExpiresAt.Format(time.RFC3339), g.SessionExpiresAt.Format(time.RFC3339), g.Replayed)
}

// GoString hides the token from %#v.
func (g Grant) GoString() string { return g.String() }

// LogValue hides the token from log/slog.
func (g Grant) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("session_id", g.SessionID),
		slog.String("user_id", g.UserID),
		slog.String("client_id", g.ClientID),
		slog.String("jkt", g.JKT),
		slog.Time("expires_at", g.ExpiresAt),
		slog.Time("session_expires_at", g.SessionExpiresAt),
		slog.Bool("replayed", g.Replayed),
	)
}

// Client describes who presents a token: the device and the connection.
// Every field is optional. Text fields must be valid UTF-8 within their
// length limit, without control characters, line or paragraph separators,
// or bidirectional formatting characters (which can make a "your devices"
// list show something other than what is stored); anything else is refused
// with ErrInvalidArgument, and nothing is written.
type Client struct {
	// ClientID is the OAuth client (RFC 6749 client_id: the application)
	// the session belongs to, at most 128 bytes. Issue binds the session to
	// it for life. A Rotate that names a client is refused with
	// ErrWrongClient, and changes nothing, if the session is bound to
	// another one (RFC 9700 section 4.14.2); a Rotate that names none is not
	// checked, and a session issued without one is bound to none, so that
	// any caller may rotate it. Short ids keep sessions small: a UUID is
	// stored as 17 bytes, and while the hash, the user id and the client id
	// together fit in 64 bytes a session stays a compact listpack.
	ClientID string
	// JKT is the RFC 7638 thumbprint (SHA-256, base64url: 43 characters)
	// of the client's DPoP key (RFC 9449), from a proof the caller
	// verified. Issue binds the session to it for life; a session issued
	// without one is bound to none. Rotate refuses, and changes nothing, a
	// bound session's token presented without JKT (ErrKeyRequired) or with
	// another one (ErrWrongKey): a binding is never dropped. A session is
	// stored with the first 16 bytes of the thumbprint (17 bytes of h).
	JKT string
	// BindJKT asks Rotate to bind a session that is still bound to no key
	// to JKT, in the same atomic step as the rotation (a public client's
	// first refresh with a proof, RFC 9449 section 5). A grace replay or a
	// retry hands out a token without binding.
	BindJKT bool
	// DeviceID is a stable id of the device or app install (at most 128
	// bytes). Recorded at login; with Options.GraceSameDevice, compared on
	// grace replays.
	DeviceID string
	// DeviceName is a name a person recognises, such as "Firefox on Linux"
	// (at most 128 bytes). Recorded at login only.
	DeviceName string
	// IPAddress is the client's address, IPv4 or IPv6, without a zone. It
	// is stored in canonical form (net/netip). Recorded at login and updated
	// by each rotation.
	IPAddress string
	// UserAgent is the client's User-Agent header (at most 512 bytes).
	// Recorded at login and updated by each rotation.
	UserAgent string
}

// Input limits, in bytes.
const (
	MaxUserIDLen     = 256
	MaxClientIDLen   = 128
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

// check validates c and returns the IP address as stored: canonical, or "".
func (c *Client) check() (ip string, err error) {
	if err := checkText("client id", c.ClientID, MaxClientIDLen); err != nil {
		return "", err
	}
	if c.JKT != "" && !validJKT(c.JKT) {
		return "", argError("jkt", "is not a SHA-256 thumbprint in base64url (43 characters)")
	}
	if c.BindJKT && c.JKT == "" {
		return "", argError("jkt", "is empty: BindJKT needs one")
	}
	if err := checkText("device id", c.DeviceID, MaxDeviceIDLen); err != nil {
		return "", err
	}
	if err := checkText("device name", c.DeviceName, MaxDeviceNameLen); err != nil {
		return "", err
	}
	if err := checkText("user agent", c.UserAgent, MaxUserAgentLen); err != nil {
		return "", err
	}
	if c.IPAddress == "" {
		return "", nil
	}
	if len(c.IPAddress) > maxIPLen {
		return "", argError("IP address", "is %d bytes, at most %d allowed", len(c.IPAddress), maxIPLen)
	}
	a, err := netip.ParseAddr(c.IPAddress)
	if err != nil {
		return "", argError("IP address", "%q is not an IPv4 or IPv6 address", truncate(c.IPAddress))
	}
	if a.Zone() != "" {
		return "", argError("IP address", "%q has a zone, which means nothing off its host", truncate(c.IPAddress))
	}
	var buf [maxIPLen]byte
	if canon := a.AppendTo(buf[:0]); string(canon) != c.IPAddress {
		return string(canon), nil
	}
	return c.IPAddress, nil
}

// maxIPLen is the longest IP address text accepted: an IPv6 address with an
// embedded IPv4 one, written out in full.
const maxIPLen = len("0000:0000:0000:0000:0000:ffff:255.255.255.255")

// Invisible reports whether the store refuses r in the text it keeps (user
// ids, client ids, device ids and names, user agents): r is a format
// character (Unicode category Cf: the bidirectional controls, zero-width
// spaces and joiners, U+2060, U+FEFF, the soft hyphen U+00AD, the tag
// characters U+E0000 to U+E007F), a control character (Cc), a line or
// paragraph separator (Zl, Zp), or a Hangul filler (U+115F, U+1160,
// U+3164, U+FFA0): characters that show nothing, so that an id made of
// them, or with them added, looks like another ("admin\u200b", "\u3164",
// "iPhone" and tag characters). Letters, marks, digits, punctuation,
// symbols and spaces of every script pass. Programs that check or log
// client text use the same rule.
func Invisible(r rune) bool {
	switch r {
	case 0x115f, 0x1160, 0x3164, 0xffa0:
		return true
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)
}

// checkText accepts valid UTF-8 of at most max bytes without an Invisible
// character.
func checkText(what, s string, max int) error {
	if len(s) > max {
		return argError(what, "is %d bytes, at most %d allowed", len(s), max)
	}
	for i := 0; i < len(s); {
		b := s[i]
		if b >= 0x20 && b < 0x7f {
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			return argError(what, "is not valid UTF-8")
		}
		switch {
		case !Invisible(r):
		case unicode.IsControl(r):
			return argError(what, "holds a control character")
		case r == '\u2028' || r == '\u2029':
			return argError(what, "holds a line or paragraph separator")
		case isBidiControl(r):
			return argError(what, "holds a bidirectional formatting character (U+%04X)", r)
		default:
			return argError(what, "holds an invisible character (U+%04X)", r)
		}
		i += n
	}
	return nil
}

// appendClientBinding appends the client binding of the h field (schema.go)
// for clientID, or nothing for "".
func appendClientBinding(b []byte, clientID string) []byte {
	if clientID == "" {
		return b
	}
	id := storedID(clientID)
	b = append(b, clientMarker, byte(len(id)))
	return append(b, id...)
}

// appendKeyBinding appends the key binding of the h field (schema.go) for
// jkt, valid or "" (nothing).
func appendKeyBinding(b []byte, jkt string) []byte {
	if jkt == "" {
		return b
	}
	var sum [32]byte
	base64.RawURLEncoding.Decode(sum[:], []byte(jkt))
	b = append(b, keyMarker)
	return append(b, sum[:keyBindingLen-1]...)
}

// validJKT reports whether jkt is a SHA-256 thumbprint in base64url: 43
// characters that decode to 32 bytes, in the one canonical spelling.
func validJKT(jkt string) bool {
	if len(jkt) != 43 {
		return false
	}
	var sum [32]byte
	n, err := base64.RawURLEncoding.Strict().Decode(sum[:], []byte(jkt))
	return err == nil && n == 32
}

// binding is what the h field binds a session to.
type binding struct {
	clientID string // "" for none
	keyBound bool   // bound to a DPoP key
}

// splitRest splits what follows the hash in the h field into the bindings
// and the stored user id.
func splitRest(rest string) (b binding, user string, err error) {
	if len(rest) > 0 && rest[0] == clientMarker {
		if len(rest) < 2 || len(rest) < 2+int(rest[1]) {
			return binding{}, "", fmt.Errorf("%w: bad client binding", ErrCorrupt)
		}
		n := 2 + int(rest[1])
		b.clientID, rest = loadedID(rest[2:n]), rest[n:]
	}
	if len(rest) > 0 && rest[0] == keyMarker {
		if len(rest) < keyBindingLen {
			return binding{}, "", fmt.Errorf("%w: bad key binding", ErrCorrupt)
		}
		b.keyBound, rest = true, rest[keyBindingLen:]
	}
	return b, rest, nil
}

// isBidiControl reports whether r is one of the characters that change the
// display order of text: U+061C, U+200E, U+200F, U+202A to U+202E and
// U+2066 to U+2069.
func isBidiControl(r rune) bool {
	return r == 0x061c || r == 0x200e || r == 0x200f || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069
}

func truncate(s string) string {
	if len(s) > 64 {
		s = s[:64]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		return s + "..."
	}
	return s
}
