package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessioncache/sessioncache/bench"
)

// load sends GET /v1/auth at a fixed rate over a pool of live sessions,
// request k to instance k mod n with token k/n mod len(tokens), on its
// schedule (start + k/rate) whatever the answers take: a request that
// starts late counts as late, and the achieved rate says if the schedule
// held.
type load struct {
	insts    []*instance
	tokens   []string
	interval time.Duration
	start    time.Time
	next     atomic.Int64
	done     atomic.Int64 // requests answered
	stop     atomic.Bool
	wg       sync.WaitGroup
	workers  []*loadWorker
}

type loadWorker struct {
	ok    []uint64          // 200s by instance
	other map[string]uint64 // "instance 2: 503", "instance 1: error"
	first []string          // the first errors, for the report
	late  uint64            // sent more than 5 ms after its slot
	hist  bench.Histogram
}

func startLoad(insts []*instance, tokens []string, rate float64, workers int) *load {
	l := &load{insts: insts, tokens: tokens, interval: time.Duration(float64(time.Second) / rate), start: time.Now()}
	for range workers {
		w := &loadWorker{ok: make([]uint64, len(insts)), other: map[string]uint64{}}
		l.workers = append(l.workers, w)
		l.wg.Add(1)
		go l.run(w)
	}
	return l
}

func (l *load) run(w *loadWorker) {
	defer l.wg.Done()
	ctx := context.Background()
	n := int64(len(l.insts))
	for !l.stop.Load() {
		k := l.next.Add(1) - 1
		slot := l.start.Add(time.Duration(k) * l.interval)
		if d := time.Until(slot); d > 0 {
			time.Sleep(d)
		} else if -d > 5*time.Millisecond {
			w.late++
		}
		in := l.insts[k%n]
		t0 := time.Now()
		st, err := in.auth(ctx, in.load, l.tokens[(k/n)%int64(len(l.tokens))])
		w.hist.Record(time.Since(t0))
		l.done.Add(1)
		switch {
		case err != nil:
			w.other[fmt.Sprintf("instance %d: error", in.n)]++
			if len(w.first) < 3 {
				w.first = append(w.first, err.Error())
			}
		case st == http.StatusOK:
			w.ok[in.n-1]++
		default:
			w.other[fmt.Sprintf("instance %d: %d", in.n, st)]++
		}
	}
}

// finish stops the load and sums what the workers saw.
func (l *load) finish() loadReport {
	l.stop.Store(true)
	l.wg.Wait()
	elapsed := time.Since(l.start)
	r := loadReport{Asked: 1 / l.interval.Seconds(), Seconds: elapsed.Seconds(), Sessions: len(l.tokens),
		OKByInstance: make([]uint64, len(l.insts)), Refused: map[string]uint64{}}
	var h bench.Histogram
	for _, w := range l.workers {
		for i, n := range w.ok {
			r.OKByInstance[i] += n
			r.OK += n
		}
		for k, n := range w.other {
			r.Refused[k] += n
			r.NotOK += n
		}
		r.Late += w.late
		if len(r.FirstErrors) < 3 {
			r.FirstErrors = append(r.FirstErrors, w.first...)
		}
		h.Merge(&w.hist)
	}
	r.Requests = r.OK + r.NotOK
	r.Achieved = float64(r.Requests) / elapsed.Seconds()
	r.P50ms, r.P99ms, r.MaxMs = ms(h.Quantile(0.5)), ms(h.Quantile(0.99)), ms(h.Max())
	return r
}

// loadReport is what the background load did.
type loadReport struct {
	Asked        float64           `json:"asked_per_s"`
	Achieved     float64           `json:"achieved_per_s"`
	Seconds      float64           `json:"seconds"`
	Sessions     int               `json:"sessions"`
	Requests     uint64            `json:"requests"`
	OK           uint64            `json:"ok"`
	OKByInstance []uint64          `json:"ok_by_instance"`
	NotOK        uint64            `json:"not_ok"`
	Refused      map[string]uint64 `json:"not_ok_by_instance_and_status"`
	FirstErrors  []string          `json:"first_errors,omitempty"`
	Late         uint64            `json:"started_over_5ms_late"`
	P50ms        float64           `json:"p50_ms"`
	P99ms        float64           `json:"p99_ms"`
	MaxMs        float64           `json:"max_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
