// Package clients is the service's registry of OAuth clients (RFC 6749
// section 2): which client ids the token endpoint accepts, and how each
// authenticates.
//
// A registry is read from a file of one client a line:
//
//	# client id      type          secret (confidential clients only)
//	web-app          public
//	billing-backend  confidential  sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//
// A public client (a browser or mobile app, which cannot keep a secret)
// authenticates with nothing but its client id: the refresh token is its
// credential, and the session it was issued to is bound to that id. A
// confidential client authenticates with its secret (client_secret_basic or
// client_secret_post); the file holds only the SHA-256 of the secret, in
// hex (printf %s "$SECRET" | sha256sum). Make secrets random and long
// (openssl rand -hex 32), so that their hash cannot be reversed by guessing.
// Blank lines and lines starting with # are ignored.
//
// Without a file the registry is open: every client id is a public client.
package clients

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Client types.
const (
	Public       = "public"
	Confidential = "confidential"
)

// MaxIDLen is the longest client id (redisstore.MaxClientIDLen).
const MaxIDLen = 128

// Refusals of Authenticate. Each is invalid_client at the token endpoint
// (RFC 6749 section 5.2).
var (
	ErrUnknown        = errors.New("clients: unknown client")
	ErrBadSecret      = errors.New("clients: wrong client secret")
	ErrSecretRequired = errors.New("clients: this client is confidential: it must authenticate with its secret")
	ErrNoSecret       = errors.New("clients: this client is public: it has no secret")
)

// Client is one registered client.
type Client struct {
	ID           string
	Confidential bool
	secret       [sha256.Size]byte
}

// Registry holds the clients. The zero value, and nil, is open.
type Registry struct {
	byID map[string]*Client // nil: open
}

// Open is the registry without a file: every client id is public.
func Open() *Registry { return &Registry{} }

// IsOpen reports whether every client id is accepted.
func (r *Registry) IsOpen() bool { return r == nil || r.byID == nil }

// Len is the number of clients registered.
func (r *Registry) Len() int {
	if r == nil {
		return 0
	}
	return len(r.byID)
}

// Parse reads a registry file's content; name is for errors, which name the
// line and never a secret.
func Parse(name string, data []byte) (*Registry, error) {
	r := &Registry{byID: map[string]*Client{}}
	line := map[string]int{}
	for i, text := range strings.Split(string(data), "\n") {
		text = strings.TrimSpace(text)
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		n := i + 1
		fail := func(format string, args ...any) error {
			return fmt.Errorf("%s line %d: %s", name, n, fmt.Sprintf(format, args...))
		}
		f := strings.Fields(text)
		if len(f) < 2 {
			return nil, fail(`want "<client id> public" or "<client id> confidential sha256:<hex>"`)
		}
		id := f[0]
		if err := CheckID(id); err != nil {
			return nil, fail("%v", err)
		}
		if prev, ok := line[id]; ok {
			return nil, fail("client %q is already on line %d", id, prev)
		}
		c := &Client{ID: id}
		switch {
		case f[1] == Public && len(f) == 2:
		case f[1] == Confidential && len(f) == 3:
			h, ok := strings.CutPrefix(f[2], "sha256:")
			b, err := hex.DecodeString(h)
			if !ok || err != nil || len(b) != sha256.Size {
				return nil, fail("client %q: want its secret as sha256:<64 hex digits> (printf %%s \"$SECRET\" | sha256sum)", id)
			}
			c.Confidential = true
			copy(c.secret[:], b)
		case f[1] == Public || f[1] == Confidential:
			return nil, fail(`client %q: want "%s public" or "%s confidential sha256:<hex>"`, id, id, id)
		default:
			return nil, fail("client %q: type %q is neither public nor confidential", id, f[1])
		}
		line[id] = n
		r.byID[id] = c
	}
	if len(r.byID) == 0 {
		return nil, fmt.Errorf("%s: no client in the file", name)
	}
	return r, nil
}

// CheckID reports whether id can be a client id: 1 to MaxIDLen printable
// ASCII characters (RFC 6749's VSCHAR) without spaces.
func CheckID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("a client id is 1 to %d characters", MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return errors.New("a client id is printable ASCII without spaces")
		}
	}
	return nil
}

// Authenticate checks a client's credentials at the token endpoint: its id,
// and its secret if it gave one (secretGiven). A public client must give
// none, a confidential one its own; an empty secret counts as none (HTTP
// Basic with an empty password is how many OAuth libraries present a
// public client). An id not registered is refused unless the registry is
// open. Secrets are compared in constant time.
func (r *Registry) Authenticate(id, secret string, secretGiven bool) (*Client, error) {
	if secret == "" {
		secretGiven = false
	}
	if err := CheckID(id); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnknown, err)
	}
	if r.IsOpen() {
		if secretGiven {
			return nil, ErrNoSecret
		}
		return &Client{ID: id}, nil
	}
	c, ok := r.byID[id]
	if !ok {
		return nil, ErrUnknown
	}
	switch {
	case !c.Confidential && secretGiven:
		return nil, ErrNoSecret
	case c.Confidential && !secretGiven:
		return nil, ErrSecretRequired
	case c.Confidential:
		sum := sha256.Sum256([]byte(secret))
		if subtle.ConstantTimeCompare(sum[:], c.secret[:]) != 1 {
			return nil, ErrBadSecret
		}
	}
	return c, nil
}

// Known reports whether the registry accepts id at login: any valid id if
// it is open.
func (r *Registry) Known(id string) bool {
	if CheckID(id) != nil {
		return false
	}
	if r.IsOpen() {
		return true
	}
	_, ok := r.byID[id]
	return ok
}
