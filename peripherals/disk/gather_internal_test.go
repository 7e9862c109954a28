package disk

import (
	"testing"
	"time"
)

// TestRangeMask: a range takes every stripe it touches and only those,
// wrapping around the stripes, and a range over all of them takes all.
func TestRangeMask(t *testing.T) {
	var r rangeLocks
	const mib = 1 << rangeStripeShift
	for _, c := range []struct {
		off, n int64
		want   uint64
	}{
		{0, 1, 1},
		{0, mib, 1},
		{0, mib + 1, 3},
		{mib - 1, 2, 3},
		{5 * mib, 4 << 20, 0xf << 5},
		{63 * mib, 2 * mib, 1<<63 | 1}, // wraps: stripe 64 is stripe 0
		{64 * mib, 1, 1},
		{0, 64 * mib, ^uint64(0)},
		{3, 200 * mib, ^uint64(0)},
	} {
		if got := r.mask(c.off, c.n); got != c.want {
			t.Errorf("mask(%d, %d) = %#x, want %#x", c.off, c.n, got, c.want)
		}
	}
	// Shared holds coexist; an exclusive one waits for them.
	a := r.lock(0, 2*mib, false)
	b := r.lock(mib, 1, false)
	got := make(chan struct{})
	go func() { r.unlock(r.lock(mib, mib, true), true); close(got) }()
	r.unlock(a, false)
	time.Sleep(20 * time.Millisecond) // time for the write to take the stripe, were it free
	select {
	case <-got:
		t.Fatal("a write took a range a read still held")
	default:
	}
	r.unlock(b, false)
	<-got
	if r.lock(0, 0, true) != 0 {
		t.Error("an empty range took a stripe")
	}
}
