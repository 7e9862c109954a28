// Package cpupin pins every thread of the calling process to a set of
// CPUs, so latency figures can state where both ends ran. Go's runtime
// runs goroutines on threads of its own choosing: pinning one thread says
// little, so Process sets the affinity of every task in /proc/self/task
// (new threads inherit the mask of the thread that creates them, so after
// a pass that found no new task the whole process stays pinned).
package cpupin

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrCPU is wrapped by errors about CPUs that do not exist or cannot be
// used.
var ErrCPU = errors.New("cpupin: bad CPU set")

var (
	initialOnce sync.Once
	initial     unix.CPUSet
	initialErr  error
)

func startMask() (unix.CPUSet, error) {
	initialOnce.Do(func() { initialErr = unix.SchedGetaffinity(0, &initial) })
	return initial, initialErr
}

// Allowed returns the CPUs the process could run on before anything was
// pinned, ascending.
func Allowed() ([]int, error) {
	m, err := startMask()
	if err != nil {
		return nil, fmt.Errorf("cpupin: sched_getaffinity: %w", err)
	}
	var out []int
	for c := 0; c < len(m)*64; c++ {
		if m.IsSet(c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// Process pins every thread of the process to cpus; an empty cpus
// restores the mask the process started with.
func Process(cpus []int) error {
	mask, err := startMask()
	if err != nil {
		return fmt.Errorf("cpupin: sched_getaffinity: %w", err)
	}
	if len(cpus) > 0 {
		var m unix.CPUSet
		for _, c := range cpus {
			if c < 0 || c >= len(m)*64 || !mask.IsSet(c) {
				return fmt.Errorf("%w: CPU %d is not among the process's allowed CPUs", ErrCPU, c)
			}
			m.Set(c)
		}
		mask = m
	}
	done := map[int]bool{}
	for pass := 0; pass < 10; pass++ {
		tids, err := tasks()
		if err != nil {
			return err
		}
		fresh := 0
		for _, tid := range tids {
			if done[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &mask); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("cpupin: sched_setaffinity(%d): %w", tid, err)
			}
			done[tid] = true
			fresh++
		}
		if fresh == 0 {
			return nil
		}
	}
	return errors.New("cpupin: threads kept appearing while pinning")
}

func tasks() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("cpupin: %w", err)
	}
	var out []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, tid)
		}
	}
	return out, nil
}

// Current returns the CPUs every thread of the process may run on now
// (the union over threads).
func Current() ([]int, error) {
	tids, err := tasks()
	if err != nil {
		return nil, err
	}
	var out []int
	for _, tid := range tids {
		var m unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &m); err != nil {
			continue
		}
		for c := 0; c < len(m)*64; c++ {
			if m.IsSet(c) && !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// Label describes a pinning of two ends for a figure's caption:
// "both ends on CPU 0", "CPU 0 -> CPU 1" or "unpinned".
func Label(a, b []int) string {
	switch {
	case len(a) == 0 && len(b) == 0:
		return "unpinned"
	case slices.Equal(a, b):
		return "both ends on CPU " + list(a)
	}
	return "CPU " + list(a) + " / CPU " + list(b)
}

func list(c []int) string {
	s := make([]string, len(c))
	for i, v := range c {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ",")
}
