package tcbpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/netstation/netstation/fabric"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// BPFFS is where the BPF filesystem is (or gets) mounted.
const BPFFS = "/sys/fs/bpf"

// PinRoot is the directory under BPFFS holding every pinned object of
// netstation: PinRoot/host/<ifname>/... for ports in the caller's
// namespace and PinRoot/ns/<netns>/<ifname>/... for named namespaces.
var PinRoot = filepath.Join(BPFFS, "netstation")

// ensureBPFFS mounts the BPF filesystem on BPFFS unless it is there.
func ensureBPFFS() error {
	var st unix.Statfs_t
	if err := unix.Statfs(BPFFS, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(BPFFS, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", BPFFS, err)
	}
	if err := unix.Mount("bpf", BPFFS, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", BPFFS, err)
	}
	return nil
}

// checkName rejects names that would escape the pin directory.
func checkName(what, s string) error {
	if s == "." || s == ".." || strings.ContainsAny(s, "/\x00") || len(s) > 255 {
		return fmt.Errorf("%s %q: %w", what, s, ErrInvalid)
	}
	return nil
}

// nsDir is the pin directory of a namespace ("" = the caller's).
func nsDir(ns string) (string, error) {
	if ns == "" {
		return filepath.Join(PinRoot, "host"), nil
	}
	if err := checkName("namespace", ns); err != nil {
		return "", err
	}
	return filepath.Join(PinRoot, "ns", ns), nil
}

// portDir is the pin directory of one port.
func portDir(ns, ifname string) (string, error) {
	if ifname == "" {
		return "", fmt.Errorf("empty interface name: %w", ErrInvalid)
	}
	if err := checkName("interface", ifname); err != nil {
		return "", err
	}
	d, err := nsDir(ns)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, ifname), nil
}

// A hook is where on a port one of this package's programs sits: the
// clsact qdisc's ingress or egress, at a priority of its own (lower runs
// first) and handle 1.
type hook struct {
	parent uint32 // netlink.HANDLE_MIN_INGRESS or HANDLE_MIN_EGRESS
	prio   uint16
	pin    string // the program's pin name in the port's directory
}

// Priorities of the programs on a port's clsact hooks: the template at the
// head of ingress, the impairment far behind it, so that other tc users
// can put filters between or after them.
const (
	prioTemplate   = 1
	prioImpairment = 0xc000
	filterHandle   = 1
)

// attachFilters puts progs (one per hook) on ifname inside ns as
// direct-action cls_bpf filters under the port's clsact qdisc (created if
// missing; another tc user's is shared), replacing a filter already at the
// same hook.
//
// Not tcx: attaching or releasing a tcx link waits for an RCU grace period
// with the rtnl lock held (tcx_entry_sync), and so does deleting a port
// that has one, so every port of a testbed cost a grace period at up and
// another at down, one after another across the whole kernel: 15 ms per
// port attached and 11 ms per port removed, measured with 300 ports (and
// 6.5 s of a 500-peripheral down spent with rtnl held). A cls_bpf filter
// is attached and freed without waiting (0.1 ms per port either way).
func attachFilters(ns, ifname string, progs []*ebpf.Program, hooks []hook) error {
	return fabric.Do(ns, func() error {
		// One RTM_GETLINK by name: net.InterfaceByName dumps every link
		// of the namespace, and the fabric's holds one per node (status
		// of 1,000 nodes made a million link records).
		ifl, err := netlink.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("interface %s: %w", ifname, errors.Join(ErrNotFound, err))
		}
		idx := ifl.Attrs().Index
		q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
		if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add clsact qdisc to %s: %w", ifname, err)
		}
		for i, p := range progs {
			f := &netlink.BpfFilter{
				FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: hooks[i].parent, Handle: filterHandle,
					Priority: hooks[i].prio, Protocol: unix.ETH_P_ALL},
				Fd: p.FD(), Name: hooks[i].pin, DirectAction: true,
			}
			if err := netlink.FilterReplace(f); err != nil {
				return fmt.Errorf("attach filter to %s: %w", ifname, err)
			}
		}
		return nil
	})
}

// detachFilters deletes the filters at hooks from ifname inside ns; a port
// or filter that is not there is not an error.
func detachFilters(ns, ifname string, hooks []hook) error {
	return fabric.Do(ns, func() error {
		ifl, err := netlink.LinkByName(ifname)
		if err != nil {
			return nil // the port is gone, and its filters with it
		}
		var errs []error
		for _, h := range hooks {
			f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: ifl.Attrs().Index, Parent: h.parent,
				Handle: filterHandle, Priority: h.prio, Protocol: unix.ETH_P_ALL}}
			if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("detach filter from %s: %w", ifname, err))
			}
		}
		return errors.Join(errs...)
	})
}

// attachedIDs returns the program id of the bpf filter at each hook of
// ifname inside ns (0 where there is none).
func attachedIDs(ns, ifname string, hooks []hook) ([]int, error) {
	ids := make([]int, len(hooks))
	err := fabric.Do(ns, func() error {
		ifl, err := netlink.LinkByName(ifname) // see attachFilters
		if err != nil {
			return fmt.Errorf("interface %s: %w", ifname, errors.Join(ErrNotFound, err))
		}
		for i, h := range hooks {
			fs, err := retryFilterList(ifl, h.parent)
			if err != nil {
				return fmt.Errorf("list filters of %s: %w", ifname, err)
			}
			for _, f := range fs {
				if bf, ok := f.(*netlink.BpfFilter); ok && bf.Priority == h.prio && bf.Handle == filterHandle {
					ids[i] = bf.Id
				}
			}
		}
		return nil
	})
	return ids, err
}

// retryFilterList lists a hook's filters, again when the dump was
// interrupted by a concurrent change.
func retryFilterList(l netlink.Link, parent uint32) ([]netlink.Filter, error) {
	var fs []netlink.Filter
	var err error
	for range 10 {
		if fs, err = netlink.FilterList(l, parent); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return fs, err
}

// pinAll pins each object at dir/name, removing what it pinned on failure.
func pinAll(dir string, objs map[string]interface{ Pin(string) error }) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w", err)
	}
	var done []string
	for name, o := range objs {
		p := filepath.Join(dir, name)
		if err := o.Pin(p); err != nil {
			for _, d := range done {
				os.Remove(d)
			}
			return fmt.Errorf("pin %s: %w", p, err)
		}
		done = append(done, p)
	}
	return nil
}

// removePins deletes the pins named in names under dir (missing ones are
// fine) and dir itself when it is left empty, then its empty parents up to
// PinRoot.
func removePins(dir string, names ...string) error {
	var errs []error
	for _, n := range names {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for d := dir; strings.HasPrefix(d, PinRoot+"/"); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// DetachAll removes every pin this package made for namespace ns ("" =
// the caller's), on every port. A testbed calls it when it deletes the
// namespace: the ports' filters go with the ports, but the pins would keep
// the programs and maps in memory. Filters of ports that outlive the call
// stay attached (use [Detach] and [DetachTemplate] for a port that stays).
func DetachAll(ns string) error {
	d, err := nsDir(ns)
	if err != nil {
		return fmt.Errorf("tcbpf: %w", err)
	}
	if err := os.RemoveAll(d); err != nil {
		return fmt.Errorf("tcbpf: remove pins of %s: %w", d, err)
	}
	removePins(filepath.Dir(d))
	return nil
}

// attachedHere reports whether the programs pinned in dir for hooks are
// the ones attached there (ids, from attachedIDs): a port deleted and made
// again under the same name has none, or others.
func attachedHere(dir string, hooks []hook, ids []int) bool {
	for i, h := range hooks {
		p, err := ebpf.LoadPinnedProgram(filepath.Join(dir, h.pin), nil)
		if err != nil {
			return false
		}
		info, err := p.Info()
		p.Close()
		if err != nil {
			return false
		}
		id, ok := info.ID()
		if !ok || int(id) != ids[i] {
			return false
		}
	}
	return true
}

// preparePort does what every attach does first: it finds the port's pin
// directory, mounts the BPF filesystem if needed and looks the port up. It
// reports whether the programs pinned for hooks are attached to the port
// there (live), for the caller to reuse.
func preparePort(ns, ifname string, hooks []hook) (dir string, live bool, err error) {
	if dir, err = portDir(ns, ifname); err != nil {
		return "", false, err
	}
	if err := ensureBPFFS(); err != nil {
		return "", false, err
	}
	ids, err := attachedIDs(ns, ifname, hooks)
	if err != nil {
		return "", false, err
	}
	return dir, attachedHere(dir, hooks, ids), nil
}

// pinnedMap is a handle's map field and the name its map is pinned under.
type pinnedMap struct {
	dst  **ebpf.Map
	name string
}

// openPinnedMaps fills the fields of maps from the pins of ifname in ns,
// in order; what names the handle in errors ("impairment"). On failure it
// closes the maps it loaded and the error wraps [ErrNotFound] when a pin is
// missing.
func openPinnedMaps(ns, ifname, what string, maps ...pinnedMap) error {
	dir, err := portDir(ns, ifname)
	if err != nil {
		return fmt.Errorf("tcbpf: %w", err)
	}
	for _, m := range maps {
		*m.dst, err = ebpf.LoadPinnedMap(filepath.Join(dir, m.name), nil)
		if err != nil {
			for _, m := range maps {
				closeMaps(m.dst)
			}
			if errors.Is(err, os.ErrNotExist) {
				err = errors.Join(ErrNotFound, err)
			}
			return fmt.Errorf("tcbpf: open %s of %s in %s: %w", what, ifname, nsLabel(ns), err)
		}
	}
	return nil
}

// detachPins removes the filters at hooks and the pins (names) of the what
// ("template") of ifname in ns.
func detachPins(ns, ifname, what string, hooks []hook, names ...string) error {
	dir, err := portDir(ns, ifname)
	if err != nil {
		return fmt.Errorf("tcbpf: %w", err)
	}
	if err := detachFilters(ns, ifname, hooks); err != nil {
		return fmt.Errorf("tcbpf: detach %s of %s in %s: %w", what, ifname, nsLabel(ns), err)
	}
	if err := removePins(dir, names...); err != nil {
		return fmt.Errorf("tcbpf: detach %s of %s in %s: %w", what, ifname, nsLabel(ns), err)
	}
	return nil
}

// closeMaps closes the maps that are open, sets them to nil and returns
// the errors of closing them.
func closeMaps(maps ...**ebpf.Map) []error {
	var errs []error
	for _, m := range maps {
		if *m != nil {
			errs = append(errs, (*m).Close())
			*m = nil
		}
	}
	return errs
}
