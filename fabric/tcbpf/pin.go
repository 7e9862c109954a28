package tcbpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
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

// attachTCX attaches progs (one per attach type) to ifname inside ns, each
// at the given anchor, and returns the links in the same order.
func attachTCX(ns, ifname string, progs []*ebpf.Program, types []ebpf.AttachType, anchor link.Anchor) ([]link.Link, error) {
	var links []link.Link
	err := fabric.Do(ns, func() error {
		ifl, err := netlink.LinkByName(ifname) // not net.InterfaceByName: see ifindexIn
		if err != nil {
			return fmt.Errorf("interface %s: %w", ifname, errors.Join(ErrNotFound, err))
		}
		for i, p := range progs {
			l, err := link.AttachTCX(link.TCXOptions{
				Interface: ifl.Attrs().Index,
				Program:   p,
				Attach:    types[i],
				Anchor:    anchor,
			})
			if err != nil {
				for _, l := range links {
					l.Close()
				}
				links = nil
				return fmt.Errorf("attach tcx to %s: %w", ifname, err)
			}
			links = append(links, l)
		}
		return nil
	})
	return links, err
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

// DetachAll removes every program this package pinned for namespace ns
// ("" = the caller's), on every port. Programs whose port still exists are
// detached once no process holds them open. A testbed calls it when it
// deletes the namespace: a deleted port's programs are already inert, but
// their pins keep the programs and maps in memory until removed.
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

// ifindexIn returns the index of ifname inside ns.
func ifindexIn(ns, ifname string) (int, error) {
	var idx int
	err := fabric.Do(ns, func() error {
		// One RTM_GETLINK by name: net.InterfaceByName dumps every link
		// of the namespace, and the fabric's holds one per node (status
		// of 1,000 nodes made a million link records).
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("interface %s: %w", ifname, errors.Join(ErrNotFound, err))
		}
		idx = l.Attrs().Index
		return nil
	})
	return idx, err
}

// livePinnedLinks opens the links pinned as names in dir and returns them
// if every one is still attached to the port with index ifindex. A link
// whose port was deleted reports ifindex 0 and is not live.
func livePinnedLinks(dir string, ifindex int, names ...string) ([]link.Link, bool) {
	var links []link.Link
	for _, n := range names {
		l, err := link.LoadPinnedLink(filepath.Join(dir, n), nil)
		if err == nil {
			var info *link.Info
			if info, err = l.Info(); err == nil && (info.TCX() == nil || int(info.TCX().Ifindex) != ifindex) {
				err = ErrNotFound
			}
			if err != nil {
				l.Close()
			}
		}
		if err != nil {
			for _, l := range links {
				l.Close()
			}
			return nil, false
		}
		links = append(links, l)
	}
	return links, true
}

// preparePort does what every attach does first: it finds the port's pin
// directory, mounts the BPF filesystem if needed and looks the port up. When
// the links pinned as linkPins are all still attached to the port it
// returns them (live) for the caller to reuse.
func preparePort(ns, ifname string, linkPins ...string) (dir string, live []link.Link, err error) {
	if dir, err = portDir(ns, ifname); err != nil {
		return "", nil, err
	}
	if err := ensureBPFFS(); err != nil {
		return "", nil, err
	}
	ifindex, err := ifindexIn(ns, ifname)
	if err != nil {
		return "", nil, err
	}
	live, _ = livePinnedLinks(dir, ifindex, linkPins...)
	return dir, live, nil
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

// detachPins removes the pins (names) of the what ("template") of ifname
// in ns.
func detachPins(ns, ifname, what string, names ...string) error {
	dir, err := portDir(ns, ifname)
	if err != nil {
		return fmt.Errorf("tcbpf: %w", err)
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
