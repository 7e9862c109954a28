package peripherals

import (
	"slices"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/cpupin"
)

// TestPinLease: a leased pinning undoes itself when no pin renews it
// (a bench killed mid-measurement leaves no peripheral pinned), and a
// renewal or a newer pinning outlives the old lease.
func TestPinLease(t *testing.T) {
	all, err := cpupin.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	defer cpupin.Process(nil)
	var l pinLease
	one := []int{all[len(all)-1]}
	current := func() []int {
		c, err := cpupin.Current()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if err := l.pin(one, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if c := current(); !slices.Equal(c, one) {
		t.Fatalf("pinned to %v, want %v", c, one)
	}
	// Renewed within the lease: still pinned after the first lease ends.
	time.Sleep(150 * time.Millisecond)
	if err := l.pin(one, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if c := current(); !slices.Equal(c, one) {
		t.Fatalf("renewed pinning undone by the old lease: on %v", c)
	}
	// Not renewed: back on every CPU.
	if err := l.pin(one, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !slices.Equal(current(), all); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("lease ran out 10 s ago and the process is still on %v, not %v", current(), all)
		}
	}
	// Unleased pinnings stay until told.
	if err := l.pin(one, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if c := current(); !slices.Equal(c, one) {
		t.Fatalf("an unleased pinning was undone: on %v", c)
	}
}
