package node

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// largeTestbedTimerSlack is the timer slack of every thread of a
// peripheral in a testbed of more than gossip.LargeCluster peripherals
// (Linux's default is 50 us).
//
// Why: an idle peripheral spends most of its CPU in the Go runtime's
// monitor thread, sysmon. sysmon sleeps until the process's next timer;
// the thread that runs the timer waits in epoll_pwait, whose timeout is in
// milliseconds and is stretched by the kernel's slack (0.1 % of it), so
// sysmon wakes first and, finding the timer due but not yet run, polls
// with 20 us nanosleeps (doubling after 50) until it is: `strace -f` of an
// idle peripheral showed 50-60 nanosleeps around each gossip or probe
// tick, each a context switch. With a slack of 250 us each of those sleeps
// lasts about 250 us, so a tick costs a few of them. Idle 200-peripheral
// testbed, large-cluster gossip timings, slack written to every thread of
// every peripheral and measured back to back (10-12 s each, 5 pairs):
// 0.08-0.16 cores at 50 us, 0.045-0.071 at 250 us; 1 ms and 4 ms saved no
// more. At 1,000 (BenchmarkScale1000, with push/pull every 30 min):
// docs/SCALE.md.
//
// The price is timer precision: a timer of the peripheral may fire up to
// 250 us later, and sysmon retakes a processor from a blocked system call
// up to 250 us later. Go's own netpoller timeouts are whole milliseconds,
// so the first is small beside what a peripheral's timers already get;
// testbeds of up to LargeCluster peripherals, where latency and
// throughput are measured, keep the default.
const largeTestbedTimerSlack = 250 * time.Microsecond

// ErrTimerSlack: a thread's timer slack could not be set.
var ErrTimerSlack = errors.New("node: timer slack")

// setTimerSlack sets the timer slack of every thread of this process.
// Threads started later inherit it from the thread that creates them.
// Setting another thread's slack takes CAP_SYS_NICE (in the process's
// user namespace): a peripheral runs as root in its namespaces.
func setTimerSlack(d time.Duration) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTimerSlack, err)
	}
	v := []byte(strconv.FormatInt(d.Nanoseconds(), 10))
	var errs []error
	for _, t := range tasks {
		// /proc/TID is the thread's own view; /proc/self/task/TID has no
		// timerslack_ns.
		if err := os.WriteFile("/proc/"+t.Name()+"/timerslack_ns", v, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrTimerSlack, err)
	}
	return nil
}
