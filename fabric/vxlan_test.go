package fabric

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// twoSites builds two simulated hosts: underlay namespaces joined by a
// veth (10.212.0.1 and .2), each with a fabric namespace (bridge "br",
// one leaf with a kernel address in 10.211.0.0/24) and a VXLAN device
// "vx" on the bridge whose socket lives in the site's underlay.
func twoSites(t testing.TB, s *Session, p string, vni uint32) (under, fab, leaf [2]string) {
	t.Helper()
	for i, side := range []string{"a", "b"} {
		under[i] = p + "u" + side
		if err := s.CreateNetns(under[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateVeth(VethSpec{NameA: "ul", NamespaceA: under[0], NameB: "ul", NamespaceB: under[1]}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		u := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 212, 0, byte(i + 1)}), 24)
		if err := s.SetAddr(under[i], "ul", u); err != nil {
			t.Fatal(err)
		}
		brNS, leaves := star(t, s, p+string(rune('a'+i)), 1, 1500-VXLANOverhead)
		fab[i], leaf[i] = brNS, leaves[0]
		// star gives both leaves one MAC; one segment needs two.
		lh, err := s.Handle(leaf[i])
		if err != nil {
			t.Fatal(err)
		}
		eth, err := lh.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if err := lh.LinkSetHardwareAddr(eth, net.HardwareAddr{0x02, 0x4e, 0x53, 0, 1, byte(i + 1)}); err != nil {
			t.Fatal(err)
		}
		if err := s.SetAddr(leaf[i], "eth0", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 211, 0, byte(i + 1)}), 24)); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateVXLAN(VXLANSpec{
			Name: "vx", VNI: vni, Namespace: fab[i], Master: "br", UnderlayNS: under[i],
			Local: u.Addr(), MTU: 1500 - VXLANOverhead,
		}); err != nil {
			t.Fatal(err)
		}
	}
	return under, fab, leaf
}

func TestVXLANCarriesASegmentBetweenHosts(t *testing.T) {
	p := testPrefix(t)
	s, err := NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	under, fab, leaf := twoSites(t, s, p, 7001)
	peer := [2]netip.Addr{netip.MustParseAddr("10.212.0.2"), netip.MustParseAddr("10.212.0.1")}

	h, err := s.Handle(fab[0])
	if err != nil {
		t.Fatal(err)
	}
	l, err := h.LinkByName("vx")
	if err != nil {
		t.Fatal(err)
	}
	vx := l.(*netlink.Vxlan)
	br, _ := h.LinkByName("br")
	if vx.VxlanId != 7001 || vx.Learning || vx.Port != VXLANPort || vx.MTU != 1450 || vx.MasterIndex != br.Attrs().Index || vx.OperState == netlink.OperDown {
		t.Errorf("vx: vni %d learning %v port %d mtu %d master %d (bridge %d) state %v",
			vx.VxlanId, vx.Learning, vx.Port, vx.MTU, vx.MasterIndex, br.Attrs().Index, vx.OperState)
	}
	// The UDP socket stays in the underlay namespace that created the
	// device; the fabric namespace has none.
	if !udpListening(t, s, under[0], VXLANPort) || udpListening(t, s, fab[0], VXLANPort) {
		t.Errorf("VXLAN socket: underlay %v, fabric %v; want only the underlay",
			udpListening(t, s, under[0], VXLANPort), udpListening(t, s, fab[0], VXLANPort))
	}

	// Default (flooding) entries to the peer carry ARP and then unicast.
	for i := range 2 {
		added, removed, err := s.SyncFDB(fab[i], "vx", []FDBEntry{{MAC: ZeroMAC, Dst: peer[i]}})
		if err != nil || added != 1 || removed != 0 {
			t.Fatalf("sync %s: added %d removed %d: %v", fab[i], added, removed, err)
		}
	}
	udpCross(t, s, leaf[0], leaf[1], netip.MustParseAddr("10.211.0.1"), netip.MustParseAddr("10.211.0.2"), 3)
	udpCross(t, s, leaf[1], leaf[0], netip.MustParseAddr("10.211.0.2"), netip.MustParseAddr("10.211.0.1"), 3)

	// Reconciling to the same state changes nothing.
	if added, removed, err := s.SyncFDB(fab[0], "vx", []FDBEntry{{MAC: ZeroMAC, Dst: peer[0]}}); err != nil || added+removed != 0 {
		t.Errorf("second sync: added %d removed %d: %v", added, removed, err)
	}
}

func TestSyncFDB(t *testing.T) {
	p := testPrefix(t)
	s, err := NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, fab, _ := twoSites(t, s, p, 7002)
	ns := fab[0]
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x42}
	a, b, c := netip.MustParseAddr("10.212.0.2"), netip.MustParseAddr("10.212.0.3"), netip.MustParseAddr("10.212.0.4")
	steps := []struct {
		want             []FDBEntry
		added, removed   int
		describeExpected string
	}{
		{[]FDBEntry{{ZeroMAC, a}, {ZeroMAC, b}, {mac, a}}, 3, 0, "two flood entries and one unicast"},
		{[]FDBEntry{{ZeroMAC, a}, {ZeroMAC, b}, {mac, a}}, 0, 0, "unchanged"},
		{[]FDBEntry{{ZeroMAC, a}, {ZeroMAC, c}, {mac, b}}, 2, 2, "one flood entry swapped, the unicast moved"},
		{nil, 0, 3, "all removed"},
	}
	for i, st := range steps {
		added, removed, err := s.SyncFDB(ns, "vx", st.want)
		if err != nil {
			t.Fatalf("step %d (%s): %v", i, st.describeExpected, err)
		}
		if added != st.added || removed != st.removed {
			t.Errorf("step %d (%s): added %d removed %d, want %d and %d", i, st.describeExpected, added, removed, st.added, st.removed)
		}
		got, err := s.FDB(ns, "vx")
		if err != nil {
			t.Fatal(err)
		}
		if !sameEntries(got, st.want) {
			t.Errorf("step %d (%s): fdb %v, want %v", i, st.describeExpected, got, st.want)
		}
	}

	// An entry deleted behind our back is put back by the next sync.
	want := []FDBEntry{{ZeroMAC, a}, {mac, b}}
	if _, _, err := s.SyncFDB(ns, "vx", want); err != nil {
		t.Fatal(err)
	}
	h, _ := s.Handle(ns)
	l, _ := h.LinkByName("vx")
	if err := h.NeighDel(fdbNeigh(l, want[1])); err != nil {
		t.Fatal(err)
	}
	if added, _, err := s.SyncFDB(ns, "vx", want); err != nil || added != 1 {
		t.Errorf("heal: added %d: %v", added, err)
	}
}

func TestVXLANBadInput(t *testing.T) {
	p := testPrefix(t)
	s, err := NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, fab, _ := twoSites(t, s, p, 7003)
	for _, v := range []VXLANSpec{
		{Name: "vx2", VNI: 0, Namespace: fab[0]},
		{Name: "vx2", VNI: MaxVNI + 1, Namespace: fab[0]},
		{Name: "vx2", VNI: 5, Namespace: fab[0], Local: netip.MustParseAddr("::1")},
		{Name: "a-name-far-too-long", VNI: 5, Namespace: fab[0]},
	} {
		if err := s.CreateVXLAN(v); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: got %v, want ErrInvalid", v, err)
		}
	}
	// The bridge is not a VXLAN device of that VNI.
	if err := s.CreateVXLAN(VXLANSpec{Name: "br", VNI: 7003, Namespace: fab[0]}); !errors.Is(err, ErrExists) {
		t.Errorf("over a bridge: got %v, want ErrExists", err)
	}
	// Creating it again is a no-op.
	if err := s.CreateVXLAN(VXLANSpec{Name: "vx", VNI: 7003, Namespace: fab[0], Master: "br", MTU: 1450}); err != nil {
		t.Errorf("again: %v", err)
	}
	if _, _, err := s.SyncFDB(fab[0], "br", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("sync on a bridge: got %v, want ErrInvalid", err)
	}
	if _, _, err := s.SyncFDB(fab[0], "vx", []FDBEntry{{MAC: net.HardwareAddr{1, 2}, Dst: netip.MustParseAddr("10.0.0.1")}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("short MAC: got %v, want ErrInvalid", err)
	}
	if _, err := s.FDB(fab[0], "nosuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing device: got %v, want ErrNotFound", err)
	}
}

// udpListening reports whether a UDP socket is bound to port in ns.
func udpListening(t *testing.T, s *Session, ns string, port int) bool {
	t.Helper()
	var found bool
	if err := s.Do(ns, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/udp")
		if err != nil {
			return err
		}
		needle := ":" + hex4(port) + " "
		found = strings.Contains(string(b), needle)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return found
}

func hex4(v int) string {
	const digits = "0123456789ABCDEF"
	return string([]byte{digits[v>>12&15], digits[v>>8&15], digits[v>>4&15], digits[v&15]})
}

func sameEntries(got, want []FDBEntry) bool {
	if len(got) != len(want) {
		return false
	}
	m := map[string]int{}
	for _, e := range got {
		m[e.key()]++
	}
	for _, e := range want {
		m[e.key()]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}

// fdbSet is the FDB of a segment with peers hosts and nodes nodes spread
// over them; skip leaves out the entries of one peer (it died).
func fdbSet(peers, nodes, skip int) []FDBEntry {
	var out []FDBEntry
	for p := range peers {
		if p != skip {
			out = append(out, FDBEntry{MAC: ZeroMAC, Dst: netip.AddrFrom4([4]byte{10, 212, 1, byte(p + 1)})})
		}
	}
	for n := range nodes {
		if p := n % peers; p != skip {
			out = append(out, FDBEntry{MAC: net.HardwareAddr{0x02, 0, 0, 0, byte(n >> 8), byte(n)}, Dst: netip.AddrFrom4([4]byte{10, 212, 1, byte(p + 1)})})
		}
	}
	return out
}

// BenchmarkSyncFDBSteady is one reconcile pass of an agent with nothing
// to change: a segment with 4 peer hosts and 100 remote nodes (dump and
// compare). Agents run it every few seconds per segment.
func BenchmarkSyncFDBSteady(b *testing.B) {
	s, err := NewSession()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	_, fab, _ := twoSites(b, s, testPrefix(b), 7010)
	want := fdbSet(4, 100, -1)
	if _, _, err := s.SyncFDB(fab[0], "vx", want); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if added, removed, err := s.SyncFDB(fab[0], "vx", want); err != nil || added+removed != 0 {
			b.Fatalf("added %d removed %d: %v", added, removed, err)
		}
	}
	b.ReportMetric(float64(len(want)), "entries")
}

// BenchmarkSyncFDBHostFlaps alternates between a peer host dead and
// alive: each pass removes or adds its 26 entries (of 104).
func BenchmarkSyncFDBHostFlaps(b *testing.B) {
	s, err := NewSession()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	_, fab, _ := twoSites(b, s, testPrefix(b), 7011)
	sets := [][]FDBEntry{fdbSet(4, 100, -1), fdbSet(4, 100, 2)}
	changed := 0
	i := 0
	for b.Loop() {
		added, removed, err := s.SyncFDB(fab[0], "vx", sets[i%2])
		if err != nil {
			b.Fatal(err)
		}
		changed += added + removed
		i++
	}
	b.ReportMetric(float64(changed)/float64(i), "changes/op")
}
