package testbed

import (
	"errors"
	"strings"
	"testing"
)

// A host as Debian ships it on a small machine.
var smallHost = hostLimits{
	NoFileHard: 524288, PIDMax: 32768, ThreadsMax: 192726, Tasks: 400,
	Neigh: 3, Gc1: 128, Gc2: 512, Gc3: 1024,
}

func TestPlanLimits(t *testing.T) {
	for _, tc := range []struct {
		name       string
		h          hostLimits
		nodes      int
		hostAccess bool
		mayRaise   bool
		raise      []string // keys raised, in order
		refuse     string   // a word of the refusal
	}{
		{name: "100 fit", h: smallHost, nodes: 100, hostAccess: true, mayRaise: true},
		{name: "2000 fit threads; host access raises the neighbour table", h: smallHost, nodes: 2000, hostAccess: true, mayRaise: true,
			raise: []string{"net.ipv4.neigh.default.gc_thresh2", "net.ipv4.neigh.default.gc_thresh1", "net.ipv4.neigh.default.gc_thresh3"}},
		{name: "1000 without host access", h: smallHost, nodes: 1000, mayRaise: true},
		{name: "5000 raise pid_max", h: smallHost, nodes: 5000, mayRaise: true, raise: []string{"kernel.pid_max"}},
		{name: "5000 rootless refused", h: smallHost, nodes: 5000, refuse: "sysctl -w kernel.pid_max="},
		{name: "cgroup pids.max", h: func() hostLimits { h := smallHost; h.CgroupPIDs = 4000; return h }(), nodes: 1000, mayRaise: true, refuse: "TasksMax="},
		{name: "file descriptors", h: func() hostLimits { h := smallHost; h.NoFileHard = 1024; return h }(), nodes: 1000, mayRaise: true, refuse: "ulimit -Hn"},
		{name: "unknown limits are not checked", h: hostLimits{}, nodes: 100000, hostAccess: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sets, err := planLimits(tc.h, tc.nodes, tc.hostAccess, tc.mayRaise)
			if tc.refuse != "" {
				if !errors.Is(err, ErrHostLimit) || !strings.Contains(err.Error(), tc.refuse) {
					t.Fatalf("want a refusal naming %q, got %v (%v)", tc.refuse, err, sets)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, s := range sets {
				keys = append(keys, s.Key)
				if s.To <= s.From {
					t.Errorf("%s lowered: %v", s.Key, s)
				}
			}
			if strings.Join(keys, ",") != strings.Join(tc.raise, ",") {
				t.Fatalf("raised %v, want %v", keys, tc.raise)
			}
			// What is raised holds the testbed, thresholds stay ordered.
			for _, s := range sets {
				switch s.Key {
				case "kernel.pid_max":
					if s.To < tc.h.Tasks+uint64(tc.nodes)*tasksPerNode {
						t.Errorf("%v does not hold %d peripherals", s, tc.nodes)
					}
				case "net.ipv4.neigh.default.gc_thresh3":
					if s.To < tc.h.Neigh+uint64(tc.nodes)+1 {
						t.Errorf("%v does not hold %d peripherals", s, tc.nodes)
					}
				}
				if !strings.Contains(s.String(), "host-wide") {
					t.Errorf("a host-wide change does not say so: %s", s)
				}
			}
		})
	}
}

// TestReadHostLimits reads this machine's limits: every Linux has a
// pid_max, a threads-max and some tasks running.
func TestReadHostLimits(t *testing.T) {
	h := readHostLimits()
	if h.PIDMax == 0 || h.ThreadsMax == 0 || h.Tasks == 0 {
		t.Fatalf("%+v", h)
	}
	t.Logf("%+v", h)
}
