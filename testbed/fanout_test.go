package testbed

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestFanOut: every index is called once, never more than the limit at
// once, and the limit is reached (the calls do run side by side).
func TestFanOut(t *testing.T) {
	const n, limit = 100, 7
	var calls [n]atomic.Int32
	var running, peak atomic.Int32
	fanOut(n, limit, func(i int) {
		r := running.Add(1)
		for {
			p := peak.Load()
			if r <= p || peak.CompareAndSwap(p, r) {
				break
			}
		}
		// The first calls wait for each other: the bound must let
		// limit of them run at once.
		for end := time.Now().Add(5 * time.Second); peak.Load() < limit && time.Now().Before(end); {
			time.Sleep(100 * time.Microsecond)
		}
		calls[i].Add(1)
		running.Add(-1)
	})
	for i := range calls {
		if c := calls[i].Load(); c != 1 {
			t.Fatalf("index %d called %d times", i, c)
		}
	}
	if p := peak.Load(); p != limit {
		t.Fatalf("at most %d calls at once, want %d", p, limit)
	}
	fanOut(0, 3, func(int) { t.Fatal("called with n = 0") })
}
