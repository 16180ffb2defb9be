package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"
)

// revocation is what one revocation showed.
type revocation struct {
	Kind string `json:"kind"`
	Via  int    `json:"via_instance"`
	// FromMemory: before the call, every instance answered every token
	// 200 and counted no session check from Redis meanwhile.
	FromMemory bool    `json:"from_memory"`
	CallMs     float64 `json:"call_ms"`
	// AllMs is the latest of the instances' RefusedMs, or -1 if one never
	// refused within the timeout.
	AllMs     float64      `json:"all_refused_ms"`
	Instances []pollResult `json:"instances"`
}

// pollResult is what polling one instance after a revocation showed.
type pollResult struct {
	// RefusedMs: from the call's return to the send time of the first
	// refused request of a session (each session has a poller of its own
	// that sends its tokens in turn), the latest over the target's
	// sessions; -1 if some token was never refused within the timeout. An
	// instance forgets a session, not a token: a token admitted after
	// another token of its session was refused is an admission after a
	// refusal.
	RefusedMs float64 `json:"refused_ms"`
	// FirstPollMs: from the call's return to the send time of the first
	// poll (the probe's own delay; the latest over the sessions).
	FirstPollMs float64 `json:"first_poll_ms"`
	// LastOKMs: to the send time of the latest request admitted (200), -1
	// if none was: the instance refused somewhere between LastOKMs and
	// RefusedMs.
	LastOKMs  float64 `json:"last_ok_ms"`
	Polls     int     `json:"polls"`
	MeanGapMs float64 `json:"mean_gap_ms"`
	// OK counts the 200s (on the revoking instance, every one is a late
	// admission: it forgets before its call returns).
	OK                   int `json:"ok"`
	AdmittedAfterWindow  int `json:"admitted_after_window"`
	AdmittedAfterRefusal int `json:"admitted_after_refusal"`
	Other                int `json:"other"` // neither 200 nor 401, or no answer
}

// revokeAndPoll checks that every instance answers t from memory, revokes t
// through via, and polls every instance, one poller per session, until each
// refuses.
func (p *probe) revokeAndPoll(ctx context.Context, t target, via *instance) (revocation, error) {
	r := revocation{Kind: t.kind, Via: via.n}
	_, red0, err := p.checks(ctx)
	if err != nil {
		return r, err
	}
	for _, in := range p.insts {
		for _, s := range t.sessions {
			for _, tok := range s.access {
				st, err := in.auth(ctx, in.control, tok)
				if err == nil && st != http.StatusOK {
					err = fmt.Errorf("before the revocation, instance %d answered %d", in.n, st)
				}
				if err != nil {
					return r, err
				}
			}
		}
	}
	_, red1, err := p.checks(ctx)
	if err != nil {
		return r, err
	}
	r.FromMemory = slices.Equal(red0, red1)

	polls := make([][]pollResult, len(p.insts)) // by instance, by session
	start := make(chan struct{})
	var ret time.Time // written before start is closed
	var wg sync.WaitGroup
	for i, in := range p.insts {
		polls[i] = make([]pollResult, len(t.sessions))
		for k, s := range t.sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if !ret.IsZero() {
					polls[i][k] = p.poll(ctx, in, s.access, ret)
				}
			}()
		}
	}
	t0 := time.Now()
	err = p.revoke(ctx, via, t)
	if err == nil {
		ret = time.Now()
	}
	close(start)
	wg.Wait()
	if err != nil {
		return r, err
	}
	r.CallMs = ms(ret.Sub(t0))
	for _, ps := range polls {
		x := merge(ps)
		r.Instances = append(r.Instances, x)
		if x.RefusedMs < 0 || r.AllMs < 0 {
			r.AllMs = -1
		} else {
			r.AllMs = max(r.AllMs, x.RefusedMs)
		}
	}
	return r, nil
}

// poll sends GET /v1/auth to in with each of a session's access tokens in
// turn, one request every pollEvery (or as soon as the last answer came),
// from ret until every token has been refused and pollFor has passed, or
// timeout has.
func (p *probe) poll(ctx context.Context, in *instance, toks []string, ret time.Time) pollResult {
	r := pollResult{RefusedMs: -1, LastOKMs: -1}
	var refused time.Time           // when the first refusal came back
	seen := make([]bool, len(toks)) // per token: refused once
	remaining := len(toks)
	next := ret
	var firstSend, lastSend time.Time
	for k := 0; ; k++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		i := k % len(toks)
		sent := time.Now()
		st, err := in.auth(ctx, in.control, toks[i])
		recv := time.Now()
		if k == 0 {
			firstSend, r.FirstPollMs = sent, ms(sent.Sub(ret))
		}
		lastSend = sent
		r.Polls++
		switch {
		case err != nil:
			r.Other++
		case st == http.StatusUnauthorized:
			if !seen[i] {
				seen[i] = true
				remaining--
			}
			if refused.IsZero() {
				r.RefusedMs, refused = ms(sent.Sub(ret)), recv
			}
		case st == http.StatusOK:
			r.OK, r.LastOKMs = r.OK+1, ms(sent.Sub(ret))
			if sent.Sub(ret) > p.c.window {
				r.AdmittedAfterWindow++
			}
			if !refused.IsZero() {
				r.AdmittedAfterRefusal++
			}
		default:
			r.Other++
		}
		next = sent.Add(p.c.pollEvery)
		since := recv.Sub(ret)
		if remaining == 0 && since >= p.c.pollFor || since >= p.c.timeout {
			break
		}
	}
	if r.Polls > 1 {
		r.MeanGapMs = ms(lastSend.Sub(firstSend)) / float64(r.Polls-1)
	}
	if remaining > 0 {
		r.RefusedMs = -1
	}
	return r
}

// merge sums the pollers of one instance: it refused when it refused every
// session.
func merge(ps []pollResult) pollResult {
	x := pollResult{LastOKMs: -1}
	var gaps float64
	for _, p := range ps {
		x.FirstPollMs, x.LastOKMs = max(x.FirstPollMs, p.FirstPollMs), max(x.LastOKMs, p.LastOKMs)
		if p.RefusedMs < 0 || x.RefusedMs < 0 {
			x.RefusedMs = -1
		} else {
			x.RefusedMs = max(x.RefusedMs, p.RefusedMs)
		}
		x.Polls += p.Polls
		gaps += p.MeanGapMs * float64(p.Polls)
		x.OK += p.OK
		x.AdmittedAfterWindow += p.AdmittedAfterWindow
		x.AdmittedAfterRefusal += p.AdmittedAfterRefusal
		x.Other += p.Other
	}
	if x.Polls > 0 {
		x.MeanGapMs = gaps / float64(x.Polls)
	}
	return x
}
