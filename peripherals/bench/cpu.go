package bench

import (
	"time"

	"golang.org/x/sys/unix"
)

// CPUTime is CPU time a process spent, from getrusage(2): in user space
// and in the kernel on its behalf (system calls, and the softirq work the
// kernel happens to run in its context, such as a veth's receive side on
// the sending CPU).
type CPUTime struct {
	User   time.Duration `json:"user"`
	System time.Duration `json:"system"`
}

// Total is user plus system time.
func (c CPUTime) Total() time.Duration { return c.User + c.System }

// Sub is the CPU time spent between an earlier reading o and c.
func (c CPUTime) Sub(o CPUTime) CPUTime {
	return CPUTime{User: c.User - o.User, System: c.System - o.System}
}

// ProcessCPU is the calling process's CPU time so far (RUSAGE_SELF: every
// thread). A bench side brackets its run with two readings: the
// difference is the run's cost on that end, the peripheral's idle
// housekeeping (gossip, timers) included, which is small beside a run.
func ProcessCPU() CPUTime {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return CPUTime{}
	}
	return CPUTime{User: time.Duration(ru.Utime.Nano()), System: time.Duration(ru.Stime.Nano())}
}
