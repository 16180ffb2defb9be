package bench

import (
	"context"

	"github.com/sessioncache/sessioncache/redisstore"
)

// Store is the common shape of everything measured here: the library, the
// baselines it is compared with, and the HTTP service. Outcomes are the
// library's sentinel errors (redisstore.ErrReused, ErrUnknown, ...), whoever
// returns them.
type Store interface {
	// Issue starts a session (a login) and returns its first token.
	Issue(ctx context.Context, userID string, c redisstore.Client) (string, error)
	// Rotate exchanges a token for its successor. replayed reports a grace
	// replay (the library only).
	Rotate(ctx context.Context, token string, c redisstore.Client) (next string, replayed bool, err error)
	// Validate checks that token is the current token of a live session.
	Validate(ctx context.Context, token string) error
	// ListSessions counts the live sessions of userID, reading all of them.
	ListSessions(ctx context.Context, userID string) (int, error)
	// RevokeSession revokes the session (token family) of token.
	RevokeSession(ctx context.Context, token string) error
	// RevokeAll revokes every session of userID and returns how many.
	RevokeAll(ctx context.Context, userID string) (int, error)
}

// Login is what a login presents: realistic metadata, with a device id, a
// device name, an IP address and a 70-byte user agent. Every measurement
// logs in with it.
var Login = redisstore.Client{
	DeviceID:   "3f6c1c9e-5b7a-4d2e-9a41-7c0e2b8d9f10",
	DeviceName: "Firefox on Linux",
	IPAddress:  "203.0.113.42",
	UserAgent:  "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
}

// Refresh is what a rotation presents: the connection of the Login.
var Refresh = redisstore.Client{IPAddress: Login.IPAddress, UserAgent: Login.UserAgent}

// Library adapts a *redisstore.Store to Store.
type Library struct {
	S *redisstore.Store
	// ListLimit is the page size ListSessions reads with (0: the store's
	// default).
	ListLimit int
}

// Issue implements Store.
func (l Library) Issue(ctx context.Context, userID string, c redisstore.Client) (string, error) {
	g, err := l.S.Issue(ctx, userID, c)
	return g.Token, err
}

// Rotate implements Store.
func (l Library) Rotate(ctx context.Context, token string, c redisstore.Client) (string, bool, error) {
	g, err := l.S.Rotate(ctx, token, c)
	return g.Token, g.Replayed, err
}

// Validate implements Store.
func (l Library) Validate(ctx context.Context, token string) error {
	_, err := l.S.Validate(ctx, token)
	return err
}

// ListSessions implements Store.
func (l Library) ListSessions(ctx context.Context, userID string) (int, error) {
	n := 0
	opt := redisstore.ListOptions{Limit: l.ListLimit}
	for {
		p, err := l.S.ListSessions(ctx, userID, opt)
		if err != nil {
			return n, err
		}
		n += len(p.Sessions)
		if p.Next == "" {
			return n, nil
		}
		opt.Cursor = p.Next
	}
}

// RevokeSession implements Store.
func (l Library) RevokeSession(ctx context.Context, token string) error {
	_, err := l.S.RevokeToken(ctx, token)
	return err
}

// RevokeAll implements Store.
func (l Library) RevokeAll(ctx context.Context, userID string) (int, error) {
	return l.S.RevokeAll(ctx, userID, "")
}
