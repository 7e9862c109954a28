package testbed

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/fabric/tcbpf"
)

// procStartTime returns field 22 of /proc/<pid>/stat (start time in clock
// ticks since boot), which with the pid names a process uniquely.
func procStartTime(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: skip past its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// procZombie reports whether a /proc/<pid>/stat line is a zombie's (state
// Z: it has exited and waits to be reaped).
func procZombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// testbedProcs returns the pids of every process whose command line names
// the state directory dir (the supervisor and all peripherals of one
// testbed carry "--state <dir>").
func testbedProcs(dir string) []int {
	want := []byte("\x00--state\x00" + dir + "\x00")
	ents, _ := os.ReadDir("/proc")
	var pids []int
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(append(cl, 0), want) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killAll sends SIGKILL to every process of the testbed (by command line
// and by journal, guarding against pid reuse) and waits for them to go.
func killAll(dir string, ents []entry) {
	pids := map[int]bool{}
	for _, p := range testbedProcs(dir) {
		pids[p] = true
	}
	for _, e := range ents {
		// Never itself: the supervisor's teardown reads the journal's
		// own entry for it (recorded by up), and killed itself there
		// before it could answer "down" or remove the state directory.
		if e.Kind == entryProc && e.PID > 0 && e.PID != os.Getpid() && e.Start != 0 && procStartTime(e.PID) == e.Start {
			pids[e.PID] = true
		}
	}
	for p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	deadline := time.Now().Add(3 * time.Second)
	for p := range pids {
		for time.Now().Before(deadline) {
			if err := syscall.Kill(p, 0); errors.Is(err, syscall.ESRCH) {
				break
			}
			// A zombie child of ours still answers kill(0): reap if we can.
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(p, &ws, syscall.WNOHANG, nil)
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// teardown removes every kernel object and process of a testbed: what the
// journal names, then whatever else carries its prefix. plan may be nil
// (lost or never written).
func teardown(dir string, plan *Plan, log *slog.Logger) error {
	ents, _ := readJournal(dir)
	killAll(dir, ents)
	if (plan != nil && plan.Rootless && os.Geteuid() != 0) || (plan == nil && os.Geteuid() != 0) {
		// A rootless testbed's namespaces and links live inside its
		// supervisor's user, mount and network namespaces: they went with
		// its processes, and from out here there is nothing to delete.
		return nil
	}
	var errs []error
	for i := len(ents) - 1; i >= 0; i-- {
		e := ents[i]
		switch e.Kind {
		case entryHostLink:
			if err := fabric.DeleteLink("", e.Name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Deleting a namespace destroys the veths inside it; node namespaces
	// first, then the fabric.
	var fabricNS string
	for _, e := range ents {
		if e.Kind != entryNetns {
			continue
		}
		if strings.HasSuffix(e.Name, "-fabric") || (plan != nil && e.Name == plan.FabricNS) {
			fabricNS = e.Name
			continue
		}
		if err := fabric.DeleteNetns(e.Name); err != nil {
			errs = append(errs, err)
		}
	}
	if fabricNS != "" {
		// Pins of the fabric's ports (templates, impairments) would keep
		// their programs and maps in memory after the namespace is gone.
		if err := tcbpf.DetachAll(fabricNS); err != nil {
			errs = append(errs, err)
		}
		if err := fabric.DeleteNetns(fabricNS); err != nil {
			errs = append(errs, err)
		}
	}
	name := filepath.Base(dir)
	if plan != nil {
		name = plan.Testbed
	}
	if plan != nil && plan.MultiHost() {
		// Other hosts' namespaces carry the same prefix when the hosts
		// share a kernel: remove this host's own, by name, and no more.
		for _, seg := range plan.Segments {
			// At once: in a namespace being destroyed the device would
			// hold its VNI on the underlay a while longer.
			if err := fabric.DeleteLink(plan.FabricNS, seg.VXLAN); err != nil {
				errs = append(errs, err)
			}
		}
		for _, ns := range plan.LocalNamespaces() {
			if err := fabric.DeleteNetns(ns); err != nil {
				errs = append(errs, err)
			}
		}
	} else if err := fabric.Cleanup(Prefix(name)); err != nil {
		errs = append(errs, err)
	}
	if err := fabric.DeleteLink("", "nstn"+name); err != nil {
		errs = append(errs, err)
	}
	if log != nil && len(errs) > 0 {
		log.Warn("teardown", "err", errors.Join(errs...))
	}
	return errors.Join(errs...)
}
