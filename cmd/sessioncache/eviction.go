package main

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessioncache/sessioncache/redisstore"
)

// Writes on an evicting Redis. Any maxmemory-policy but noeviction can
// silently delete live sessions, so while Redis has one the service refuses
// the writes that create or extend sessions (login, rotation) with 503
// temporarily_unavailable, reason evicting_policy, and goes on answering
// reads (introspection, listings, forward auth), which change nothing, and
// revocations, which only ever end a session.
// The policy is checked at start, every evictionCheckInterval, and by every
// /readyz probe; SESSIONCACHE_ALLOW_EVICTING_POLICY=true (and the embedded
// miniredis, which has no policy) turns the check off.

// evictionCheckInterval is how often the service checks Redis's
// maxmemory-policy (and its readiness) on its own: a policy fixed in Redis
// lets writes resume within this time.
const evictionCheckInterval = 10 * time.Second

// What the service knows of Redis's maxmemory-policy.
const (
	policyUnknown  int32 = iota // not checked yet, or every check failed
	policySafe                  // noeviction
	policyEvicting              // anything else
)

// policyGate holds the last known policy, and lets a write that finds it
// unknown check it, one check at a time.
type policyGate struct {
	state    atomic.Int32
	mu       sync.Mutex
	checking chan struct{} // closed when the check under way ends; nil if none
}

// checkEvictionPolicy checks Redis's maxmemory-policy and records what it
// learnt; an error that is not about the policy (Redis unavailable) leaves
// the last known policy in force.
func (s *server) checkEvictionPolicy(ctx context.Context) error {
	err := s.store().CheckEvictionPolicy(ctx)
	switch {
	case err == nil:
		s.setPolicy(policySafe)
	case errors.Is(err, redisstore.ErrEvictionPolicy):
		s.setPolicy(policyEvicting)
	}
	return err
}

func (s *server) setPolicy(state int32) {
	switch old := s.policy.state.Swap(state); {
	case old == state:
	case state == policyEvicting:
		s.log.Error("refusing writes: Redis's maxmemory-policy may evict live sessions and revocations; set it to noeviction (writes resume within " +
			evictionCheckInterval.String() + "), or " + envAllowEvicting + "=true to accept the risk")
	case old == policyEvicting:
		s.log.Info("Redis's maxmemory-policy is noeviction again: writes resume")
	}
}

// writable tells whether a write may go to Redis. Without a known policy
// (at start, or after checks failed) it checks first; a write that cannot
// learn the policy is answered as Redis being unavailable.
func (s *server) writable(ctx context.Context) (reply, bool) {
	if !s.checkEvict {
		return reply{}, true
	}
	state := s.policy.state.Load()
	if state == policyUnknown {
		state = s.learnPolicy(ctx)
	}
	switch state {
	case policySafe:
		return reply{}, true
	case policyEvicting:
		return reply{status: http.StatusServiceUnavailable, outcome: "evicting_policy",
			body: errorBody{Error: "temporarily_unavailable", Reason: "evicting_policy",
				ErrorDescription: "Redis may evict keys (maxmemory-policy is not noeviction): writes are refused until it is fixed"},
			header: http.Header{"Retry-After": {strconv.Itoa(int(evictionCheckInterval.Seconds()))}}}, false
	}
	if ctx.Err() != nil {
		return failure(ctx.Err()), false
	}
	return failure(errors.New("could not check Redis's maxmemory-policy")), false
}

// learnPolicy checks the policy, or waits for the check another write has
// under way, and returns the policy then known.
func (s *server) learnPolicy(ctx context.Context) int32 {
	g := &s.policy
	g.mu.Lock()
	if ch := g.checking; ch != nil {
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		return g.state.Load()
	}
	ch := make(chan struct{})
	g.checking = ch
	g.mu.Unlock()
	err := s.checkEvictionPolicy(ctx)
	g.mu.Lock()
	g.checking = nil
	g.mu.Unlock()
	close(ch)
	if err != nil && !errors.Is(err, redisstore.ErrEvictionPolicy) {
		s.log.Warn("cannot check Redis's maxmemory-policy before a write", "error", err.Error())
	}
	return g.state.Load()
}

// watch checks readiness (and with it the eviction policy) at once, then,
// if the policy is checked, every interval until ctx ends, logging changes.
func (s *server) watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		reason, err := s.checkReady(ctx)
		if ctx.Err() != nil {
			return
		}
		s.noteReadiness(reason, err)
		if !s.checkEvict {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
