package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Progress display of long-running commands (issue 15). On a terminal a
// run longer than progressAfter redraws one status line; elsewhere (a pipe,
// a log, CI) it prints a plain line every progressEvery. Either way, when
// the work has not advanced for stallAfter it says so, and why, once per
// stall. Output goes to stderr, and none with -o json (unchanged).
const (
	progressAfter = 2 * time.Second
	progressEvery = 5 * time.Second
	stallAfter    = 5 * time.Second
	redrawEvery   = 250 * time.Millisecond
)

// progressReport is one report of the work's state.
type progressReport struct {
	Phase       string
	Done, Total int64  // in units of Unit
	Unit        string // "bytes", or a noun like "frames"
	Elapsed     time.Duration
	// Retransmits of the protocol client so far; RetransmitsName says what
	// they are ("retransmits", "tiles resent").
	Retransmits     uint64
	RetransmitsName string // "-": the work does not retransmit; not shown
	// Why, if set, explains a lack of progress in the reporter's words
	// (e.g. "the disk has not answered for 6s").
	Why string
}

// progressView turns reports into lines. update takes reports; tick,
// called by the view's own ticker (or a test), redraws and detects stalls.
type progressView struct {
	w        io.Writer
	tty      bool
	name     string // "storage", "transfer"
	reporter string // who sends the reports: "cpu0"

	mu          sync.Mutex
	start       time.Time
	last        progressReport
	got         bool      // a report arrived
	lastMsg     time.Time // when the latest report arrived
	lastAdvance time.Time // when Done last grew (or the phase changed)
	lastLine    time.Time
	drawn       bool // a terminal line is on screen
	stalled     bool // the current stall was reported

	stop chan struct{}
	done chan struct{}
}

// newProgressView starts a view on stderr; a quiet one (-o json, whose
// output, stderr included, stays as it was) prints nothing.
func newProgressView(name, reporter string, quiet bool) *progressView {
	fi, _ := os.Stderr.Stat()
	tty := fi != nil && fi.Mode()&os.ModeCharDevice != 0
	var w io.Writer = os.Stderr
	if quiet {
		w = io.Discard
	}
	v := newProgressViewTo(w, tty, name, reporter, time.Now())
	v.stop, v.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(v.done)
		t := time.NewTicker(redrawEvery)
		defer t.Stop()
		for {
			select {
			case <-v.stop:
				return
			case now := <-t.C:
				v.tick(now)
			}
		}
	}()
	return v
}

func newProgressViewTo(w io.Writer, tty bool, name, reporter string, now time.Time) *progressView {
	return &progressView{w: w, tty: tty, name: name, reporter: reporter, start: now, lastMsg: now, lastAdvance: now}
}

// update records a report that arrived at now.
func (v *progressView) update(p progressReport, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.got || p.Done > v.last.Done || p.Phase != v.last.Phase {
		if v.stalled {
			v.stalled = false
			v.line(now, fmt.Sprintf("%s: moving again after %s", v.name, v.stallFor(now)))
		}
		v.lastAdvance = now
	}
	v.last, v.got, v.lastMsg = p, true, now
}

func (v *progressView) stallFor(now time.Time) string {
	return now.Sub(v.lastAdvance).Round(time.Second).String()
}

// tick redraws (terminal), prints the periodic line (no terminal) and
// reports a stall once.
func (v *progressView) tick(now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if now.Sub(v.start) < progressAfter {
		return
	}
	if now.Sub(v.lastAdvance) >= stallAfter && !v.stalled {
		v.stalled = true
		v.line(now, fmt.Sprintf("%s: no progress for %s%s: %s", v.name, v.stallFor(now), v.where(), v.why(now)))
		return
	}
	if v.tty {
		if v.got {
			fmt.Fprintf(v.w, "\r\033[K%s", v.status())
			v.drawn = true
		}
		return
	}
	if v.got && now.Sub(v.lastLine) >= progressEvery {
		v.line(now, v.name+": "+v.status())
	}
}

func (v *progressView) where() string {
	if v.last.Phase == "" {
		return ""
	}
	return " in " + v.last.Phase
}

// why explains a stall: the reporter's own words, else silence from the
// reporter, else the retransmissions.
func (v *progressView) why(now time.Time) string {
	switch {
	case !v.got && now.Sub(v.lastMsg) >= stallAfter:
		return fmt.Sprintf("no word from %s since the start (%s)", v.reporter, now.Sub(v.lastMsg).Round(time.Second))
	case now.Sub(v.lastMsg) >= stallAfter:
		return fmt.Sprintf("no word from %s for %s", v.reporter, now.Sub(v.lastMsg).Round(time.Second))
	case v.last.Why != "":
		return v.last.Why
	case v.last.Retransmits > 0 && v.retransmitsName() != "-":
		return fmt.Sprintf("%d %s so far", v.last.Retransmits, v.retransmitsName())
	}
	return "nothing completes, for no reason the reports give"
}

func (v *progressView) retransmitsName() string {
	if v.last.RetransmitsName != "" {
		return v.last.RetransmitsName
	}
	return "retransmits"
}

// status is the one-line state: phase, amount, rate, retransmits.
func (v *progressView) status() string {
	p := v.last
	var amount, rate string
	secs := max(p.Elapsed.Seconds(), 1e-3)
	if p.Unit == "" || p.Unit == "bytes" {
		amount = fmt.Sprintf("%.1f/%.1f MiB", float64(p.Done)/(1<<20), float64(p.Total)/(1<<20))
		rate = fmt.Sprintf("%.1f MiB/s", float64(p.Done)/(1<<20)/secs)
	} else {
		amount = fmt.Sprintf("%d/%d %s", p.Done, p.Total, p.Unit)
		if p.Total <= 0 {
			amount = fmt.Sprintf("%d %s", p.Done, p.Unit)
		}
		rate = fmt.Sprintf("%.1f %s/s", float64(p.Done)/secs, p.Unit)
	}
	line := fmt.Sprintf("%-6s %s (%3.0f%%), %s", p.Phase, amount, 100*float64(p.Done)/float64(max(p.Total, 1)), rate)
	if p.Total <= 0 { // open-ended (a duration): no total, no share
		line = fmt.Sprintf("%-6s %s, %s", p.Phase, amount, rate)
	}
	if v.retransmitsName() != "-" {
		line += fmt.Sprintf(", %d %s", p.Retransmits, v.retransmitsName())
	}
	return line
}

// line prints a whole line, clearing a drawn terminal line first.
func (v *progressView) line(now time.Time, s string) {
	if v.drawn {
		fmt.Fprint(v.w, "\r\033[K")
		v.drawn = false
	}
	fmt.Fprintln(v.w, strings.TrimSpace(s))
	v.lastLine = now
}

// close stops the ticker and ends a drawn line.
func (v *progressView) close() {
	if v.stop != nil {
		close(v.stop)
		<-v.done
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.drawn {
		fmt.Fprint(v.w, "\r\033[K")
		v.drawn = false
	}
}
