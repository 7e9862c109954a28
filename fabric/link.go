package fabric

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// dumpRetries bounds the retries of a netlink dump that the kernel
// interrupted because the table changed under it.
const dumpRetries = 10

// retryDump calls f until it returns something other than
// netlink.ErrDumpInterrupted (whose results may be partial).
func retryDump[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range dumpRetries {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, fmt.Errorf("dump interrupted %d times in a row: %w", dumpRetries, err)
}

// notFound maps netlink's "no such link" to ErrNotFound.
func notFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV)
}

// linkByName finds ifname with h; a missing link wraps ErrNotFound.
func linkByName(h *netlink.Handle, ns, ifname string) (netlink.Link, error) {
	if err := checkIfName(ifname); err != nil {
		return nil, err
	}
	l, err := h.LinkByName(ifname)
	if err != nil {
		if notFound(err) {
			return nil, fmt.Errorf("link %s in %s: %w", ifname, nsLabel(ns), ErrNotFound)
		}
		return nil, fmt.Errorf("find link %s in %s: %w", ifname, nsLabel(ns), err)
	}
	return l, nil
}

// VethSpec describes a veth pair whose ends are created directly in their
// namespaces.
type VethSpec struct {
	NameA, NamespaceA string // end A: interface name and namespace ("" = host)
	NameB, NamespaceB string // end B
	MACA, MACB        net.HardwareAddr
	MTU               int    // 0 = kernel default (1500)
	MasterA           string // bridge in NamespaceA to enslave end A to; "" = none
	// PinMACB adds a static forwarding entry for MACB on end A (which
	// needs MasterA and MACB): the bridge sends frames for B by its port
	// from the start instead of flooding them to every port until B has
	// sent a frame. With 1,000 peripherals, joins to members not yet
	// started were flooded to all 1,000 ports (br_flood 12 % of all
	// samples, issue 16).
	PinMACB bool
}

func (v VethSpec) check() error {
	for _, n := range []string{v.NameA, v.NameB} {
		if err := checkIfName(n); err != nil {
			return err
		}
	}
	for _, ns := range []string{v.NamespaceA, v.NamespaceB} {
		if ns != "" {
			if err := checkNetnsName(ns); err != nil {
				return err
			}
		}
	}
	if v.NamespaceA == v.NamespaceB && v.NameA == v.NameB {
		return fmt.Errorf("both ends named %s in one namespace: %w", v.NameA, ErrInvalid)
	}
	for _, mac := range []net.HardwareAddr{v.MACA, v.MACB} {
		if err := checkMAC(mac); err != nil {
			return err
		}
	}
	if err := checkMTU(v.MTU); err != nil {
		return err
	}
	if v.MasterA != "" {
		return checkIfName(v.MasterA)
	}
	return nil
}

// checkMAC accepts nil (kernel's choice) or a unicast, non-zero EUI-48.
func checkMAC(mac net.HardwareAddr) error {
	switch {
	case mac == nil:
		return nil
	case len(mac) != 6:
		return fmt.Errorf("MAC %v: not 6 bytes: %w", mac, ErrInvalid)
	case mac[0]&1 != 0:
		return fmt.Errorf("MAC %v: multicast: %w", mac, ErrInvalid)
	case bytes.Equal(mac, make([]byte, 6)):
		return fmt.Errorf("MAC %v: all zero: %w", mac, ErrInvalid)
	}
	return nil
}

// checkMTU accepts 0 (default) or an Ethernet MTU veth and bridge accept.
func checkMTU(mtu int) error {
	if mtu != 0 && (mtu < 68 || mtu > 65535) {
		return fmt.Errorf("MTU %d: outside 68..65535: %w", mtu, ErrInvalid)
	}
	return nil
}

// CreateVeth creates the pair described by s: end A in NamespaceA, end B
// born directly in NamespaceB, end A enslaved to MasterA, IPv6 off on both
// ends (written from inside each namespace before the ends go up), both up.
//
// When end A exists already and is a veth whose peer is NameB in
// NamespaceB, the pair is reconciled with s (MTU, MACs, master, IPv6, up)
// and the call succeeds; a link named NameA that is anything else gives
// ErrExists.
func (s *Session) CreateVeth(v VethSpec) error {
	if err := s.createVeth(v); err != nil {
		return fmt.Errorf("fabric: create veth %s: %w", v.NameA, err)
	}
	return nil
}

func (s *Session) createVeth(v VethSpec) error {
	if err := v.check(); err != nil {
		return err
	}
	ea, err := s.entry(v.NamespaceA)
	if err != nil {
		return err
	}
	eb, err := s.entry(v.NamespaceB)
	if err != nil {
		return err
	}
	masterIndex := 0
	if v.MasterA != "" {
		m, err := linkByName(ea.h, v.NamespaceA, v.MasterA)
		if err != nil {
			return fmt.Errorf("master: %w", err)
		}
		masterIndex = m.Attrs().Index
	}
	la, err := linkByName(ea.h, v.NamespaceA, v.NameA)
	var lb netlink.Link
	switch {
	case errors.Is(err, ErrNotFound):
		attrs := netlink.NewLinkAttrs()
		attrs.Name = v.NameA
		attrs.MTU = v.MTU
		attrs.HardwareAddr = v.MACA
		attrs.MasterIndex = masterIndex
		veth := &netlink.Veth{
			LinkAttrs:        attrs,
			PeerName:         v.NameB,
			PeerHardwareAddr: v.MACB,
			PeerNamespace:    netlink.NsFd(int(eb.fd)),
		}
		if err := ea.h.LinkAdd(veth); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("peer %s in %s: %w", v.NameB, nsLabel(v.NamespaceB), ErrExists)
			}
			return err
		}
		if la, err = linkByName(ea.h, v.NamespaceA, v.NameA); err != nil {
			return err
		}
		if lb, err = linkByName(eb.h, v.NamespaceB, v.NameB); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		if lb, err = s.reconcileVeth(v, ea, eb, la, masterIndex); err != nil {
			return err
		}
	}
	if err := runIn(ea.fd, func() error { return disableIPv6(v.NameA) }); err != nil {
		return err
	}
	if err := runIn(eb.fd, func() error { return disableIPv6(v.NameB) }); err != nil {
		return err
	}
	if v.PinMACB && masterIndex != 0 && len(v.MACB) == 6 {
		if err := ea.h.NeighSet(&netlink.Neigh{
			LinkIndex: la.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_NOARP,
			Flags: netlink.NTF_MASTER, HardwareAddr: v.MACB,
		}); err != nil {
			return fmt.Errorf("static forwarding entry for %s on %s: %w", v.MACB, v.NameA, err)
		}
	}
	if err := ea.h.LinkSetUp(la); err != nil {
		return fmt.Errorf("set %s up: %w", v.NameA, err)
	}
	if err := eb.h.LinkSetUp(lb); err != nil {
		return fmt.Errorf("set %s up: %w", v.NameB, err)
	}
	return nil
}

// reconcileVeth checks that la is end A of the pair v describes and brings
// its mutable attributes in line with v. It returns end B.
func (s *Session) reconcileVeth(v VethSpec, ea, eb *nsEntry, la netlink.Link, masterIndex int) (netlink.Link, error) {
	if la.Type() != "veth" {
		return nil, fmt.Errorf("%s in %s is a %s: %w", v.NameA, nsLabel(v.NamespaceA), la.Type(), ErrExists)
	}
	lb, err := linkByName(eb.h, v.NamespaceB, v.NameB)
	if err != nil || lb.Type() != "veth" ||
		la.Attrs().ParentIndex != lb.Attrs().Index || lb.Attrs().ParentIndex != la.Attrs().Index {
		return nil, fmt.Errorf("%s in %s is a veth whose peer is not %s in %s: %w",
			v.NameA, nsLabel(v.NamespaceA), v.NameB, nsLabel(v.NamespaceB), ErrExists)
	}
	for _, end := range []struct {
		h   *netlink.Handle
		l   netlink.Link
		mac net.HardwareAddr
	}{{ea.h, la, v.MACA}, {eb.h, lb, v.MACB}} {
		a := end.l.Attrs()
		if v.MTU != 0 && a.MTU != v.MTU {
			if err := end.h.LinkSetMTU(end.l, v.MTU); err != nil {
				return nil, fmt.Errorf("set MTU of %s: %w", a.Name, err)
			}
		}
		if end.mac != nil && !bytes.Equal(a.HardwareAddr, end.mac) {
			if err := end.h.LinkSetHardwareAddr(end.l, end.mac); err != nil {
				return nil, fmt.Errorf("set MAC of %s: %w", a.Name, err)
			}
		}
	}
	if la.Attrs().MasterIndex != masterIndex {
		var err error
		if masterIndex == 0 {
			err = ea.h.LinkSetNoMaster(la)
		} else {
			err = ea.h.LinkSetMasterByIndex(la, masterIndex)
		}
		if err != nil {
			return nil, fmt.Errorf("set master of %s: %w", v.NameA, err)
		}
	}
	return lb, nil
}

// CreateBridge creates a bridge in ns ("" = host): STP off, forward delay
// 0, default ageing, IPv6 off, up; in a namespace (not the host) bridged
// frames also skip netfilter (see bridgeSkipNetfilter). An existing bridge of that name is
// reconciled (MTU, STP, forward delay, IPv6, up); another kind of link of
// that name gives ErrExists. mtu 0 keeps the kernel's default.
func (s *Session) CreateBridge(ns, name string, mtu int) error {
	if err := s.createBridge(ns, name, mtu); err != nil {
		return fmt.Errorf("fabric: create bridge %s in %s: %w", name, nsLabel(ns), err)
	}
	return nil
}

func (s *Session) createBridge(ns, name string, mtu int) error {
	if err := checkIfName(name); err != nil {
		return err
	}
	if err := checkMTU(mtu); err != nil {
		return err
	}
	e, err := s.entry(ns)
	if err != nil {
		return err
	}
	l, err := linkByName(e.h, ns, name)
	switch {
	case errors.Is(err, ErrNotFound):
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MTU = mtu
		if err := e.h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return ErrExists
			}
			return err
		}
		if l, err = linkByName(e.h, ns, name); err != nil {
			return err
		}
	case err != nil:
		return err
	case l.Type() != "bridge":
		return fmt.Errorf("%s is a %s: %w", name, l.Type(), ErrExists)
	case mtu != 0 && l.Attrs().MTU != mtu:
		if err := e.h.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set MTU: %w", err)
		}
	}
	if err := runIn(e.fd, func() error { return disableIPv6(name) }); err != nil {
		return err
	}
	if ns != "" {
		// A namespace of the fabric's own: its bridged frames need no
		// netfilter hooks (the host's are left as they are).
		if err := runIn(e.fd, bridgeSkipNetfilter); err != nil {
			return err
		}
	}
	if err := setBridgeTimers(e, l.Attrs().Index); err != nil {
		return err
	}
	if err := e.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	return nil
}

// setBridgeTimers turns STP off and sets the forward delay to 0 with one
// RTM_NEWLINK (netlink.Bridge has no fields for either). With STP off the
// kernel forwards on a new port at once anyway; the zero delay keeps it so
// if somebody turns STP on.
func setBridgeTimers(e *nsEntry, index int) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	data.AddRtAttr(nl.IFLA_BR_STP_STATE, nl.Uint32Attr(0))
	data.AddRtAttr(nl.IFLA_BR_FORWARD_DELAY, nl.Uint32Attr(0))
	req.AddData(info)
	// The request opens its own socket in the calling thread's namespace.
	err := runIn(e.fd, func() error {
		_, err := req.Execute(unix.NETLINK_ROUTE, 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("set STP off and forward delay 0: %w", err)
	}
	return nil
}

// DeleteLink deletes ifname in ns ("" = host); deleting one end of a veth
// deletes both. An absent link is not an error.
func (s *Session) DeleteLink(ns, ifname string) error {
	e, err := s.entry(ns)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return fmt.Errorf("fabric: delete link %s: %w", ifname, err)
	}
	l, err := linkByName(e.h, ns, ifname)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err == nil {
		if err = e.h.LinkDel(l); notFound(err) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("fabric: delete link %s in %s: %w", ifname, nsLabel(ns), err)
	}
	return nil
}

// SetAddr makes cidr the only IPv4 address of ifname in ns ("" = host):
// other IPv4 addresses on it are removed, the wanted one is added or
// replaced.
func (s *Session) SetAddr(ns, ifname string, cidr netip.Prefix) error {
	if err := s.setAddr(ns, ifname, cidr); err != nil {
		return fmt.Errorf("fabric: set address %s on %s in %s: %w", cidr, ifname, nsLabel(ns), err)
	}
	return nil
}

func (s *Session) setAddr(ns, ifname string, cidr netip.Prefix) error {
	if !cidr.IsValid() || !cidr.Addr().Is4() {
		return fmt.Errorf("not an IPv4 prefix: %w", ErrInvalid)
	}
	e, err := s.entry(ns)
	if err != nil {
		return err
	}
	l, err := linkByName(e.h, ns, ifname)
	if err != nil {
		return err
	}
	want := &netlink.Addr{IPNet: &net.IPNet{
		IP:   cidr.Addr().AsSlice(),
		Mask: net.CIDRMask(cidr.Bits(), 32),
	}}
	have, err := retryDump(func() ([]netlink.Addr, error) { return e.h.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range have {
		if a.IPNet.IP.Equal(want.IP) && bytes.Equal(a.IPNet.Mask, want.Mask) {
			continue
		}
		if err := e.h.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove %s: %w", a.IPNet, err)
		}
	}
	return e.h.AddrReplace(l, want)
}

// SetLinkState sets ifname in ns ("" = host) up or down.
func (s *Session) SetLinkState(ns, ifname string, up bool) error {
	e, err := s.entry(ns)
	if err == nil {
		var l netlink.Link
		if l, err = linkByName(e.h, ns, ifname); err == nil {
			if up {
				err = e.h.LinkSetUp(l)
			} else {
				err = e.h.LinkSetDown(l)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("fabric: set %s in %s up=%t: %w", ifname, nsLabel(ns), up, err)
	}
	return nil
}

// LinkStats returns the packets ifname in ns ("" = host) received and sent,
// and the packets it dropped in either direction.
func (s *Session) LinkStats(ns, ifname string) (rx, tx, drops uint64, err error) {
	e, err := s.entry(ns)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("fabric: link stats of %s: %w", ifname, err)
	}
	l, err := linkByName(e.h, ns, ifname)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("fabric: link stats: %w", err)
	}
	st := l.Attrs().Statistics
	if st == nil {
		return 0, 0, 0, fmt.Errorf("fabric: link stats of %s in %s: kernel sent none", ifname, nsLabel(ns))
	}
	return st.RxPackets, st.TxPackets, st.RxDropped + st.TxDropped, nil
}
