package cpupin_test

import (
	"runtime"
	"slices"
	"testing"

	"github.com/netstation/netstation/internal/cpupin"
)

// TestProcessPinsEveryThread pins the whole process to one CPU, starts
// new threads, checks that every thread (old and new) is on that CPU,
// then restores the start mask.
func TestProcessPinsEveryThread(t *testing.T) {
	all, err := cpupin.Allowed()
	if err != nil || len(all) == 0 {
		t.Fatalf("Allowed: %v %v", all, err)
	}
	last := all[len(all)-1]
	if err := cpupin.Process([]int{last}); err != nil {
		t.Fatal(err)
	}
	defer cpupin.Process(nil)
	// New threads: locked goroutines force the runtime to make them.
	done := make(chan struct{})
	for i := 0; i < 4; i++ {
		go func() { runtime.LockOSThread(); <-done }()
	}
	runtime.Gosched()
	cur, err := cpupin.Current()
	close(done)
	if err != nil || !slices.Equal(cur, []int{last}) {
		t.Fatalf("after pinning to %d: threads on %v (%v)", last, cur, err)
	}
	if err := cpupin.Process(nil); err != nil {
		t.Fatal(err)
	}
	if cur, _ := cpupin.Current(); !slices.Equal(cur, all) {
		t.Fatalf("restored to %v, want %v", cur, all)
	}
	if err := cpupin.Process([]int{1 << 20}); err == nil {
		t.Fatal("a CPU that does not exist was accepted")
	}
	if got := cpupin.Label([]int{0}, []int{0}); got != "both ends on CPU 0" {
		t.Error(got)
	}
	if got := cpupin.Label([]int{0}, []int{1}); got != "CPU 0 / CPU 1" {
		t.Error(got)
	}
}
