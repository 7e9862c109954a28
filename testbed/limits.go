package testbed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The host limits a testbed's size runs into. Up checks them before
// anything is built, raises the host-wide ones it may (as root, never
// rootless) and reports each change; a limit it cannot raise refuses the
// testbed with the knob to turn, instead of a peripheral failing at
// number 700 with a bare EAGAIN or EMFILE.
//
// Per peripheral, measured on the default kinds: 6 threads (GOMAXPROCS=1
// plus the runtime's and the link's), and in the supervisor one pidfd and
// a log file while it starts. Memory is not checked here (see
// docs/BENCHMARKS.md for the PSS per peripheral). netstation uses no
// inotify watches, so fs.inotify limits do not matter to it.
const (
	tasksPerNode = 8  // threads per peripheral, with margin over the 6 measured
	fdsPerNode   = 2  // the supervisor's pidfd, and a log file during a start
	fdsBase      = 64 // the supervisor's own: sockets, journal, logs
	pidMaxLimit  = 4 << 20
)

// ErrHostLimit: the host cannot hold the testbed, and Up may not raise the
// limit in the way.
var ErrHostLimit = errors.New("host limit too low for the testbed")

// hostLimits is what Up reads of the host: plain data, so planLimits is a
// pure function that tests drive with any host.
type hostLimits struct {
	NoFileHard uint64 // RLIMIT_NOFILE hard limit (Go raises the soft one to it)
	PIDMax     uint64 // kernel.pid_max
	ThreadsMax uint64 // kernel.threads-max
	CgroupPIDs uint64 // pids.max of our cgroup; 0 = no limit
	Tasks      uint64 // threads on the host now
	Neigh      uint64 // entries in the host's IPv4 neighbour table now
	Gc1, Gc2   uint64 // net.ipv4.neigh.default.gc_thresh1, 2
	Gc3        uint64 // gc_thresh3: the table's hard size
}

// sysctlSet is one host-wide sysctl Up raises, with why.
type sysctlSet struct {
	Key      string
	From, To uint64
	Why      string
}

func (s sysctlSet) String() string {
	return fmt.Sprintf("raised %s from %d to %d (host-wide: %s)", s.Key, s.From, s.To, s.Why)
}

// planLimits decides, for nodes peripherals (hostAccess: the host's own
// kernel talks to them), which host-wide sysctls to raise; mayRaise is
// false when rootless (they belong to the host's root). It fails with
// ErrHostLimit and the knob to turn when a limit is too low and may not
// be raised here.
func planLimits(h hostLimits, nodes int, hostAccess, mayRaise bool) ([]sysctlSet, error) {
	n := uint64(nodes)
	var out []sysctlSet
	refuse := func(format string, a ...any) ([]sysctlSet, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrHostLimit}, a...)...)
	}
	if need := fdsBase + n*fdsPerNode; h.NoFileHard != 0 && h.NoFileHard < need {
		return refuse("the supervisor of %d peripherals needs about %d file descriptors but RLIMIT_NOFILE's hard limit is %d: raise it (ulimit -Hn, or LimitNOFILE= for a service)",
			nodes, need, h.NoFileHard)
	}
	tasks := h.Tasks + n*tasksPerNode
	if h.CgroupPIDs != 0 && h.CgroupPIDs < tasks {
		return refuse("%d peripherals need about %d more threads (%d in use) but this cgroup's pids.max is %d: raise it (TasksMax= for a systemd unit or slice)",
			nodes, n*tasksPerNode, h.Tasks, h.CgroupPIDs)
	}
	for _, k := range []struct {
		key  string
		have uint64
		max  uint64
	}{{"kernel.pid_max", h.PIDMax, pidMaxLimit}, {"kernel.threads-max", h.ThreadsMax, 0}} {
		if k.have == 0 || k.have >= tasks {
			continue
		}
		to := 2 * tasks
		if k.max != 0 {
			to = min(to, k.max)
		}
		if !mayRaise || to < tasks {
			return refuse("%d peripherals need about %d threads in all (%d in use now) but %s is %d: raise it (sysctl -w %s=%d)",
				nodes, tasks, h.Tasks, k.key, k.have, k.key, to)
		}
		out = append(out, sysctlSet{k.key, k.have, to, fmt.Sprintf("%d peripherals need about %d threads", nodes, tasks)})
	}
	if hostAccess && h.Gc3 != 0 {
		// The host's kernel keeps an ARP entry per peripheral it talks to;
		// past gc_thresh3 it fails sends with "neighbour table overflow".
		need := h.Neigh + n + 1
		if h.Gc3 < need {
			if !mayRaise {
				return refuse("host access to %d peripherals needs %d neighbour entries but net.ipv4.neigh.default.gc_thresh3 is %d: raise it",
					nodes, need, h.Gc3)
			}
			to3 := 2 * need
			why := fmt.Sprintf("host access to %d peripherals needs %d neighbour entries", nodes, need)
			// Keep thresh1 <= thresh2 <= thresh3: the collector starts
			// early enough, and the table does not shrink below what the
			// testbed uses.
			if to2 := to3 / 2; h.Gc2 < to2 {
				out = append(out, sysctlSet{"net.ipv4.neigh.default.gc_thresh2", h.Gc2, to2, why})
			}
			if to1 := to3 / 4; h.Gc1 < to1 {
				out = append(out, sysctlSet{"net.ipv4.neigh.default.gc_thresh1", h.Gc1, to1, why})
			}
			out = append(out, sysctlSet{"net.ipv4.neigh.default.gc_thresh3", h.Gc3, to3, why})
		}
	}
	return out, nil
}

// readHostLimits reads the host's limits; a value it cannot read is 0
// (unknown: not checked).
func readHostLimits() hostLimits {
	var h hostLimits
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Max != unix.RLIM_INFINITY {
		h.NoFileHard = rl.Max
	}
	h.PIDMax = readUint("/proc/sys/kernel/pid_max")
	h.ThreadsMax = readUint("/proc/sys/kernel/threads-max")
	h.CgroupPIDs = cgroupPIDsMax()
	// /proc/loadavg's fourth field is running/total scheduling entities.
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 4 {
			if _, total, ok := strings.Cut(f[3], "/"); ok {
				h.Tasks, _ = strconv.ParseUint(total, 10, 64)
			}
		}
	}
	if b, err := os.ReadFile("/proc/net/arp"); err == nil {
		if lines := strings.Count(string(b), "\n"); lines > 0 {
			h.Neigh = uint64(lines - 1) // the header
		}
	}
	h.Gc1 = readUint("/proc/sys/net/ipv4/neigh/default/gc_thresh1")
	h.Gc2 = readUint("/proc/sys/net/ipv4/neigh/default/gc_thresh2")
	h.Gc3 = readUint("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
	return h
}

// cgroupPIDsMax is pids.max of the calling process's cgroup (v2, or the
// v1 pids controller); 0 when there is none or it says "max".
func cgroupPIDsMax() uint64 {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		var path string
		switch {
		case f[0] == "0" && f[1] == "":
			path = filepath.Join("/sys/fs/cgroup", f[2], "pids.max")
		case f[1] == "pids":
			path = filepath.Join("/sys/fs/cgroup/pids", f[2], "pids.max")
		default:
			continue
		}
		if v := readUint(path); v != 0 {
			return v
		}
	}
	return 0
}

func readUint(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v
}

// raiseLimits applies planLimits' changes to the host and returns one
// line per change, for the user.
func raiseLimits(sets []sysctlSet) ([]string, error) {
	var notes []string
	for _, s := range sets {
		path := "/proc/sys/" + strings.ReplaceAll(s.Key, ".", "/")
		if err := os.WriteFile(path, []byte(strconv.FormatUint(s.To, 10)), 0); err != nil {
			return notes, fmt.Errorf("%w: %s is %d and could not be raised to %d: %v", ErrHostLimit, s.Key, s.From, s.To, err)
		}
		notes = append(notes, s.String())
	}
	return notes, nil
}
