package linktest

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/netstation/netstation/internal/nstest"
)

// Pair is two test-owned namespaces A and B joined by a veth pair, vA in A
// and vB in B, with IPv6 off so no router solicitation or MLD report adds
// noise.
type Pair struct {
	A, B           *nstest.NS
	IndexA, IndexB int // interface indexes of vA and vB
	MACA, MACB     net.HardwareAddr
}

// NewPair creates the namespaces and the veth (MTU mtu) for t; they are
// removed when t ends.
func NewPair(t testing.TB, mtu int) *Pair {
	t.Helper()
	p := &Pair{A: nstest.New(t, "a"), B: nstest.New(t, "b")}
	for _, ns := range []*nstest.NS{p.A, p.B} {
		err := ns.Do(func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0)
		})
		if err != nil {
			t.Fatalf("disable IPv6: %v", err)
		}
	}
	la, lb := nstest.Veth(t, p.A, "vA", p.B, "vB", mtu)
	p.IndexA, p.IndexB = la.Attrs().Index, lb.Attrs().Index
	p.MACA, p.MACB = la.Attrs().HardwareAddr, lb.Attrs().HardwareAddr
	return p
}

// Open opens a link with open on a locked thread inside ns and closes it
// when the test ends (before the namespace goes).
func Open[L interface{ Close() error }](t testing.TB, ns *nstest.NS, open func() (L, error)) L {
	t.Helper()
	var l L
	if err := ns.Do(func() (err error) { l, err = open(); return err }); err != nil {
		t.Fatalf("open link in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// KernelUDP makes A's kernel stack the peer of a user-level stack on vB:
// it gives vA the address addr, a permanent neighbour entry mapping peer to
// vB's MAC (the user-level side answers no ARP), and returns a UDP socket
// in A bound to addr's address and port, closed when the test ends.
func (p *Pair) KernelUDP(t testing.TB, addr netip.Prefix, peer netip.Addr, port int) *net.UDPConn {
	t.Helper()
	va, err := p.A.Handle.LinkByIndex(p.IndexA)
	if err != nil {
		t.Fatal(err)
	}
	p.A.AddrAdd(t, va, addr.String())
	if err := p.A.Handle.NeighAdd(&netlink.Neigh{LinkIndex: p.IndexA, State: netlink.NUD_PERMANENT, IP: net.IP(peer.AsSlice()), HardwareAddr: p.MACB}); err != nil {
		t.Fatal(err)
	}
	var conn *net.UDPConn
	if err := p.A.Do(func() (err error) {
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr.Addr(), uint16(port))))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
