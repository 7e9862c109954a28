package fabric

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/privtest"
	"github.com/vishvananda/netlink"
)

// star builds a bridge namespace and n leaf namespaces, each with a veth
// "eth0" whose other end "p<i>" is a port of bridge "br". It returns the
// leaf namespace names.
func star(t testing.TB, s *Session, p string, n, mtu int) (brNS string, leaves []string) {
	t.Helper()
	brNS = p + "fab"
	if err := s.CreateNetns(brNS); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBridge(brNS, "br", mtu); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		leaf := fmt.Sprintf("%sn%d", p, i)
		if err := s.CreateNetns(leaf); err != nil {
			t.Fatal(err)
		}
		spec := VethSpec{
			NameA: fmt.Sprintf("p%d", i), NamespaceA: brNS, MasterA: "br",
			NameB: "eth0", NamespaceB: leaf,
			MACB: net.HardwareAddr{0x02, 0x4e, 0x53, 0, 0, byte(i + 1)},
			MTU:  mtu,
		}
		if err := s.CreateVeth(spec); err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, leaf)
	}
	return brNS, leaves
}

// udpPair opens a kernel UDP socket in each namespace (bound to its
// address) and checks that n datagrams cross from the first to the second.
func udpCross(t *testing.T, s *Session, fromNS, toNS string, from, to netip.Addr, n int) {
	t.Helper()
	var rc, sc net.PacketConn
	if err := s.Do(toNS, func() (err error) {
		rc, err = net.ListenPacket("udp4", netip.AddrPortFrom(to, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := s.Do(fromNS, func() (err error) {
		sc, err = net.ListenPacket("udp4", netip.AddrPortFrom(from, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	dst := rc.LocalAddr()
	buf := make([]byte, 64)
	for i := range n {
		msg := fmt.Appendf(nil, "hello %d", i)
		if _, err := sc.WriteTo(msg, dst); err != nil {
			t.Fatal(err)
		}
		rc.SetReadDeadline(time.Now().Add(3 * time.Second))
		k, src, err := rc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram %d from %s to %s: %v", i, fromNS, toNS, err)
		}
		if !bytes.Equal(buf[:k], msg) || src.(*net.UDPAddr).IP.String() != from.String() {
			t.Fatalf("got %q from %v, want %q from %v", buf[:k], src, msg, from)
		}
	}
}

func TestVethBridgeTraffic(t *testing.T) {
	p := testPrefix(t)
	s, err := NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	brNS, leaves := star(t, s, p, 2, 1400)

	addrs := []netip.Prefix{netip.MustParsePrefix("10.213.0.1/24"), netip.MustParsePrefix("10.213.0.2/24")}
	for i, leaf := range leaves {
		// A stale address first: SetAddr must replace it.
		if err := s.SetAddr(leaf, "eth0", netip.MustParsePrefix("10.99.0.9/16")); err != nil {
			t.Fatal(err)
		}
		if err := s.SetAddr(leaf, "eth0", addrs[i]); err != nil {
			t.Fatal(err)
		}
		if err := s.SetAddr(leaf, "eth0", addrs[i]); err != nil {
			t.Fatalf("SetAddr twice: %v", err)
		}
	}
	udpCross(t, s, leaves[0], leaves[1], addrs[0].Addr(), addrs[1].Addr(), 5)
	udpCross(t, s, leaves[1], leaves[0], addrs[1].Addr(), addrs[0].Addr(), 5)

	for i, leaf := range leaves {
		h, err := s.Handle(leaf)
		if err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		a := l.Attrs()
		if a.MTU != 1400 || a.HardwareAddr.String() != fmt.Sprintf("02:4e:53:00:00:%02x", i+1) || a.Flags&net.FlagUp == 0 {
			t.Errorf("%s/eth0: mtu %d mac %s flags %v", leaf, a.MTU, a.HardwareAddr, a.Flags)
		}
		v4, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		if len(v4) != 1 || v4[0].IPNet.String() != addrs[i].String() {
			t.Errorf("%s/eth0 IPv4 addresses %v, want only %s", leaf, v4, addrs[i])
		}
		rx, tx, _, err := s.LinkStats(leaf, "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if rx < 5 || tx < 5 {
			t.Errorf("%s/eth0 counters rx %d tx %d after 5 datagrams each way", leaf, rx, tx)
		}
	}
	// IPv6 really off: no IPv6 address anywhere, not even link-local.
	for _, ns := range append([]string{brNS}, leaves...) {
		h, err := s.Handle(ns)
		if err != nil {
			t.Fatal(err)
		}
		v6, err := h.AddrList(nil, netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		if len(v6) != 0 {
			t.Errorf("IPv6 addresses in %s: %v", ns, v6)
		}
	}
	for _, port := range []string{"br", "p0", "p1"} {
		if v := readIn(t, brNS, "/proc/sys/net/ipv6/conf/"+port+"/disable_ipv6"); v != "1" {
			t.Errorf("%s disable_ipv6 = %s", port, v)
		}
	}
	// Bridged frames skip netfilter in the fabric's namespace (where the
	// kernel has br_netfilter at all).
	if _, err := os.Stat("/proc/sys/net/bridge"); err == nil {
		for _, key := range bridgeNetfilterKeys {
			if v := readIn(t, brNS, "/proc/sys/"+key); v != "0" {
				t.Errorf("%s = %s in the bridge's namespace, want 0", key, v)
			}
		}
	}
	// Ports are enslaved to the bridge; STP off, forward delay 0.
	h, _ := s.Handle(brNS)
	br, err := h.LinkByName("br")
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"p0", "p1"} {
		l, err := h.LinkByName(port)
		if err != nil {
			t.Fatal(err)
		}
		if l.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("%s not a port of br", port)
		}
	}
	privtest.Tool(t, "ip")
	out, err := exec.Command("ip", "-n", brNS, "-d", "link", "show", "br").CombinedOutput()
	if err != nil {
		t.Fatalf("ip -d link: %v: %s", err, out)
	}
	for _, want := range []string{"forward_delay 0 ", "stp_state 0 ", "mtu 1400 "} {
		if !strings.Contains(string(out), want) {
			t.Errorf("bridge lacks %q:\n%s", want, out)
		}
	}
}

func TestCreateIdempotent(t *testing.T) {
	p := testPrefix(t)
	s, err := NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	brNS, leaves := star(t, s, p, 1, 0)
	h, _ := s.Handle(brNS)
	before, err := h.LinkByName("p0")
	if err != nil {
		t.Fatal(err)
	}
	spec := VethSpec{NameA: "p0", NamespaceA: brNS, MasterA: "br", NameB: "eth0", NamespaceB: leaves[0],
		MACB: net.HardwareAddr{0x02, 0x4e, 0x53, 0, 0, 1}}
	if err := s.CreateVeth(spec); err != nil {
		t.Fatalf("same spec again: %v", err)
	}
	if err := s.CreateBridge(brNS, "br", 0); err != nil {
		t.Fatalf("bridge again: %v", err)
	}
	after, _ := h.LinkByName("p0")
	if after.Attrs().Index != before.Attrs().Index {
		t.Fatal("veth recreated instead of kept")
	}
	// Reconciled: a new MTU and MAC are applied to the existing pair.
	spec.MTU, spec.MACB = 1280, net.HardwareAddr{0x02, 0x4e, 0x53, 0, 0, 0x77}
	if err := s.CreateVeth(spec); err != nil {
		t.Fatal(err)
	}
	lh, _ := s.Handle(leaves[0])
	l, _ := lh.LinkByName("eth0")
	if l.Attrs().MTU != 1280 || l.Attrs().HardwareAddr.String() != "02:4e:53:00:00:77" {
		t.Errorf("not reconciled: mtu %d mac %s", l.Attrs().MTU, l.Attrs().HardwareAddr)
	}

	wrongPeer := spec
	wrongPeer.NameB = "eth1"
	if err := s.CreateVeth(wrongPeer); !errors.Is(err, ErrExists) {
		t.Errorf("veth with another peer: %v, want ErrExists", err)
	}
	if err := s.CreateBridge(brNS, "p0", 0); !errors.Is(err, ErrExists) {
		t.Errorf("bridge named like a veth: %v, want ErrExists", err)
	}
	clash := VethSpec{NameA: "q0", NamespaceA: brNS, NameB: "eth0", NamespaceB: leaves[0]}
	if err := s.CreateVeth(clash); !errors.Is(err, ErrExists) {
		t.Errorf("peer name taken: %v, want ErrExists", err)
	}
	noBridge := VethSpec{NameA: "q1", NamespaceA: brNS, NameB: "e1", NamespaceB: leaves[0], MasterA: "nobr"}
	if err := s.CreateVeth(noBridge); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing master: %v, want ErrNotFound", err)
	}
	for _, bad := range []VethSpec{
		{NameA: "x", NameB: "x"},
		{NameA: "toolong-name-xxxx", NameB: "y"},
		{NameA: "x", NameB: "y", MACA: net.HardwareAddr{1, 2, 3, 4, 5, 6}},
		{NameA: "x", NameB: "y", MTU: 20},
		{NameA: "x", NameB: "y", NamespaceB: "a/b"},
	} {
		if err := s.CreateVeth(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateVeth(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	if err := s.CreateVeth(VethSpec{NameA: "x", NameB: "y", NamespaceB: p + "absent"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("absent namespace: %v, want ErrNotFound", err)
	}
	if err := s.SetAddr(leaves[0], "eth0", netip.MustParsePrefix("fd00::1/64")); !errors.Is(err, ErrInvalid) {
		t.Errorf("IPv6 SetAddr: %v, want ErrInvalid", err)
	}

	if err := s.SetLinkState(leaves[0], "eth0", false); err != nil {
		t.Fatal(err)
	}
	l, _ = lh.LinkByName("eth0")
	if l.Attrs().Flags&net.FlagUp != 0 {
		t.Error("still up")
	}
	if err := s.DeleteLink(brNS, "p0"); err != nil {
		t.Fatal(err)
	}
	if _, err := lh.LinkByName("eth0"); err == nil {
		t.Error("peer survived DeleteLink of its veth")
	}
	if err := s.DeleteLink(brNS, "p0"); err != nil {
		t.Errorf("DeleteLink of an absent link: %v", err)
	}
}

// A Session notices that a cached namespace was deleted and recreated
// under the same name by someone else, and acts on the new one.
func TestSessionStaleCache(t *testing.T) {
	p := testPrefix(t)
	s, err := NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ns := p + "c"
	if err := s.CreateNetns(ns); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBridge(ns, "b1", 0); err != nil {
		t.Fatal(err)
	}
	if err := DeleteNetns(ns); err != nil { // behind the Session's back
		t.Fatal(err)
	}
	if err := s.CreateBridge(ns, "b2", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("use of a deleted namespace: %v, want ErrNotFound", err)
	}
	if err := CreateNetns(ns); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBridge(ns, "b3", 0); err != nil {
		t.Fatal(err)
	}
	h, err := Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.LinkByName("b3"); err != nil {
		t.Errorf("bridge not in the new namespace: %v", err)
	}
	if _, err := h.LinkByName("b1"); err == nil {
		t.Error("the new namespace has the old one's bridge")
	}
	s.Close()
	if err := s.CreateBridge(ns, "b4", 0); !errors.Is(err, ErrClosed) {
		t.Errorf("closed session: %v", err)
	}
}

// TestPinnedMACIsNotFlooded: with PinMACB, the bridge holds a static entry
// for each leaf's MAC from the start, so a frame to a leaf that has never
// sent one goes to that leaf only; without, the bridge floods it to every
// port (here: the third leaf would see it).
func TestPinnedMACIsNotFlooded(t *testing.T) {
	p := testPrefix(t)
	s, err := NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	brNS := p + "fab"
	if err := s.CreateNetns(brNS); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBridge(brNS, "br", 1500); err != nil {
		t.Fatal(err)
	}
	macs := make([]net.HardwareAddr, 3)
	for i := range 3 {
		leaf := fmt.Sprintf("%sn%d", p, i)
		if err := s.CreateNetns(leaf); err != nil {
			t.Fatal(err)
		}
		macs[i] = net.HardwareAddr{0x02, 0x4e, 0x54, 0, 0, byte(i + 1)}
		if err := s.CreateVeth(VethSpec{NameA: fmt.Sprintf("p%d", i), NamespaceA: brNS, MasterA: "br",
			NameB: "eth0", NamespaceB: leaf, MACB: macs[i], PinMACB: true}); err != nil {
			t.Fatal(err)
		}
	}
	h, err := s.Handle(brNS)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		port, err := h.LinkByName(fmt.Sprintf("p%d", i))
		if err != nil {
			t.Fatal(err)
		}
		neighs, err := h.NeighList(port.Attrs().Index, netlink.FAMILY_ALL|7) // AF_BRIDGE
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, n := range neighs {
			if n.LinkIndex == port.Attrs().Index && n.HardwareAddr.String() == macs[i].String() && n.State&netlink.NUD_NOARP != 0 {
				found = true
			}
		}
		if !found {
			t.Errorf("no static forwarding entry for %s on p%d: %v", macs[i], i, neighs)
		}
	}
	// Leaf 0 sends to leaf 1, which has never sent a frame: a kernel
	// address and a permanent neighbour entry, so no ARP broadcast.
	from, to := netip.MustParseAddr("10.214.0.1"), netip.MustParseAddr("10.214.0.2")
	for i, a := range []netip.Addr{from, to} {
		if err := s.SetAddr(fmt.Sprintf("%sn%d", p, i), "eth0", netip.PrefixFrom(a, 24)); err != nil {
			t.Fatal(err)
		}
	}
	h0, err := s.Handle(p + "n0")
	if err != nil {
		t.Fatal(err)
	}
	eth0, err := h0.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h0.NeighAdd(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, Family: netlink.FAMILY_V4,
		State: netlink.NUD_PERMANENT, IP: to.AsSlice(), HardwareAddr: macs[1]}); err != nil {
		t.Fatal(err)
	}
	rx2, _, _, err := s.LinkStats(p+"n2", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	var sc net.PacketConn
	if err := s.Do(p+"n0", func() (err error) {
		sc, err = net.ListenPacket("udp4", netip.AddrPortFrom(from, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	// A listener on leaf 1, or it would answer with port unreachables,
	// after an ARP broadcast of its own.
	var rc net.PacketConn
	if err := s.Do(p+"n1", func() (err error) {
		rc, err = net.ListenPacket("udp4", netip.AddrPortFrom(to, 9).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rx1, _, _, _ := s.LinkStats(p+"n1", "eth0")
	for range 5 {
		if _, err := sc.WriteTo([]byte("pinned"), &net.UDPAddr{IP: to.AsSlice(), Port: 9}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n1, _, _, _ := s.LinkStats(p+"n1", "eth0")
		if n1 >= rx1+5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaf 1 received %d of 5 frames", n1-rx1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A flooded frame reaches every port: all 5 would show at leaf 2. A
	// stray frame of the kernel's own (a multicast report, an ARP of
	// another leaf) may arrive meanwhile and is not flooding (CI saw one).
	if n2, _, _, _ := s.LinkStats(p+"n2", "eth0"); n2 >= rx2+5 {
		t.Errorf("leaf 2 received %d frames while 5 went to leaf 1 (flooded)", n2-rx2)
	}
}
