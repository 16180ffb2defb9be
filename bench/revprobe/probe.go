package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/sessioncache/sessioncache/bench"
)

// probe runs the measurement on running instances.
type probe struct {
	c     config
	insts []*instance
	rd    *redisSetup
	log   io.Writer
	runID string
}

// The kinds of revocation, in the order they take turns.
var kinds = []string{"logout", "logout-all", "reuse"}

// A target is what one revocation ends: a user's session (two for
// logout-all) and every access token issued to it.
type target struct {
	kind     string
	user     string
	sessions []session
	replay   string // reuse: the refresh token replayed
}

type session struct {
	id     string
	access []string
}

func (p *probe) measure(ctx context.Context, rep *report) error {
	n := len(p.insts)
	fmt.Fprintf(p.log, "revprobe: logging in %d background sessions and %d targets\n", p.c.sessions, p.c.revocations)
	bg := make([]string, p.c.sessions)
	if err := bench.Parallel(len(bg), func(i int) error {
		g, err := p.insts[i%n].login(ctx, fmt.Sprintf("revprobe-%s-bg-%d", p.runID, i))
		bg[i] = g.AccessToken
		return err
	}); err != nil {
		return err
	}
	targets := make([]target, p.c.revocations)
	if err := bench.Parallel(len(targets), func(i int) error {
		var err error
		targets[i], err = p.prepare(ctx, i)
		return err
	}); err != nil {
		return err
	}

	// Every instance answers every token twice: the first answer comes
	// from Redis and is remembered, the second from memory.
	tokens := append([]string(nil), bg...)
	for _, t := range targets {
		for _, s := range t.sessions {
			tokens = append(tokens, s.access...)
		}
	}
	fmt.Fprintf(p.log, "revprobe: warming %d access tokens on %d instances\n", len(tokens), n)
	for range 2 {
		if err := bench.Parallel(len(tokens)*n, func(j int) error {
			in := p.insts[j%n]
			st, err := in.auth(ctx, in.control, tokens[j/n])
			if err == nil && st != http.StatusOK {
				err = fmt.Errorf("warming: GET /v1/auth on instance %d answered %d for a live session", in.n, st)
			}
			return err
		}); err != nil {
			return err
		}
	}

	fmt.Fprintf(p.log, "revprobe: background load %g/s; quiet stretch of %s\n", p.c.rate, p.c.quiet)
	l := startLoad(p.insts, bg, p.c.rate, p.c.workers)
	defer func() {
		if !l.stop.Load() {
			l.finish()
		}
	}()
	time.Sleep(min(time.Second, p.c.quiet)) // the load's connections open
	var err error
	if rep.Quiet, err = p.stretch(ctx, l, func() error { time.Sleep(p.c.quiet); return nil }); err != nil {
		return err
	}

	fmt.Fprintf(p.log, "revprobe: %d revocations\n", len(targets))
	rep.RevocationPhase, err = p.stretch(ctx, l, func() error {
		for i, t := range targets {
			via := p.insts[(i/len(kinds))%n]
			r, err := p.revokeAndPoll(ctx, t, via)
			if err != nil {
				return fmt.Errorf("revocation %d (%s through instance %d): %w", i+1, t.kind, via.n, err)
			}
			rep.Revocations = append(rep.Revocations, r)
		}
		return nil
	})
	if err != nil {
		return err
	}
	rep.Background = l.finish()
	rep.Summary = summarize(rep.Revocations, n, p.c.window, p.c.timeout)
	return nil
}

// prepare logs in target i: its kind takes turns, and a reuse target has
// refreshed twice, so that it holds three access tokens and its first
// refresh token is two rotations old (never in grace).
func (p *probe) prepare(ctx context.Context, i int) (target, error) {
	n := len(p.insts)
	t := target{kind: kinds[i%len(kinds)], user: fmt.Sprintf("revprobe-%s-t-%d", p.runID, i)}
	logins := 1
	if t.kind == "logout-all" {
		logins = 2
	}
	for k := range logins {
		g, err := p.insts[(i+k)%n].login(ctx, t.user)
		if err != nil {
			return t, err
		}
		s := session{id: g.SessionID, access: []string{g.AccessToken}}
		if t.kind == "reuse" {
			t.replay = g.RefreshToken
			rt := g.RefreshToken
			for r := range 2 {
				in := p.insts[(i+1+r)%n]
				st, g, err := in.refresh(ctx, rt)
				if err == nil && (st != http.StatusOK || g.AccessToken == "") {
					err = fmt.Errorf("refresh on instance %d: %d %s %s", in.n, st, g.Error, g.Reason)
				}
				if err != nil {
					return t, err
				}
				s.access, rt = append(s.access, g.AccessToken), g.RefreshToken
			}
		}
		t.sessions = append(t.sessions, s)
	}
	return t, nil
}

// revoke ends t through in, and checks the answer.
func (p *probe) revoke(ctx context.Context, in *instance, t target) error {
	path := "/v1/users/" + url.PathEscape(t.user) + "/sessions"
	var out struct {
		Revoked int    `json:"revoked"`
		Error   string `json:"error"`
		Reason  string `json:"reason"`
	}
	switch t.kind {
	case "logout":
		st, err := in.call(ctx, http.MethodDelete, path+"/"+url.PathEscape(t.sessions[0].id), "", false, &out)
		if err == nil && (st != http.StatusOK || out.Revoked != 1) {
			err = fmt.Errorf("DELETE a session: %d, revoked %d, %s %s", st, out.Revoked, out.Error, out.Reason)
		}
		return err
	case "logout-all":
		st, err := in.call(ctx, http.MethodDelete, path, "", false, &out)
		if err == nil && (st != http.StatusOK || out.Revoked != len(t.sessions)) {
			err = fmt.Errorf("DELETE every session: %d, revoked %d of %d, %s %s", st, out.Revoked, len(t.sessions), out.Error, out.Reason)
		}
		return err
	}
	st, g, err := in.refresh(ctx, t.replay)
	if err == nil && (st != http.StatusBadRequest || g.Error != "invalid_grant" || g.Reason != "reused") {
		err = fmt.Errorf("replayed refresh token: %d %s %s, want 400 invalid_grant reused", st, g.Error, g.Reason)
	}
	return err
}

// stretch runs fn and reports what Redis and the instances did meanwhile.
func (p *probe) stretch(ctx context.Context, l *load, fn func() error) (stretchReport, error) {
	var r stretchReport
	cmd0, err := p.rd.commandStats(ctx)
	if err != nil {
		return r, err
	}
	mem0, red0, err := p.checks(ctx)
	if err != nil {
		return r, err
	}
	done0, t0 := l.done.Load(), time.Now()
	if err := fn(); err != nil {
		return r, err
	}
	r.Seconds, r.LoadRequests = time.Since(t0).Seconds(), l.done.Load()-done0
	mem1, red1, err := p.checks(ctx)
	if err != nil {
		return r, err
	}
	cmd1, err := p.rd.commandStats(ctx)
	if err != nil {
		return r, err
	}
	r.Commands = map[string]int64{}
	for name, calls := range cmd1 {
		d := calls - cmd0[name]
		if d == 0 {
			continue
		}
		r.Commands[name] = d
		switch commandKind(name) {
		case "heartbeat":
			r.Heartbeat += d
		case "housekeeping":
			r.Housekeeping += d
		default:
			r.Data += d
		}
	}
	for i := range p.insts {
		r.FromMemory = append(r.FromMemory, int64(mem1[i]-mem0[i]))
		r.FromRedis = append(r.FromRedis, int64(red1[i]-red0[i]))
	}
	return r, nil
}

// checks reads every instance's session checks, from memory and from
// Redis.
func (p *probe) checks(ctx context.Context) (memory, fromRedis []float64, err error) {
	for _, in := range p.insts {
		m, r, err := in.checks(ctx)
		if err != nil {
			return nil, nil, err
		}
		memory, fromRedis = append(memory, m), append(fromRedis, r)
	}
	return memory, fromRedis, nil
}

// stretchReport is what happened over a stretch of the run.
type stretchReport struct {
	Seconds      float64          `json:"seconds"`
	LoadRequests int64            `json:"background_requests"`
	Commands     map[string]int64 `json:"redis_commands"`
	Data         int64            `json:"data_commands"`
	Heartbeat    int64            `json:"heartbeat_pings"`
	Housekeeping int64            `json:"housekeeping_commands"`
	FromMemory   []int64          `json:"session_checks_from_memory_by_instance"`
	FromRedis    []int64          `json:"session_checks_from_redis_by_instance"`
}
