package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/redisstore"
)

// workload keeps sessions busy while a test hurts Redis: each worker logs
// in, rotates its token over and over and validates it, like a client that
// refreshes. After an infrastructure error it presents the same token
// again, as a real client would retry: within the grace window that must
// give the successor whether or not Redis ran the failed call.
type workload struct {
	st      store
	opTO    time.Duration
	stop    chan struct{}
	wg      sync.WaitGroup
	ok      atomic.Int64
	n       counter
	mu      sync.Mutex
	samples []sample
	current []string // each worker's current token, at the end
	pending []bool   // whether that token's last rotation failed
}

type sample struct {
	op         string
	start, end time.Time
	class      string // errClass of the outcome
}

// startWorkload starts workers goroutines on st; each call gets opTimeout.
func startWorkload(t testing.TB, st store, workers int, opTimeout time.Duration) *workload {
	w := &workload{st: st, opTO: opTimeout, stop: make(chan struct{}), current: make([]string, workers), pending: make([]bool, workers)}
	user := fmt.Sprintf("load-%d", time.Now().UnixNano())
	for i := 0; i < workers; i++ {
		w.wg.Add(1)
		go w.run(i, fmt.Sprintf("%s-%d", user, i))
	}
	t.Cleanup(w.halt)
	return w
}

func (w *workload) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

func (w *workload) record(op string, start time.Time, err error) {
	s := sample{op: op, start: start, end: time.Now(), class: errClass(err)}
	w.mu.Lock()
	w.samples = append(w.samples, s)
	w.mu.Unlock()
	w.n.add(op+"_"+s.class, 1)
	if err == nil {
		w.ok.Add(1)
	}
}

func (w *workload) run(id int, user string) {
	defer w.wg.Done()
	tok, retrying := "", false
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			w.mu.Lock()
			w.current[id], w.pending[id] = tok, retrying
			w.mu.Unlock()
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), w.opTO)
		start := time.Now()
		if tok == "" {
			g, err := w.st.Issue(ctx, user, redisstore.Client{DeviceID: "d"})
			w.record("issue", start, err)
			if err == nil {
				tok = g.Token
				w.n.add("sessions", 1)
			}
			cancel()
			continue
		}
		if i%4 == 3 && !retrying {
			_, err := w.st.Validate(ctx, tok)
			w.record("validate", start, err)
			if errors.Is(err, redisstore.ErrUnknown) {
				w.n.add("sessions_lost", 1)
				tok = ""
			}
			cancel()
			continue
		}
		g, err := w.st.Rotate(ctx, tok, redisstore.Client{DeviceID: "d"})
		w.record("rotate", start, err)
		cancel()
		retrying = false
		switch {
		case err == nil:
			tok = g.Token
		case errors.Is(err, redisstore.ErrUnknown):
			// Redis has no trace of the session: it was lost.
			w.n.add("sessions_lost", 1)
			tok = ""
		case errors.Is(err, redisstore.ErrReused), errors.Is(err, redisstore.ErrRevoked):
			w.n.add("sessions_revoked", 1)
			tok = ""
		default:
			// An infrastructure error: retry with the same token.
			retrying = true
		}
	}
}

// waitOK waits until n more calls than now have succeeded.
func (w *workload) waitOK(t testing.TB, n int64, timeout time.Duration) {
	t.Helper()
	target := w.ok.Load() + n
	waitFor(t, fmt.Sprintf("%d successful calls", n), timeout, func() bool { return w.ok.Load() >= target })
}

// window summarises the calls around a fault at t0.
type window struct {
	calls, errors   int
	errorsStarted   int           // errors of calls that started at or after `after`
	firstOK         time.Duration // first success of a call started after t0
	lastError       time.Duration // end of the last failed call, after t0
	maxLatency      time.Duration
	classes         counter
	errorsByStartOp counter
}

// around summarises every call that ended after t0; errorsStarted counts
// the failed calls that started at or after `after` (zero time: never).
func (w *workload) around(t0, after time.Time) *window {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := &window{}
	r.firstOK = -1
	for _, s := range w.samples {
		if s.end.Before(t0) {
			continue
		}
		r.calls++
		if d := s.end.Sub(s.start); d > r.maxLatency {
			r.maxLatency = d
		}
		if s.class == "ok" {
			if !s.start.Before(t0) && (r.firstOK < 0 || s.end.Sub(t0) < r.firstOK) {
				r.firstOK = s.end.Sub(t0)
			}
			continue
		}
		r.errors++
		r.classes.add(s.op+"_"+s.class, 1)
		if !after.IsZero() && !s.start.Before(after) {
			r.errorsStarted++
			r.errorsByStartOp.add(s.op+"_"+s.class, 1)
		}
		if d := s.end.Sub(t0); d > r.lastError {
			r.lastError = d
		}
	}
	return r
}

// finish stops the workload and checks that every worker's session is
// still alive, retrying calls that fail for up to timeout. It returns how
// many sessions ended alive and how many were lost.
func (w *workload) finish(t testing.TB, timeout time.Duration) (alive, lost int) {
	t.Helper()
	w.halt()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for i, tok := range w.current {
		if tok == "" {
			continue
		}
		for {
			var err error
			if w.pending[i] {
				// The last rotation failed: present the token again.
				var g redisstore.Grant
				if g, err = w.st.Rotate(ctx, tok, redisstore.Client{DeviceID: "d"}); err == nil {
					tok, w.pending[i] = g.Token, false
				}
			}
			if err == nil {
				_, err = w.st.Validate(ctx, tok)
			}
			if err == nil {
				alive++
				break
			}
			if errors.Is(err, redisstore.ErrUnknown) || errors.Is(err, redisstore.ErrRevoked) || ctx.Err() != nil {
				t.Logf("session lost at the end: %v", err)
				lost++
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return alive, lost
}
