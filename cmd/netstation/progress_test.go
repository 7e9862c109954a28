package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/workload"
)

// TestProgressPlainLines: without a terminal, a run longer than
// progressAfter prints a plain line (phase, bytes, rate, retransmits) every
// progressEvery, no escape codes, and nothing before progressAfter.
func TestProgressPlainLines(t *testing.T) {
	var out bytes.Buffer
	t0 := time.Unix(1000, 0)
	v := newProgressViewTo(&out, false, "storage", "cpu0", t0)
	done := int64(0)
	for ms := 0; ms <= 12_000; ms += 250 {
		now := t0.Add(time.Duration(ms) * time.Millisecond)
		done += 1 << 20
		v.update(storageReport(workload.Progress{Phase: "write", Done: done, Total: 256 << 20,
			Elapsed: now.Sub(t0), Retransmits: uint64(ms / 1000)}, "disk0"), now)
		v.tick(now)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 { // at 2 s, 7 s and 12 s
		t.Fatalf("%d lines, want 3:\n%s", len(lines), out.String())
	}
	if strings.Contains(out.String(), "\r") || strings.Contains(out.String(), "\033") {
		t.Errorf("terminal codes without a terminal: %q", out.String())
	}
	for _, want := range []string{"storage: write", "MiB/s", "retransmits", "/256.0 MiB"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("line %q lacks %q", lines[0], want)
		}
	}
	if !strings.Contains(lines[2], "12 retransmits") {
		t.Errorf("last line %q: want 12 retransmits", lines[2])
	}
}

// TestProgressStall: a run whose bytes stop advancing says so once, after
// stallAfter, with the reason its reports give (the disk silent), and says
// when it moves again; a reporter that goes silent is named as the reason.
func TestProgressStall(t *testing.T) {
	var out bytes.Buffer
	t0 := time.Unix(1000, 0)
	v := newProgressViewTo(&out, false, "storage", "cpu0", t0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	v.update(storageReport(workload.Progress{Phase: "read", Done: 8 << 20, Total: 64 << 20, Elapsed: time.Second}, "disk0"), at(1))
	for s := 1.0; s <= 10; s += 0.25 {
		// Reports keep coming (the cpu is alive) but nothing completes
		// and the disk stopped answering at 1 s.
		v.update(storageReport(workload.Progress{Phase: "read", Done: 8 << 20, Total: 64 << 20, Elapsed: at(s).Sub(t0),
			Retransmits: 40, SinceReply: at(s).Sub(at(1))}, "disk0"), at(s))
		v.tick(at(s))
	}
	got := out.String()
	if n := strings.Count(got, "no progress"); n != 1 {
		t.Fatalf("%d stall messages, want 1:\n%s", n, got)
	}
	if !strings.Contains(got, "storage: no progress for 5s in read: no answer from disk0 for 5s (40 retransmits so far)") {
		t.Errorf("stall message lacks the reason:\n%s", got)
	}
	v.update(storageReport(workload.Progress{Phase: "read", Done: 9 << 20, Total: 64 << 20, Elapsed: 11 * time.Second}, "disk0"), at(11))
	if !strings.Contains(out.String(), "moving again after 10s") {
		t.Errorf("no word that it moves again:\n%s", out.String())
	}

	// The reporter itself goes silent.
	out.Reset()
	v = newProgressViewTo(&out, false, "transfer", "disk0", t0)
	v.update(progressReport{Phase: "order", Done: 100, Total: 2880, Unit: "tiles"}, at(0.5))
	for s := 1.0; s <= 7; s += 0.5 {
		v.tick(at(s))
	}
	if !strings.Contains(out.String(), "transfer: no progress for 5s in order: no word from disk0 for 5s") {
		t.Errorf("silent reporter not named:\n%s", out.String())
	}
}

// TestProgressTerminal: on a terminal the status line is redrawn in place
// and cleared before a stall message and at the end.
func TestProgressTerminal(t *testing.T) {
	var out bytes.Buffer
	t0 := time.Unix(1000, 0)
	v := newProgressViewTo(&out, true, "storage", "cpu0", t0)
	v.update(progressReport{Phase: "write", Done: 1 << 20, Total: 4 << 20}, t0)
	v.tick(t0.Add(time.Second))
	if out.Len() != 0 {
		t.Fatalf("drew before %v: %q", progressAfter, out.String())
	}
	v.tick(t0.Add(3 * time.Second))
	if !strings.HasPrefix(out.String(), "\r\033[K") || strings.Contains(out.String(), "\n") {
		t.Fatalf("not a redrawn line: %q", out.String())
	}
	v.close()
	if !strings.HasSuffix(out.String(), "\r\033[K") {
		t.Errorf("line not cleared at the end: %q", out.String())
	}
}

// TestProgressOpenEnded: a run with no known total (display --time) and
// nothing retransmitted shows its count and rate only.
func TestProgressOpenEnded(t *testing.T) {
	var out bytes.Buffer
	t0 := time.Unix(1000, 0)
	v := newProgressViewTo(&out, false, "display", "cpu0", t0)
	v.update(progressReport{Phase: "stream", Done: 300, Unit: "frames", Elapsed: 3 * time.Second, RetransmitsName: "-"}, t0.Add(3*time.Second))
	v.tick(t0.Add(3 * time.Second))
	if got, want := strings.TrimSpace(out.String()), "display: stream 300 frames, 100.0 frames/s"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
