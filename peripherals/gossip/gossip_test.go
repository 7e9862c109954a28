package gossip_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/peripherals/gossip"
)

// addr is node i's loopback address: 127.77.0.0/16 is ours alone, so
// nodes use memberlist's port without colliding with anything.
func addr(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 77, byte(i >> 8), byte(i + 1)}) }

func start(t *testing.T, i int, kind string, seeds []netip.AddrPort) *gossip.Node {
	t.Helper()
	n, err := gossip.Start(gossip.Config{Name: fmt.Sprintf("%s%d", kind, i), Network: gossip.Kernel(addr(i)),
		Meta:  gossip.Meta{Kind: kind, Services: map[string]uint16{kind: 1000 + uint16(i)}, DiskBytes: int64(i) << 20},
		Seeds: seeds, Rejoin: 300 * time.Millisecond})
	if err != nil {
		t.Fatalf("node %d: %v", i, err)
	}
	return n
}

// waitView waits until every node in ns sees want(member) for the member
// called name, and returns how long that took.
func waitView(t *testing.T, ns []*gossip.Node, name string, want gossip.State, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		all := true
		for _, n := range ns {
			m, ok := n.Lookup(name)
			if !ok || m.State != want {
				all = false
				break
			}
		}
		if all {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			var views []string
			for _, n := range ns {
				m, ok := n.Lookup(name)
				views = append(views, fmt.Sprintf("%v/%v", ok, m.State))
			}
			t.Fatalf("%s not %s everywhere after %v: %v", name, want, limit, views)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMembership starts a cpu, disks and a display that know only the cpu,
// checks that everyone sees everyone with its metadata, kills a disk
// without a goodbye (all others declare it dead), restarts it (all see it
// alive again), and lets another leave politely (all see it gone at once).
func TestMembership(t *testing.T) {
	before := runtime.NumGoroutine()
	seed := []netip.AddrPort{netip.AddrPortFrom(addr(0), gossip.Port)}
	nodes := []*gossip.Node{start(t, 0, "cpu", seed)}
	for i := 1; i <= 3; i++ {
		nodes = append(nodes, start(t, i, "disk", seed))
	}
	nodes = append(nodes, start(t, 4, "display", seed))
	defer func() {
		for _, n := range nodes {
			n.Shutdown()
		}
	}()
	for _, name := range []string{"cpu0", "disk1", "disk2", "disk3", "display4"} {
		waitView(t, nodes, name, gossip.Alive, 10*time.Second)
	}
	disks := nodes[4].Find("disk")
	if len(disks) != 3 || disks[1].Name != "disk2" || disks[1].Meta.DiskBytes != 2<<20 ||
		disks[1].Meta.Services["disk"] != 1002 || disks[1].Addr != netip.AddrPortFrom(addr(2), gossip.Port) {
		t.Fatalf("display4 finds disks %+v", disks)
	}

	// kill -9 of disk2: a shutdown without a goodbye.
	nodes[2].Shutdown()
	others := []*gossip.Node{nodes[0], nodes[1], nodes[3], nodes[4]}
	dead := waitView(t, others, "disk2", gossip.Dead, 20*time.Second)
	nodes[2] = start(t, 2, "disk", seed)
	alive := waitView(t, nodes, "disk2", gossip.Alive, 20*time.Second)
	t.Logf("kill: declared dead by all 4 others in %v; restarted: alive for all in %v", dead.Round(time.Millisecond), alive.Round(time.Millisecond))

	if err := nodes[3].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	gone := waitView(t, []*gossip.Node{nodes[0], nodes[1], nodes[2], nodes[4]}, "disk3", gossip.Dead, 10*time.Second)
	t.Logf("leave: gone for all others in %v", gone.Round(time.Millisecond))

	for _, n := range nodes {
		n.Shutdown()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before+2 {
		t.Errorf("%d goroutines after shutdown, %d before", g, before)
	}
}

func TestMetaTooLarge(t *testing.T) {
	_, err := gossip.Start(gossip.Config{Name: "x", Network: gossip.Kernel(addr(40)),
		Meta: gossip.Meta{Kind: strings.Repeat("k", 600)}})
	if !errors.Is(err, gossip.ErrMeta) {
		t.Fatalf("%v, want ErrMeta", err)
	}
}

// TestGarbage sends junk datagrams and streams at a node's port: it keeps
// working and its peers still see it.
func TestGarbage(t *testing.T) {
	seed := []netip.AddrPort{netip.AddrPortFrom(addr(50), gossip.Port)}
	a, b := start(t, 50, "cpu", seed), start(t, 51, "disk", seed)
	defer a.Shutdown()
	defer b.Shutdown()
	waitView(t, []*gossip.Node{a, b}, "disk51", gossip.Alive, 10*time.Second)
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr(50), gossip.Port))
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP{127, 0, 0, 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for i := range 2000 {
		pc.WriteTo([]byte(strings.Repeat(string(rune('a'+i%26)), i%1400+1)), to)
	}
	for range 20 {
		c, err := net.Dial("tcp4", to.String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n\x00\x01\x02 garbage"))
		c.Close()
	}
	time.Sleep(time.Second)
	waitView(t, []*gossip.Node{a, b}, "disk51", gossip.Alive, 5*time.Second)
	waitView(t, []*gossip.Node{a, b}, "cpu50", gossip.Alive, 5*time.Second)
}

// TestDeferredJoin: deferred nodes answer others but join their seed
// only when told (Exchange); then every view fills.
func TestDeferredJoin(t *testing.T) {
	seed := []netip.AddrPort{netip.AddrPortFrom(addr(60), gossip.Port)}
	var ns []*gossip.Node
	for i := 60; i < 63; i++ {
		n, err := gossip.Start(gossip.Config{Name: fmt.Sprintf("d%d", i), Network: gossip.Kernel(addr(i)),
			Seeds: seed, Rejoin: 300 * time.Millisecond, Deferred: true})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Shutdown()
		ns = append(ns, n)
	}
	time.Sleep(700 * time.Millisecond) // longer than a rejoin period
	for _, n := range ns {
		if got := len(n.Members()); got != 1 {
			t.Fatalf("a deferred node lists %d members before Join", got)
		}
	}
	for _, n := range ns {
		if _, err := n.Exchange(nil); err != nil {
			t.Fatal(err)
		}
	}
	// The seed answers an exchange before it merges what it was sent, so
	// d62's exchange may have come before the seed knew d61: the seed
	// then exchanges with the others, as the supervisor's second round
	// does (an exchange's caller merges before Exchange returns).
	if got, err := ns[0].Exchange([]netip.AddrPort{netip.AddrPortFrom(addr(61), gossip.Port), netip.AddrPortFrom(addr(62), gossip.Port)}); err != nil || got != 2 {
		t.Fatalf("seed's exchange: %d answered, %v", got, err)
	}
	for i := 60; i < 63; i++ {
		waitView(t, ns, fmt.Sprintf("d%d", i), gossip.Alive, 10*time.Second)
	}
}

// TestLargeClusterConfig: beyond LargeCluster members the failure
// detector is the starved-CPU one, at and below it the small-cluster one,
// and $NETSTATION_GOSSIP still overrides either.
func TestLargeClusterConfig(t *testing.T) {
	t.Setenv("NETSTATION_GOSSIP", "")
	small, large := gossip.MemberlistConfig("a", gossip.LargeCluster, false), gossip.MemberlistConfig("a", gossip.LargeCluster+1, false)
	if small.ProbeInterval != time.Second || small.ProbeTimeout != 500*time.Millisecond || small.DisableTcpPings || small.RetransmitMult != 2 {
		t.Errorf("%d members: probe %v/%v, tcp pings off %v, retransmit %d", gossip.LargeCluster, small.ProbeInterval, small.ProbeTimeout, small.DisableTcpPings, small.RetransmitMult)
	}
	if large.ProbeInterval != 5*time.Second || large.ProbeTimeout != 3*time.Second || !large.DisableTcpPings ||
		large.RetransmitMult != 1 || large.GossipInterval != 3*time.Second || large.SuspicionMult != 1 || large.GossipNodes != 6 {
		t.Errorf("%d members: probe %v/%v, tcp pings off %v, retransmit %d, gossip %v", gossip.LargeCluster+1,
			large.ProbeInterval, large.ProbeTimeout, large.DisableTcpPings, large.RetransmitMult, large.GossipInterval)
	}
	t.Setenv("NETSTATION_GOSSIP", "probe=1s,tcp-ping=on,retransmit=x")
	c := gossip.MemberlistConfig("a", 1000, false)
	if c.ProbeInterval != time.Second || c.DisableTcpPings || c.RetransmitMult != 1 {
		t.Errorf("overridden: probe %v, tcp pings off %v, retransmit %d (a bad value keeps the setting)", c.ProbeInterval, c.DisableTcpPings, c.RetransmitMult)
	}
	t.Setenv("NETSTATION_GOSSIP", "large=100")
	if c := gossip.MemberlistConfig("a", 101, false); c.ProbeInterval != 5*time.Second {
		t.Errorf("large=100, 101 members: probe %v, want the large cluster's 5s", c.ProbeInterval)
	}
	t.Setenv("NETSTATION_GOSSIP", "")
	if !small.GossipOnlyQueued || small.QuietJoins {
		t.Errorf("gossip only when queued %v, quiet joins %v (not asked)", small.GossipOnlyQueued, small.QuietJoins)
	}
	if q := gossip.MemberlistConfig("a", 200, true); q.RetransmitMult != 4 || !q.QuietJoins {
		t.Errorf("quiet joins, 200: retransmit %d, want 4", q.RetransmitMult)
	}
	if q := gossip.MemberlistConfig("a", 1000, true); q.RetransmitMult != 2 {
		t.Errorf("quiet joins, 1000: retransmit %d, want 2", q.RetransmitMult)
	}
}

// TestQuietJoins: a cluster that does not re-broadcast joins, completed
// by the supervisor's three rounds of exchanges (every node with its
// seeds, the seeds with each other, every other node with one seed),
// still spreads a death and a restarted member's return to every view.
func TestQuietJoins(t *testing.T) {
	const size, base = 24, 100
	seedAddr := func(i int) netip.AddrPort { return netip.AddrPortFrom(addr(base+i), gossip.Port) }
	startQuiet := func(i int, deferred bool) *gossip.Node {
		n, err := gossip.Start(gossip.Config{Name: fmt.Sprintf("q%d", i), Network: gossip.Kernel(addr(base + i)),
			Meta: gossip.Meta{Kind: "disk"}, Seeds: []netip.AddrPort{seedAddr(0), seedAddr(1 + i%2)},
			Expect: size, Deferred: deferred, QuietJoins: true, Rejoin: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	ns := make([]*gossip.Node, size)
	for i := range ns {
		ns[i] = startQuiet(i, true)
	}
	defer func() {
		for _, n := range ns {
			n.Shutdown()
		}
	}()
	exchange := func(n *gossip.Node, peers []netip.AddrPort) {
		if _, err := n.Exchange(peers); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range ns {
		exchange(n, nil)
	}
	// Every node has sent its state to q0, which merges each after it
	// answered (Exchange): wait until it has, or the next rounds could
	// copy a view still short of the last few. What the rounds then
	// complete, they complete before Exchange returns.
	for deadline := time.Now().Add(10 * time.Second); len(ns[0].Find("disk")) != size; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("q0 lists %d alive 10 s after every node's exchange with it, want %d", len(ns[0].Find("disk")), size)
		}
	}
	seeds := []netip.AddrPort{seedAddr(0), seedAddr(1), seedAddr(2)}
	for _, n := range ns[:3] {
		exchange(n, seeds)
	}
	for i, n := range ns[3:] {
		exchange(n, seeds[i%3:i%3+1])
	}
	for i := range ns {
		if got := len(ns[i].Find("disk")); got != size {
			t.Fatalf("q%d lists %d alive after the exchanges, want %d", i, got, size)
		}
	}
	ns[7].Shutdown()
	others := append(append([]*gossip.Node(nil), ns[:7]...), ns[8:]...)
	dead := waitView(t, others, "q7", gossip.Dead, 30*time.Second)
	ns[7] = startQuiet(7, false) // a restart joins its seeds at once
	back := waitView(t, ns, "q7", gossip.Alive, 30*time.Second)
	var quieted uint64
	for _, n := range ns {
		quieted += n.Stats().Quieted
	}
	if quieted == 0 {
		t.Error("no join was kept from gossip")
	}
	t.Logf("%d joins kept from gossip; killed: dead in all views after %v, restarted: alive in all after %v",
		quieted, dead.Round(time.Millisecond), back.Round(time.Millisecond))
}

// TestFastDetector: a node of a large cluster (made large here by
// $NETSTATION_GOSSIP's large) probes slowly until its view has been
// complete for a while, then switches to FastDetector; a member that
// stops answering is then seen dead by all within the fast detector's
// bound (probe wait, probe, suspicion, spread), not the slow one's.
func TestFastDetector(t *testing.T) {
	const size, base = 8, 300
	t.Setenv("NETSTATION_GOSSIP", "large=4,probe=30s,fast-after=300ms,fast-probe=200ms,fast-probe-timeout=100ms,fast-gossip=100ms,fast-suspicion-min=500ms")
	seeds := []netip.AddrPort{netip.AddrPortFrom(addr(base), gossip.Port)}
	ns := make([]*gossip.Node, size)
	for i := range ns {
		n, err := gossip.Start(gossip.Config{Name: fmt.Sprintf("f%d", i), Network: gossip.Kernel(addr(base + i)),
			Meta: gossip.Meta{Kind: "disk"}, Seeds: seeds, Expect: size, Rejoin: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ns[i] = n
		defer n.Shutdown()
	}
	if d := ns[0].Detector(); d.ProbeInterval != 30*time.Second {
		t.Fatalf("at start: %+v, want the 30 s probes asked for", d)
	}
	want := gossip.FastDetector
	want.ProbeInterval, want.ProbeTimeout, want.GossipInterval, want.SuspicionMin = 200*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond, 500*time.Millisecond
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < size; i++ {
		for ns[i].Detector() != want {
			if time.Now().After(deadline) {
				t.Fatalf("f%d still on %+v (view %d of %d)", i, ns[i].Detector(), len(ns[i].Find("disk")), size)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ns[size-1].Shutdown()
	// Slow: 30 s probes and suspicion 1 x 30 s. Fast: 200 ms probes,
	// suspicion 0.5 s confirmed, 3 s not; a generous bound between the
	// two (5.2 s once under -race on a loaded machine).
	dead := waitView(t, ns[:size-1], fmt.Sprintf("f%d", size-1), gossip.Dead, 30*time.Second)
	if dead > 15*time.Second {
		t.Errorf("dead in all views after %v: the fast detector should take about a second", dead)
	}
	t.Logf("switched; a stopped member dead in all views after %v", dead.Round(time.Millisecond))
}

// TestBeatAndDeclareDead: a node with a Beat beats while it runs; a
// member declared dead by another (DeclareDead, the supervisor's
// watchdog's way) is dead in the views the death reaches, and being alive
// it refutes and is alive in every view again; a node cannot declare
// itself or a stranger dead.
func TestBeatAndDeclareDead(t *testing.T) {
	const size, base = 5, 400
	seeds := []netip.AddrPort{netip.AddrPortFrom(addr(base), gossip.Port)}
	var beats [size]atomic.Int64
	var log0 lockedBuffer // b0's log: its view's changes, synchronously
	ns := make([]*gossip.Node, size)
	for i := range ns {
		logger := slog.New(slog.DiscardHandler)
		if i == 0 {
			logger = slog.New(slog.NewTextHandler(&log0, nil))
		}
		n, err := gossip.Start(gossip.Config{Name: fmt.Sprintf("b%d", i), Network: gossip.Kernel(addr(base + i)),
			Meta: gossip.Meta{Kind: "disk"}, Seeds: seeds, Rejoin: 300 * time.Millisecond,
			Beat: func() { beats[i].Add(1) }, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		ns[i] = n
		defer n.Shutdown()
	}
	for i := range ns {
		waitView(t, ns, fmt.Sprintf("b%d", i), gossip.Alive, 20*time.Second)
	}
	deadline := time.Now().Add(20 * time.Second)
	for i := range beats {
		for beats[i].Load() < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("b%d beat %d times in 20 s", i, beats[i].Load())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := ns[0].DeclareDead("b0"); !errors.Is(err, gossip.ErrDeclare) {
		t.Errorf("declaring itself dead: %v", err)
	}
	if err := ns[0].DeclareDead("nobody"); !errors.Is(err, gossip.ErrDeclare) {
		t.Errorf("declaring a stranger dead: %v", err)
	}
	// b4 is alive: declared dead, it refutes as soon as the death reaches
	// it, so the dead state is seen where the declaration was made, and
	// then it is alive everywhere.
	if err := ns[0].DeclareDead("b4"); err != nil {
		t.Fatal(err)
	}
	// b0's view held it dead before DeclareDead returned (its refutation
	// may have come back since).
	if !strings.Contains(log0.String(), `msg="gossip: member dead" name=b4`) {
		t.Errorf("b0 declared b4 dead but its view never held it dead:\n%s", log0.String())
	}
	back := waitView(t, ns, "b4", gossip.Alive, 30*time.Second)
	t.Logf("declared dead while alive: refuted, alive in every view after %v", back.Round(time.Millisecond))
}

// lockedBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
