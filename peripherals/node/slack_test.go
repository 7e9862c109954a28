package node

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/privtest"
)

// TestSetTimerSlack: every thread of the process, and one started after,
// gets the slack (another thread's takes CAP_SYS_NICE: root).
func TestSetTimerSlack(t *testing.T) {
	privtest.Root(t)
	slack := func(tid string) int64 {
		b, err := os.ReadFile("/proc/" + tid + "/timerslack_ns")
		if err != nil {
			t.Fatal(err)
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	threads := func() []string {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	before := threads()
	orig := slack(before[0])
	t.Cleanup(func() { _ = setTimerSlack(time.Duration(orig)) })
	const want = 333 * time.Microsecond
	if err := setTimerSlack(want); err != nil {
		t.Fatal(err)
	}
	for _, tid := range before {
		if _, err := os.Stat("/proc/self/task/" + tid); err != nil {
			continue // ended meanwhile
		}
		if got := slack(tid); got != want.Nanoseconds() {
			t.Errorf("thread %s: slack %d ns, want %d", tid, got, want.Nanoseconds())
		}
	}
	// A thread the runtime starts now inherits it: block some in
	// system calls so that it must.
	done := make(chan struct{})
	for range 4 {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			<-done
		}()
	}
	time.Sleep(50 * time.Millisecond)
	for _, tid := range threads() {
		if got := slack(tid); got != want.Nanoseconds() {
			t.Errorf("thread %s (after): slack %d ns, want %d", tid, got, want.Nanoseconds())
		}
	}
	close(done)
}
