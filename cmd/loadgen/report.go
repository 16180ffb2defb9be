package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/sessioncache/sessioncache/bench"
)

// recorder keeps one worker's latencies per operation. Only its worker
// writes the histograms; the counters are read by the progress line.
type recorder struct {
	hists  map[string]*bench.Histogram // from when each call was due
	svc    map[string]*bench.Histogram // from when each call was sent
	errs   map[string]int64
	done   *atomic.Int64
	failed *atomic.Int64
	first  *firstErrors
}

// firstErrors keeps the first few distinct errors, for the report.
type firstErrors struct {
	mu   sync.Mutex
	seen map[string]bool
	list []string
}

func (f *firstErrors) add(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	msg := op + ": " + err.Error()
	if len(f.list) < 10 && !f.seen[msg] {
		f.seen[msg] = true
		f.list = append(f.list, msg)
	}
}

func (r *recorder) record(op string, d, svc time.Duration, err error) {
	h, hs := r.hists[op], r.svc[op]
	if h == nil {
		h, hs = new(bench.Histogram), new(bench.Histogram)
		r.hists[op], r.svc[op] = h, hs
	}
	h.Record(d)
	hs.Record(svc)
	r.done.Add(1)
	if err != nil {
		r.errs[op]++
		r.failed.Add(1)
		r.first.add(op, err)
	}
}

// Report is the result of a run, as -json prints it.
type Report struct {
	Target   string              `json:"target"`
	Mix      string              `json:"mix"`
	Workers  int                 `json:"workers"`
	Rate     float64             `json:"target_rate_per_s,omitempty"`
	Sessions int                 `json:"sessions"`
	Seconds  float64             `json:"seconds"`
	Total    OpReport            `json:"total"`
	Ops      map[string]OpReport `json:"ops"`
	// Service is Total counted from when each call was sent: with a target
	// rate, the difference to Total is the time calls waited behind a slow
	// call of their worker.
	Service OpReport `json:"service"`
	// Server is the CPU time of the -server-pid process over the run.
	Server *ServerCPU `json:"server_cpu,omitempty"`
	// RedisCommands are the calls of each command the -redis-stats Redis
	// served during the timed part (INFO commandstats), whoever sent them.
	RedisCommands map[string]int64 `json:"redis_commands,omitempty"`
	Errors        []string         `json:"first_errors,omitempty"`
	StartedAt     time.Time        `json:"started_at"`
}

// ServerCPU is the CPU time (user and system) a server process used during
// the timed part of a run, from /proc/<pid>/stat (10 ms resolution).
type ServerCPU struct {
	PID     int     `json:"pid"`
	Seconds float64 `json:"seconds"`
	// PerOp is Seconds over the operations completed, in microseconds:
	// the server's CPU per request.
	PerOp float64 `json:"us_per_op"`
}

// OpReport is the throughput and latency of one operation. Latencies are
// in microseconds; with a target rate, a call delayed by a slow call before
// it counts from when it was due, so that a stalled server shows in them.
type OpReport struct {
	Count  uint64  `json:"count"`
	Errors int64   `json:"errors"`
	PerSec float64 `json:"ops_per_s"`
	Mean   float64 `json:"mean_us"`
	P50    float64 `json:"p50_us"`
	P95    float64 `json:"p95_us"`
	P99    float64 `json:"p99_us"`
	P999   float64 `json:"p999_us"`
	Max    float64 `json:"max_us"`
}

func opReport(h *bench.Histogram, errs int64, secs float64) OpReport {
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	return OpReport{
		Count: h.Count(), Errors: errs, PerSec: float64(h.Count()) / secs, Mean: us(h.Mean()),
		P50: us(h.Quantile(0.5)), P95: us(h.Quantile(0.95)), P99: us(h.Quantile(0.99)),
		P999: us(h.Quantile(0.999)), Max: us(h.Max()),
	}
}

// buildReport merges the workers' recorders.
func buildReport(rep Report, recs []*recorder, first *firstErrors) Report {
	all, svc := new(bench.Histogram), new(bench.Histogram)
	byOp := map[string]*bench.Histogram{}
	errs := map[string]int64{}
	var totalErrs int64
	for _, r := range recs {
		for op, h := range r.hists {
			if byOp[op] == nil {
				byOp[op] = new(bench.Histogram)
			}
			byOp[op].Merge(h)
			all.Merge(h)
			svc.Merge(r.svc[op])
		}
		for op, n := range r.errs {
			errs[op] += n
			totalErrs += n
		}
	}
	rep.Ops = map[string]OpReport{}
	for op, h := range byOp {
		rep.Ops[op] = opReport(h, errs[op], rep.Seconds)
	}
	rep.Total = opReport(all, totalErrs, rep.Seconds)
	rep.Service = opReport(svc, totalErrs, rep.Seconds)
	rep.Errors = first.list
	return rep
}

func (rep Report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

func (rep Report) writeText(w io.Writer) {
	fmt.Fprintf(w, "target %s, mix %s, %d workers, %d sessions, %.1fs", rep.Target, rep.Mix, rep.Workers, rep.Sessions, rep.Seconds)
	if rep.Rate > 0 {
		fmt.Fprintf(w, ", target rate %.0f/s (a call delayed by a slow one before it counts from when it was due)", rep.Rate)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tcount\terrors\tops/s\tmean\tp50\tp95\tp99\tp99.9\tmax\t")
	ops := make([]string, 0, len(rep.Ops))
	for op := range rep.Ops {
		ops = append(ops, op)
	}
	sort.Slice(ops, func(i, j int) bool { return rep.Ops[ops[i]].Count > rep.Ops[ops[j]].Count })
	row := func(name string, o OpReport) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, o.Count, o.Errors, o.PerSec,
			fmtUS(o.Mean), fmtUS(o.P50), fmtUS(o.P95), fmtUS(o.P99), fmtUS(o.P999), fmtUS(o.Max))
	}
	for _, op := range ops {
		row(op, rep.Ops[op])
	}
	row("all", rep.Total)
	if rep.Rate > 0 {
		row("all, from send", rep.Service)
	}
	tw.Flush()
	if rep.Server != nil {
		fmt.Fprintf(w, "server (pid %d) CPU: %.2fs, %.1fus per operation\n", rep.Server.PID, rep.Server.Seconds, rep.Server.PerOp)
	}
	for _, e := range rep.Errors {
		fmt.Fprintln(w, "error:", e)
	}
}

func fmtUS(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", us/1e3)
	}
	return fmt.Sprintf("%.0fus", us)
}
