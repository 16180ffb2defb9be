package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sessioncache/sessioncache/bench"
	"github.com/sessioncache/sessioncache/redisstore"
)

// Operations a worker can run.
const (
	opValidate  = "validate"   // introspect the current token
	opRotate    = "rotate"     // refresh: rotate the current token
	opReplay    = "replay"     // a second tab: present the predecessor again, within grace
	opReuse     = "reuse"      // theft: present an older token; the session is revoked, then a new login
	opIssue     = "issue"      // login: a new session for the user
	opList      = "list"       // "show my devices", every page
	opRevoke    = "revoke"     // "log out this device", then a new login
	opRevokeAll = "revoke-all" // "log out everywhere", then a login per slot
	opGet       = "get"        // the ceiling: one raw GET through the same Redis client
	opAuth      = "auth"       // forward auth: a gateway's GET /v1/auth with the session's access token (-target http)
	opBare      = "bare"       // the service's ceiling: one request to bench/bare, which does one SET (-target bare)
	opBareAuth  = "bare-auth"  // forward auth's ceiling: a GET as a gateway sends it, to bench/bare -headers (-target bare)
	opRefresh   = "refresh"    // refresh at the token endpoint (POST /oauth2/token), as an OAuth client (-target http)
)

var allOps = []string{opValidate, opRotate, opReplay, opReuse, opIssue, opList, opRevoke, opRevokeAll, opGet, opAuth, opBare, opBareAuth, opRefresh}

// mixes are the named workloads; weights are relative.
var mixes = map[string]string{
	// Mostly validation, some rotation, few logins and revocations, a few
	// replays: a gateway in front of browsers and mobile apps.
	"realistic": "validate=80,rotate=14,replay=1.5,reuse=0.1,issue=2,list=1,revoke=1,revoke-all=0.4",
	"validate":  "validate=1",
	"rotate":    "rotate=1",
	"replay":    "replay=1",
	"issue":     "issue=1",
	"list":      "list=1",
	"revoke":    "revoke=1",
	"get":       "get=1",
	"bare":      "bare=1",
	"bare-auth": "bare-auth=1",
	"refresh":   "refresh=1",
	// A gateway asking about every request, beside introspection of the
	// same tokens in the same run.
	"auth":          "auth=1",
	"auth-validate": "auth=1,validate=1",
}

// mix picks operations by weight.
type mix struct {
	ops []string
	cum []float64
}

// parseMix reads a named mix or "op=weight,op=weight...".
func parseMix(s string) (mix, error) {
	if named, ok := mixes[s]; ok {
		s = named
	}
	var m mix
	var total float64
	for _, part := range strings.Split(s, ",") {
		name, w, ok := strings.Cut(strings.TrimSpace(part), "=")
		weight, err := strconv.ParseFloat(w, 64)
		if !ok || err != nil || weight < 0 {
			return mix{}, fmt.Errorf("mix %q: want a name (%s) or weights as op=weight,op=weight", s, strings.Join(mixNames(), ", "))
		}
		if !validOp(name) {
			return mix{}, fmt.Errorf("mix: unknown operation %q (known: %s)", name, strings.Join(allOps, ", "))
		}
		total += weight
		m.ops = append(m.ops, name)
		m.cum = append(m.cum, total)
	}
	if total == 0 {
		return mix{}, fmt.Errorf("mix %q: all weights are zero", s)
	}
	for i := range m.cum {
		m.cum[i] /= total
	}
	return m, nil
}

func mixNames() []string {
	var names []string
	for n := range mixes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func validOp(name string) bool {
	for _, o := range allOps {
		if o == name {
			return true
		}
	}
	return false
}

func (m mix) has(op string) bool {
	for _, o := range m.ops {
		if o == op {
			return true
		}
	}
	return false
}

func (m mix) pick(r *rand.Rand) string {
	x := r.Float64()
	for i, c := range m.cum {
		if x < c {
			return m.ops[i]
		}
	}
	return m.ops[len(m.ops)-1]
}

// A slot is one live session a worker drives, with the tokens it has seen.
type slot struct {
	user             string
	cur, prev, older string // refresh tokens
	rotatedAt        time.Time
	fresh            bool // no rotation since the login
	// access is the access token of the latest grant (the service only),
	// valid until accessExp.
	access    string
	accessExp time.Time
}

// granter is a store that hands out access tokens with its refresh tokens:
// the service (*bench.HTTP).
type granter interface {
	IssueGrant(ctx context.Context, userID string, c redisstore.Client) (bench.Grant, error)
	RotateGrant(ctx context.Context, tok string, c redisstore.Client) (bench.Grant, error)
	RefreshGrant(ctx context.Context, tok string, c redisstore.Client) (bench.Grant, error)
}

// refreshAhead is how long before its access token expires a worker
// refreshes, as OAuth clients do (golang.org/x/oauth2 takes 10 seconds), so
// that no request carries an expired one.
const refreshAhead = 10 * time.Second

// worker owns its slots: no other worker presents their tokens, so every
// outcome is predictable and an unexpected one is an error.
type worker struct {
	st     bench.Store
	grants granter                     // the service's logins and rotations; nil for other targets
	get    func(context.Context) error // opGet; nil without a Redis client
	auth   forwardAuth                 // opAuth; nil but for the service
	bare   func(context.Context) error // opBare; nil but for -target bare
	slots  []slot
	byUser map[string][]int
	rnd    *rand.Rand
	grace  time.Duration
	rec    *recorder
}

// timed runs f, records its latency under op, and returns its error. The
// latency counts from start, which is earlier than now when the worker is
// behind its schedule; the service time counts from when f was called.
func (w *worker) timed(op string, start time.Time, f func() error) error {
	sent := time.Now()
	err := f()
	end := time.Now()
	w.rec.record(op, end.Sub(start), end.Sub(sent), err)
	return err
}

func (w *worker) login(ctx context.Context, i int, start time.Time) error {
	return w.timed(opIssue, start, func() error { return w.issue(ctx, &w.slots[i]) })
}

// issue logs the slot's user in again: a fresh session in the slot.
func (w *worker) issue(ctx context.Context, s *slot) error {
	if w.grants != nil {
		g, err := w.grants.IssueGrant(ctx, s.user, bench.Login)
		if err == nil {
			*s = slot{user: s.user, cur: g.RefreshToken, fresh: true, access: g.AccessToken, accessExp: g.AccessExpiresAt}
		}
		return err
	}
	tok, err := w.st.Issue(ctx, s.user, bench.Login)
	if err == nil {
		*s = slot{user: s.user, cur: tok, fresh: true}
	}
	return err
}

func (w *worker) rotate(ctx context.Context, i int, start time.Time) error {
	s := &w.slots[i]
	return w.timed(opRotate, start, func() error {
		var next string
		var err error
		if w.grants != nil {
			var g bench.Grant
			if g, err = w.grants.RotateGrant(ctx, s.cur, bench.Refresh); err == nil {
				next, s.access, s.accessExp = g.RefreshToken, g.AccessToken, g.AccessExpiresAt
			}
		} else {
			next, _, err = w.st.Rotate(ctx, s.cur, bench.Refresh)
		}
		if err == nil {
			s.older, s.prev, s.cur, s.rotatedAt, s.fresh = s.prev, s.cur, next, time.Now(), false
		}
		return err
	})
}

var errUnexpected = errors.New("unexpected outcome")

// run performs one operation of the mix on a random slot. start is when
// its latency starts (see drive).
func (w *worker) run(ctx context.Context, op string, start time.Time) {
	i := w.rnd.IntN(len(w.slots))
	s := &w.slots[i]
	switch op {
	case opValidate:
		w.timed(op, start, func() error { return w.st.Validate(ctx, s.cur) })
	case opRotate:
		w.rotate(ctx, i, start)
	case opReplay:
		// Only the immediate predecessor, and well within grace.
		if s.fresh || time.Since(s.rotatedAt) > w.grace/2 {
			w.rotate(ctx, i, start)
			return
		}
		w.timed(op, start, func() error {
			got, _, err := w.st.Rotate(ctx, s.prev, bench.Refresh)
			if err == nil && got != s.cur {
				err = fmt.Errorf("%w: a grace replay returned another token", errUnexpected)
			}
			return err
		})
	case opReuse:
		if s.older == "" {
			w.rotate(ctx, i, start)
			return
		}
		err := w.timed(op, start, func() error {
			_, _, err := w.st.Rotate(ctx, s.older, bench.Refresh)
			if errors.Is(err, redisstore.ErrReused) {
				return nil
			}
			return fmt.Errorf("%w: replaying a grandparent gave %v, want reuse detected", errUnexpected, err)
		})
		if err == nil {
			w.login(ctx, i, time.Now())
		}
	case opIssue:
		w.login(ctx, i, start)
	case opGet:
		w.timed(op, start, func() error { return w.get(ctx) })
	case opAuth:
		if time.Until(s.accessExp) < refreshAhead {
			// The client refreshes first (a rotation of its own), then
			// sends the request with its new access token.
			if w.rotate(ctx, i, start) != nil {
				return
			}
			start = time.Now()
		}
		w.timed(op, start, func() error { return w.auth(ctx, s.access, s.user) })
	case opBare, opBareAuth:
		w.timed(op, start, func() error { return w.bare(ctx) })
	case opRefresh:
		w.timed(op, start, func() error {
			g, err := w.grants.RefreshGrant(ctx, s.cur, bench.Refresh)
			if err == nil {
				s.older, s.prev, s.cur, s.rotatedAt, s.fresh = s.prev, s.cur, g.RefreshToken, time.Now(), false
				s.access, s.accessExp = g.AccessToken, g.AccessExpiresAt
			}
			return err
		})
	case opList:
		w.timed(op, start, func() error {
			n, err := w.st.ListSessions(ctx, s.user)
			if err == nil && n < len(w.byUser[s.user]) {
				err = fmt.Errorf("%w: listed %d sessions, the user has at least %d", errUnexpected, n, len(w.byUser[s.user]))
			}
			return err
		})
	case opRevoke:
		if w.timed(op, start, func() error { return w.st.RevokeSession(ctx, s.cur) }) == nil {
			w.login(ctx, i, time.Now())
		}
	case opRevokeAll:
		if w.timed(op, start, func() error { _, err := w.st.RevokeAll(ctx, s.user); return err }) == nil {
			for _, j := range w.byUser[s.user] {
				w.login(ctx, j, time.Now())
			}
		}
	}
}
