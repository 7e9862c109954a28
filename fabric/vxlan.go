package fabric

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VXLANPort is the IANA port of VXLAN (RFC 7348), the default DstPort.
const VXLANPort = 4789

// VXLANOverhead is what VXLAN over IPv4 adds to a frame on the underlay:
// outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14). A VXLAN
// device's MTU is the underlay's minus this.
const VXLANOverhead = 50

// MaxVNI is the largest VXLAN network identifier (24 bits).
const MaxVNI = 1<<24 - 1

// vniBusyWait bounds how long CreateVXLAN waits for a VNI held by a
// device that is going away.
const vniBusyWait = 2 * time.Second

// VXLANSpec describes a VXLAN device that joins a bridge of a fabric
// namespace to the same segment on other hosts.
type VXLANSpec struct {
	Name string // interface name inside Namespace
	VNI  uint32 // 1..MaxVNI
	// Namespace is where the device lives and Master (a bridge there) is
	// the bridge it is enslaved to ("" = none).
	Namespace, Master string
	// UnderlayNS is the namespace whose UDP socket carries the device's
	// packets ("" = the Session's host namespace): the device is created
	// by a netlink socket in that namespace and born in Namespace, and the
	// kernel keeps its socket where it was created.
	UnderlayNS string
	Local      netip.Addr // source address of the outer packets; zero: chosen by routing
	Port       int        // UDP destination port; 0: VXLANPort
	MTU        int        // 0: kernel default (underlay MTU - 50)
}

func (v VXLANSpec) check() error {
	if err := checkIfName(v.Name); err != nil {
		return err
	}
	if err := checkNetnsName(v.Namespace); err != nil {
		return err
	}
	if v.UnderlayNS != "" {
		if err := checkNetnsName(v.UnderlayNS); err != nil {
			return err
		}
	}
	if v.VNI == 0 || v.VNI > MaxVNI {
		return fmt.Errorf("VNI %d: outside 1..%d: %w", v.VNI, MaxVNI, ErrInvalid)
	}
	if v.Local.IsValid() && !v.Local.Is4() {
		return fmt.Errorf("local address %s: not IPv4: %w", v.Local, ErrInvalid)
	}
	if v.Port < 0 || v.Port > 65535 {
		return fmt.Errorf("port %d: %w", v.Port, ErrInvalid)
	}
	if v.Master != "" {
		if err := checkIfName(v.Master); err != nil {
			return err
		}
	}
	return checkMTU(v.MTU)
}

// CreateVXLAN creates the device v describes, born in v.Namespace with its
// socket in v.UnderlayNS, with address learning off (the forwarding
// database is programmed with SyncFDB), IPv6 off, enslaved to v.Master and
// up. A device of that name and VNI that exists already is kept (its MTU
// and master are set); one with another configuration is ErrExists.
func (s *Session) CreateVXLAN(v VXLANSpec) error {
	if err := s.createVXLAN(v); err != nil {
		return fmt.Errorf("fabric: create vxlan %s (VNI %d) in %s: %w", v.Name, v.VNI, nsLabel(v.Namespace), err)
	}
	return nil
}

func (s *Session) createVXLAN(v VXLANSpec) error {
	if err := v.check(); err != nil {
		return err
	}
	if v.Port == 0 {
		v.Port = VXLANPort
	}
	et, err := s.entry(v.Namespace)
	if err != nil {
		return err
	}
	l, err := linkByName(et.h, v.Namespace, v.Name)
	switch {
	case errors.Is(err, ErrNotFound):
		eu, err := s.entry(v.UnderlayNS)
		if err != nil {
			return fmt.Errorf("underlay: %w", err)
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = v.Name
		attrs.MTU = v.MTU
		attrs.Namespace = netlink.NsFd(int(et.fd))
		dev := &netlink.Vxlan{LinkAttrs: attrs, VxlanId: int(v.VNI), Port: v.Port, Learning: false}
		if v.Local.IsValid() {
			dev.SrcAddr = net.IP(v.Local.AsSlice())
		}
		// A device of a namespace being destroyed keeps its VNI for a
		// moment after the namespace's deletion: wait that out.
		for deadline := time.Now().Add(vniBusyWait); ; {
			err = eu.h.LinkAdd(dev)
			if !errors.Is(err, unix.EEXIST) || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("%w (another device already uses VNI %d on port %d in %s)", ErrExists, v.VNI, v.Port, nsLabel(v.UnderlayNS))
			}
			return err
		}
		if l, err = linkByName(et.h, v.Namespace, v.Name); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		vx, ok := l.(*netlink.Vxlan)
		if !ok || vx.VxlanId != int(v.VNI) {
			return fmt.Errorf("%s is a %s: %w", v.Name, l.Type(), ErrExists)
		}
		if v.MTU != 0 && l.Attrs().MTU != v.MTU {
			if err := et.h.LinkSetMTU(l, v.MTU); err != nil {
				return fmt.Errorf("set MTU: %w", err)
			}
		}
	}
	if err := runIn(et.fd, func() error { return disableIPv6(v.Name) }); err != nil {
		return err
	}
	if v.Master != "" {
		br, err := linkByName(et.h, v.Namespace, v.Master)
		if err != nil {
			return fmt.Errorf("master: %w", err)
		}
		if l.Attrs().MasterIndex != br.Attrs().Index {
			if err := et.h.LinkSetMasterByIndex(l, br.Attrs().Index); err != nil {
				return fmt.Errorf("enslave to %s: %w", v.Master, err)
			}
		}
	}
	if err := et.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	return nil
}

// FDBEntry is one static forwarding entry of a VXLAN device: frames to MAC
// go to the VTEP at Dst. The all-zero MAC is the default destination: each
// such entry receives a copy of every broadcast, multicast and unknown
// unicast frame (head-end replication).
type FDBEntry struct {
	MAC net.HardwareAddr
	Dst netip.Addr
}

// ZeroMAC is the MAC of default (flooding) entries.
var ZeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

func (e FDBEntry) key() string { return e.MAC.String() + "@" + e.Dst.String() }

func (e FDBEntry) String() string { return e.MAC.String() + " -> " + e.Dst.String() }

// FDB returns the static entries of the VXLAN device dev in ns (those with
// a remote destination), sorted.
func (s *Session) FDB(ns, dev string) ([]FDBEntry, error) {
	e, l, err := s.vxlanLink(ns, dev)
	if err != nil {
		return nil, fmt.Errorf("fabric: fdb of %s: %w", dev, err)
	}
	out, err := fdbOf(e.h, l)
	if err != nil {
		return nil, fmt.Errorf("fabric: fdb of %s in %s: %w", dev, nsLabel(ns), err)
	}
	return out, nil
}

func (s *Session) vxlanLink(ns, dev string) (*nsEntry, netlink.Link, error) {
	e, err := s.entry(ns)
	if err != nil {
		return nil, nil, err
	}
	l, err := linkByName(e.h, ns, dev)
	if err != nil {
		return nil, nil, err
	}
	if l.Type() != "vxlan" {
		return nil, nil, fmt.Errorf("%s is a %s, not a vxlan: %w", dev, l.Type(), ErrInvalid)
	}
	return e, l, nil
}

func fdbOf(h *netlink.Handle, l netlink.Link) ([]FDBEntry, error) {
	neighs, err := retryDump(func() ([]netlink.Neigh, error) {
		return h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	})
	if err != nil {
		return nil, err
	}
	var out []FDBEntry
	for _, n := range neighs {
		if n.LinkIndex != l.Attrs().Index || n.IP == nil || len(n.HardwareAddr) != 6 {
			continue // the bridge's own entries for the port carry no destination
		}
		dst, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		out = append(out, FDBEntry{MAC: n.HardwareAddr, Dst: dst.Unmap()})
	}
	slices.SortFunc(out, func(a, b FDBEntry) int {
		if c := bytes.Compare(a.MAC, b.MAC); c != 0 {
			return c
		}
		return a.Dst.Compare(b.Dst)
	})
	return out, nil
}

// SyncFDB makes the static entries of the VXLAN device dev in ns exactly
// want: missing ones are added (a unicast MAC's destination replaced in
// place), others removed. It reports how many it added and removed; an
// entry already right costs nothing, so calling it periodically heals
// entries lost or changed behind the caller's back.
func (s *Session) SyncFDB(ns, dev string, want []FDBEntry) (added, removed int, err error) {
	for _, w := range want {
		if len(w.MAC) != 6 || !w.Dst.Is4() {
			return 0, 0, fmt.Errorf("fabric: fdb of %s: entry %v: want a 6-byte MAC and an IPv4 destination: %w", dev, w, ErrInvalid)
		}
	}
	e, l, err := s.vxlanLink(ns, dev)
	if err != nil {
		return 0, 0, fmt.Errorf("fabric: fdb of %s: %w", dev, err)
	}
	have, err := fdbOf(e.h, l)
	if err != nil {
		return 0, 0, fmt.Errorf("fabric: fdb of %s in %s: %w", dev, nsLabel(ns), err)
	}
	haveSet := map[string]bool{}
	for _, h := range have {
		haveSet[h.key()] = true
	}
	wantSet := map[string]bool{}
	var errs []error
	// Additions first, so a moved MAC is never without a destination.
	for _, w := range want {
		wantSet[w.key()] = true
		if haveSet[w.key()] {
			continue
		}
		n := fdbNeigh(l, w)
		if bytes.Equal(w.MAC, ZeroMAC) {
			err = e.h.NeighAppend(n) // several default destinations
		} else {
			err = e.h.NeighSet(n) // replaces the destination of a known MAC
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("add %v: %w", w, err))
			continue
		}
		added++
	}
	for _, h := range have {
		if wantSet[h.key()] {
			continue
		}
		if err := e.h.NeighDel(fdbNeigh(l, h)); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove %v: %w", h, err))
			continue
		}
		removed++
	}
	if err := errors.Join(errs...); err != nil {
		return added, removed, fmt.Errorf("fabric: fdb of %s in %s: %w", dev, nsLabel(ns), err)
	}
	return added, removed, nil
}

func fdbNeigh(l netlink.Link, e FDBEntry) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    l.Attrs().Index,
		Family:       unix.AF_BRIDGE,
		State:        netlink.NUD_PERMANENT | netlink.NUD_NOARP,
		Flags:        netlink.NTF_SELF,
		IP:           net.IP(e.Dst.AsSlice()),
		HardwareAddr: e.MAC,
	}
}
