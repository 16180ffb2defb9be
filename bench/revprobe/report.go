package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// report is the probe's result; -json prints it as it is.
type report struct {
	Commit          string        `json:"commit,omitempty"`
	Redis           string        `json:"redis"`
	Instances       int           `json:"instances"`
	Settings        settings      `json:"settings"`
	LoadStart       string        `json:"load_average_start"`
	LoadEnd         string        `json:"load_average_end"`
	Background      loadReport    `json:"background"`
	Quiet           stretchReport `json:"quiet_stretch"`
	RevocationPhase stretchReport `json:"revocation_phase"`
	Summary         summary       `json:"summary"`
	Revocations     []revocation  `json:"revocations"`
}

type settings struct {
	Rate        float64  `json:"rate_per_s"`
	Workers     int      `json:"workers"`
	Sessions    int      `json:"sessions"`
	Quiet       string   `json:"quiet"`
	Revocations int      `json:"revocations"`
	Window      string   `json:"window"`
	PollEvery   string   `json:"poll_every"`
	PollFor     string   `json:"poll_for"`
	Timeout     string   `json:"timeout"`
	Env         []string `json:"env,omitempty"`
}

func settingsOf(c config) settings {
	return settings{Rate: c.rate, Workers: c.workers, Sessions: c.sessions, Quiet: c.quiet.String(), Revocations: c.revocations,
		Window: c.window.String(), PollEvery: c.pollEvery.String(), PollFor: c.pollFor.String(), Timeout: c.timeout.String(), Env: c.env}
}

// dist is a distribution of times in milliseconds (nearest rank).
type dist struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func distOf(v []float64) dist {
	if len(v) == 0 {
		return dist{}
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	q := func(p float64) float64 { return s[max(int(math.Ceil(p*float64(len(s))))-1, 0)] }
	return dist{N: len(s), P50: q(0.5), P90: q(0.9), P99: q(0.99), Max: s[len(s)-1]}
}

// summary is the revocations' figures. A time never reached (an instance
// that still admitted the session at the timeout) counts as the timeout.
type summary struct {
	All        dist            `json:"every_instance_refuses"`
	ByKind     map[string]dist `json:"by_kind"`
	ByInstance []dist          `json:"by_instance"`
	Revoking   dist            `json:"revoking_instance"`
	Others     dist            `json:"other_instances"`
	Call       dist            `json:"revoking_call"`
	// LastOK: per revocation, the latest send time of a request any
	// instance admitted after the call returned (0 if none): every
	// instance refused somewhere between it and All.
	LastOK dist `json:"last_admitted"`
	// FirstPoll: the probe's own delay from the call's return to its
	// first poll, over every instance and revocation.
	FirstPoll dist `json:"first_poll"`
	// RefusedAtOnce counts the other instances (not the revoking one)
	// that admitted no request after the call returned.
	RefusedAtOnce int `json:"other_instances_refused_at_first_poll"`

	NeverRefused         int     `json:"never_refused"`
	AdmittedAfterWindow  int     `json:"admitted_after_window"`
	AdmittedAfterRefusal int     `json:"admitted_after_refusal"`
	RevokingAdmitted     int     `json:"revoking_instance_admitted"`
	OtherAnswers         int     `json:"other_answers"`
	NotFromMemory        int     `json:"not_confirmed_from_memory"`
	Polls                int     `json:"polls"`
	MeanGapMs            float64 `json:"mean_poll_gap_ms"`
	GoalMet              bool    `json:"goal_met"`
}

func summarize(rs []revocation, instances int, window, timeout time.Duration) summary {
	s := summary{ByKind: map[string]dist{}}
	var all, revoking, others, call, lastOK, firstPoll []float64
	byKind := map[string][]float64{}
	byInst := make([][]float64, instances)
	var gapSum float64
	for _, r := range rs {
		all = append(all, r.AllMs)
		byKind[r.Kind] = append(byKind[r.Kind], r.AllMs)
		call = append(call, r.CallMs)
		latest := 0.0
		if !r.FromMemory {
			s.NotFromMemory++
		}
		for i, x := range r.Instances {
			byInst[i] = append(byInst[i], x.RefusedMs)
			if i+1 == r.Via {
				revoking = append(revoking, x.RefusedMs)
				s.RevokingAdmitted += x.OK
			} else {
				others = append(others, x.RefusedMs)
				if x.OK == 0 {
					s.RefusedAtOnce++
				}
			}
			latest = max(latest, x.LastOKMs)
			firstPoll = append(firstPoll, x.FirstPollMs)
			if x.RefusedMs < 0 {
				s.NeverRefused++
			}
			s.AdmittedAfterWindow += x.AdmittedAfterWindow
			s.AdmittedAfterRefusal += x.AdmittedAfterRefusal
			s.OtherAnswers += x.Other
			s.Polls += x.Polls
			gapSum += x.MeanGapMs * float64(x.Polls)
		}
		lastOK = append(lastOK, latest)
	}
	never := func(v []float64) []float64 {
		for i, x := range v {
			if x < 0 {
				v[i] = ms(timeout)
			}
		}
		return v
	}
	s.All, s.Revoking, s.Others, s.Call = distOf(never(all)), distOf(never(revoking)), distOf(never(others)), distOf(call)
	s.LastOK, s.FirstPoll = distOf(lastOK), distOf(firstPoll)
	for k, v := range byKind {
		s.ByKind[k] = distOf(never(v))
	}
	for _, v := range byInst {
		s.ByInstance = append(s.ByInstance, distOf(never(v)))
	}
	if s.Polls > 0 {
		s.MeanGapMs = gapSum / float64(s.Polls)
	}
	s.GoalMet = len(rs) > 0 && s.NeverRefused == 0 && s.All.P99 <= ms(window) && s.AdmittedAfterWindow == 0 && s.AdmittedAfterRefusal == 0
	return s
}

func (rep *report) print(w io.Writer) {
	st := rep.Settings
	fmt.Fprintf(w, "revprobe: %d instances of cmd/sessioncache", rep.Instances)
	if rep.Commit != "" {
		fmt.Fprintf(w, " at %s", rep.Commit)
	}
	fmt.Fprintf(w, "; %s\nload average %s at the start, %s at the end\n", rep.Redis, rep.LoadStart, rep.LoadEnd)
	if len(st.Env) > 0 {
		fmt.Fprintf(w, "instances' extra settings: %s\n", strings.Join(st.Env, " "))
	}
	b := rep.Background
	fmt.Fprintf(w, "\nbackground forward auth: %.0f/s asked, %.0f/s achieved over %.1f s (%d requests, %d sessions, %d started over 5 ms late); latency p50 %.2f ms, p99 %.2f ms, max %.1f ms\n",
		b.Asked, b.Achieved, b.Seconds, b.Requests, b.Sessions, b.Late, b.P50ms, b.P99ms, b.MaxMs)
	fmt.Fprintf(w, "  200 by instance: %s; anything else: %s\n", joinInts(b.OKByInstance), mapText(b.Refused, "none"))
	for _, e := range b.FirstErrors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}

	printStretch := func(name string, s stretchReport) {
		fmt.Fprintf(w, "\n%s (%.1f s, %d background requests):\n", name, s.Seconds, s.LoadRequests)
		fmt.Fprintf(w, "  Redis commands: %d data, %d heartbeat PINGs, %d housekeeping\n", s.Data, s.Heartbeat, s.Housekeeping)
		fmt.Fprintf(w, "  INFO commandstats deltas: %s\n", mapText(s.Commands, "none"))
		fmt.Fprintf(w, "  session checks by instance, from memory: %s; from Redis: %s\n", joinInts(s.FromMemory), joinInts(s.FromRedis))
	}
	printStretch("quiet stretch, forward auth of live sessions only", rep.Quiet)
	printStretch("revocation phase, load and revocations", rep.RevocationPhase)

	s := rep.Summary
	kinds := map[string]int{}
	for _, r := range rep.Revocations {
		kinds[r.Kind]++
	}
	fmt.Fprintf(w, "\n%d revocations (%s), each through the next instance; %d of them answered by every instance from memory just before\n",
		len(rep.Revocations), mapText(kinds, "none"), len(rep.Revocations)-s.NotFromMemory)
	fmt.Fprintf(w, "polls: %d, one instance polled every %.2f ms on average (asked: %s); polled for %s after each call (longer until refused, up to %s)\n\n",
		s.Polls, s.MeanGapMs, st.PollEvery, st.PollFor, st.Timeout)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "time from the revoking call's return to the first refused request, ms\t%5s %8s %8s %8s %8s\n", "n", "p50", "p90", "p99", "max")
	row := func(name string, d dist) {
		fmt.Fprintf(tw, "%s\t%5d %8.2f %8.2f %8.2f %8.2f\n", name, d.N, d.P50, d.P90, d.P99, d.Max)
	}
	row("every instance refuses (the latest of the instances)", s.All)
	for _, k := range kinds2(s.ByKind) {
		row("  "+k, s.ByKind[k])
	}
	for i, d := range s.ByInstance {
		row(fmt.Sprintf("instance %d", i+1), d)
	}
	row("the revoking instance", s.Revoking)
	row("the other instances", s.Others)
	row("the latest request admitted after the call (a lower bound)", s.LastOK)
	row("the probe's first poll after the call (its own delay)", s.FirstPoll)
	row("the revoking call itself (its duration)", s.Call)
	tw.Flush()
	fmt.Fprintf(w, "\nthe other instances admitted no request after the call returned in %d of %d cases\n", s.RefusedAtOnce, s.Others.N)
	fmt.Fprintf(w, "admitted after the %s window: %d; admitted after a refusal on the same instance: %d; never refused within %s: %d; 200s from the revoking instance after its call returned: %d; other answers: %d\n",
		st.Window, s.AdmittedAfterWindow, s.AdmittedAfterRefusal, st.Timeout, s.NeverRefused, s.RevokingAdmitted, s.OtherAnswers)
	verdict := "not met"
	if s.GoalMet {
		verdict = "met"
	}
	fmt.Fprintf(w, "goal (p99 ≤ %s until every instance refuses, 0 admitted after it): p99 %s ms, %d admitted: %s\n",
		st.Window, fmt.Sprintf("%.2f", s.All.P99), s.AdmittedAfterWindow+s.AdmittedAfterRefusal, verdict)
}

func joinInts[T int64 | uint64](v []T) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

func mapText[T int | int64 | uint64](m map[string]T, empty string) string {
	if len(m) == 0 {
		return empty
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(keys, ", ")
}

// kinds2 lists the kinds of m in the order they take turns.
func kinds2(m map[string]dist) []string {
	var out []string
	for _, k := range kinds {
		if _, ok := m[k]; ok {
			out = append(out, k)
		}
	}
	return out
}
