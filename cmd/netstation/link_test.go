package main

import (
	"context"
	byteorder "encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/stack/checksum"
	"github.com/netstation/netstation/testbed"
	"golang.org/x/sys/unix"
)

// The link tests measure what `netstation link` promises, on the real
// binary, between the user-level stacks of two peripherals.

const twoCPUs = `nodes:
  - {name: a, kind: cpu}
  - {name: b, kind: cpu}
`

func (b *bed) plan() *testbed.Plan {
	b.t.Helper()
	p, err := testbed.LoadPlan(filepath.Join(b.state, b.name))
	if err != nil {
		b.t.Fatal(err)
	}
	return p
}

func (b *bed) nodeCall(ctx context.Context, node, op string, args, out any, each func(json.RawMessage) error) error {
	return ctl.Call(ctx, filepath.Join(b.state, b.name, "nodes", node+".sock"), op, args, out, each)
}

func (b *bed) links(node string) testbed.LinkStatus {
	b.t.Helper()
	out := b.must("link", "show", "-t", b.name, "-o", "json", node)
	var ls []testbed.LinkStatus
	if err := json.Unmarshal([]byte(out), &ls); err != nil || len(ls) != 1 {
		b.t.Fatalf("link show json: %v\n%s", err, out)
	}
	return ls[0]
}

// probe sends a flow from one peripheral to another's probe port over
// their user-level stacks and returns what the receiver counted.
//
// The receiver stops after 3 s without a datagram: long enough that a
// sender or receiver descheduled on a loaded machine is not mistaken for
// the end of the flow.
func (b *bed) probe(from, to string, send peripherals.ProbeSendArgs) (peripherals.ProbeSendResult, peripherals.ProbeRecvResult) {
	b.t.Helper()
	p := b.plan()
	dst, err := p.Node(to)
	if err != nil {
		b.t.Fatal(err)
	}
	send.Dst = netip.AddrPortFrom(dst.Addr.Addr(), peripherals.ProbePort)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	wait := b.startProbeRecv(ctx, to, 3*time.Second)
	var sent peripherals.ProbeSendResult
	if err := b.nodeCall(ctx, from, "probe-send", send, &sent, nil); err != nil {
		b.t.Fatalf("probe-send on %s: %v", from, err)
	}
	return sent, wait()
}

// startProbeRecv starts a probe receiver on node and returns once its
// socket is open; the function it returns waits for the receiver's count
// (the receiver ends after idle without a datagram).
func (b *bed) startProbeRecv(ctx context.Context, node string, idle time.Duration) func() peripherals.ProbeRecvResult {
	b.t.Helper()
	ready := make(chan struct{})
	var recv peripherals.ProbeRecvResult
	done := make(chan error, 1)
	go func() {
		once := false
		done <- b.nodeCall(ctx, node, "probe-recv", peripherals.ProbeRecvArgs{Idle: idle}, &recv, func(json.RawMessage) error {
			if !once {
				once = true
				close(ready)
			}
			return nil
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		b.t.Fatalf("probe-recv on %s: %v", node, err)
	}
	return func() peripherals.ProbeRecvResult {
		b.t.Helper()
		if err := <-done; err != nil {
			b.t.Fatalf("probe-recv on %s: %v", node, err)
		}
		return recv
	}
}

func (b *bed) pingOK(from, to string) bool {
	out, err := b.run("ping", "-t", b.name, "-c", "3", "-i", "20ms", "-W", "300ms", from, to)
	return err == nil && !strings.Contains(out, " 0 received")
}

// TestLinkLossDownUp: a one-way flow through a link with 5 % loss (each
// direction) loses 5 +/- 1 %, in the kernel (tc BPF) and in the link layer
// (BPF switched off); down cuts the peer off, up restores it.
func TestLinkLossDownUp(t *testing.T) {
	for _, mode := range []struct {
		name, env, by string
	}{{"kernel", "", testbed.EnforcedKernel}, {"link-layer", "off", testbed.EnforcedLinkLayer}} {
		t.Run(mode.name, func(t *testing.T) {
			if mode.env != "" {
				t.Setenv("NETSTATION_TCBPF", mode.env)
			}
			b := newBed(t)
			b.must("up", "-f", b.topo(b.name, twoCPUs))
			st := b.status(b.name)
			if mode.env == "off" {
				if !strings.HasPrefix(st.Templates, "off: ") {
					t.Errorf("templates = %q with BPF switched off", st.Templates)
				}
				out := b.must("status", "-t", b.name)
				if !strings.Contains(out, "kernel transmit templates off") || strings.Count(out, "templates") != 1 {
					t.Errorf("status does not say templates are off in one line:\n%s", out)
				}
			} else if st.Templates != testbed.TemplatesOn {
				t.Fatalf("templates = %q as root", st.Templates)
			}
			if !b.pingOK("a", "b") { // ARP resolved before the loss starts
				t.Fatal("a cannot reach b")
			}
			b.must("link", "set", "-t", b.name, "a", "--loss", "5%")
			if got := b.links("a"); got.LossEnforcedBy != mode.by || got.Params.LossPPM != 50_000 {
				t.Errorf("link show a: %+v", got)
			}
			const n = 10_000
			for _, dir := range [][2]string{{"a", "b"}, {"b", "a"}} {
				sent, recv := b.probe(dir[0], dir[1], peripherals.ProbeSendArgs{Count: n, Size: 64, Rate: 10_000})
				if sent.Sent != n {
					t.Errorf("%s -> %s: sent %d of %d (%d errors)", dir[0], dir[1], sent.Sent, n, sent.Errors)
				}
				// Frames the receiving peripheral had no room for (its
				// AF_PACKET ring or its socket full: a reader descheduled
				// on a loaded machine) are not the link's loss. Where the
				// impairment acts before the ring (tc BPF, or the sender's
				// link layer), they are survivors of it; where it acts after
				// (the receiver's link layer), they never met it.
				got := float64(recv.Distinct) + float64(recv.SocketDrops)
				loss := 100 * (1 - (got+float64(recv.RingDrops))/float64(sent.Sent))
				if mode.by == testbed.EnforcedLinkLayer && dir[1] == "a" {
					loss = 100 * (1 - got/float64(sent.Sent-int(recv.RingDrops)))
				}
				t.Logf("%s -> %s: %d sent in %.2f s, %d received in %.2f s, %d dropped by a full ring, %d by a full socket: %.2f%% lost on the link (%s)",
					dir[0], dir[1], sent.Sent, sent.Seconds, recv.Distinct, recv.Seconds, recv.RingDrops, recv.SocketDrops, loss, mode.by)
				if recv.RingDrops+recv.SocketDrops > uint64(sent.Sent)/5 {
					t.Errorf("%s -> %s: the receiver dropped %d of %d frames for lack of room: too loaded to measure the link", dir[0], dir[1], recv.RingDrops+recv.SocketDrops, sent.Sent)
				}
				if math.Abs(loss-5) > 1 {
					t.Errorf("%s -> %s: %.2f%% lost, want 5 +/- 1", dir[0], dir[1], loss)
					var ps peripherals.Status
					_ = b.nodeCall(context.Background(), dir[1], "status", nil, &ps, nil)
					t.Logf("receiver: drops %v, link layer %+v, arp %+v, udp %+v", ps.DropReasons, ps.ImpairCounters, ps.Stack.ARP, ps.Stack.UDP)
					_ = b.nodeCall(context.Background(), dir[0], "status", nil, &ps, nil)
					t.Logf("sender: drops %v, link layer %+v, arp %+v", ps.DropReasons, ps.ImpairCounters, ps.Stack.ARP)
					t.Logf("link a: %+v %+v", b.links("a").Kernel, b.links("a").LinkLayer)
					out, _ := b.run("exec", "-t", b.name, dir[1], "--", "ip", "-s", "link", "show", "eth0")
					t.Logf("receiver eth0: %s", out)
				}
			}
			ls := b.links("a")
			var counted uint64
			if ls.Kernel != nil {
				counted += ls.Kernel.Ingress.Dropped + ls.Kernel.Egress.Dropped
			}
			if ls.LinkLayer != nil {
				counted += ls.LinkLayer.RxDropped + ls.LinkLayer.TxDropped
			}
			if counted < 2*n*4/100 {
				t.Errorf("the link counted %d losses for 2 x %d frames at 5%%: %+v", counted, n, ls)
			}

			b.must("link", "set", "-t", b.name, "a", "--loss", "0%")
			b.must("link", "down", "-t", b.name, "a")
			if b.pingOK("a", "b") || b.pingOK("b", "a") {
				t.Error("ping crosses a link that is down")
			}
			if !b.links("a").Params.Down {
				t.Error("link show does not show the link down")
			}
			b.must("link", "up", "-t", b.name, "a")
			if !b.pingOK("a", "b") || !b.pingOK("b", "a") {
				t.Error("link up did not restore the link")
			}
		})
	}
}

// TestLinkRate: a bulk UDP flow through a link set to 500mbit at run time
// arrives at 500 Mbit/s +/- 10 %, in both directions (the node's own
// egress, after its peripheral restarted shaped, and the fabric port's).
func TestLinkRate(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, twoCPUs))
	if !b.pingOK("a", "b") {
		t.Fatal("a cannot reach b")
	}
	before := b.status(b.name).Nodes[0]
	b.must("link", "set", "-t", b.name, "a", "--rate", "500mbit")
	after := b.status(b.name).Nodes[0]
	if after.Restarts != before.Restarts+1 || after.State != testbed.StateRunning {
		t.Errorf("a was not restarted shaped once: before %+v after %+v", before, after)
	}
	if ls := b.links("a"); !ls.Shaped || ls.Params.RateBits != 500e6 {
		t.Errorf("link show a: %+v", ls)
	}
	if !b.pingOK("a", "b") {
		t.Fatal("a cannot reach b after the restart")
	}
	const size = 1472
	for _, dir := range [][2]string{{"a", "b"}, {"b", "a"}} {
		// Offer 1.5 times the rate, as iperf3 -b would: enough to keep the
		// shaper's queue full, without a blast that starves the 2-core
		// machine's receivers and softirqs (measured: an unpaced GSO
		// sender offers 20-28 Gbit/s here).
		const offered = 1.5 * 500e6 / ((size + 42) * 8)
		// A sender that could not offer the rate (a machine loaded by
		// other tests: 427 Mbit/s once, b -> a) cannot show the shaper at
		// work: such a round is run again, and a third one that still
		// cannot fails as unable to judge. (On a quiet machine the probe's
		// sender reaches the rate, not 1.5 times it, in both directions:
		// 502 Mbit/s, 2026-12-02; why the fabric-side shaper paces b is
		// not settled.)
		const need = 0.9 * 500e6
		var sent peripherals.ProbeSendResult
		var recv peripherals.ProbeRecvResult
		for round := 1; ; round++ {
			sent, recv = b.probe(dir[0], dir[1], peripherals.ProbeSendArgs{Size: size, Duration: 3 * time.Second, Rate: offered})
			offeredBits := float64(sent.Sent) * (size + 42) * 8 / sent.Seconds
			t.Logf("%s -> %s: offered %.1f Mbit/s (%d datagrams in %.2f s, %d write errors)", dir[0], dir[1],
				offeredBits/1e6, sent.Sent, sent.Seconds, sent.Errors)
			if offeredBits >= need {
				break
			}
			if round == 3 {
				t.Fatalf("%s -> %s: the sender offered only %.1f Mbit/s (%.0f wanted) in each of 3 rounds: the 500mbit shaper cannot be judged", dir[0], dir[1], offeredBits/1e6, need/1e6)
			}
		}
		if recv.Seconds < 1 {
			t.Fatalf("%s -> %s: only %.2f s of traffic (%d datagrams)", dir[0], dir[1], recv.Seconds, recv.Datagrams)
		}
		// tbf counts Ethernet frames: payload + UDP 8 + IPv4 20 + Ethernet
		// 14. Frames the receiver's ring had no room for crossed the link.
		delivered := min(uint64(recv.Datagrams)+recv.RingDrops+recv.SocketDrops, uint64(sent.Sent))
		bits := float64(delivered) * (size + 42) * 8 / recv.Seconds
		t.Logf("%s -> %s: %d datagrams received (+%d dropped by a full ring, +%d by a full socket) in %.2f s: %.1f Mbit/s on the wire",
			dir[0], dir[1], recv.Datagrams, recv.RingDrops, recv.SocketDrops, recv.Seconds, bits/1e6)
		if math.Abs(bits-500e6) > 50e6 {
			t.Errorf("%s -> %s: %.1f Mbit/s, want 500 +/- 10 %%", dir[0], dir[1], bits/1e6)
		}
	}
}

// TestSpoofBlocked sends frames from inside a's namespace with a raw
// socket: those with a's MAC and address reach b, those with another
// source MAC or IP never do, and a's template counts them.
func TestSpoofBlocked(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, twoCPUs))
	if !b.pingOK("a", "b") {
		t.Fatal("a cannot reach b")
	}
	p := b.plan()
	a, bb := p.Nodes[0], p.Nodes[1]
	amac, _ := net.ParseMAC(a.MAC)
	bmac, _ := net.ParseMAC(bb.MAC)
	spoofMAC := net.HardwareAddr{0x02, 0xde, 0xad, 0xbe, 0xef, 0x01}
	other := netip.MustParseAddr("10.200.0.1")
	const each = 50
	var frames [][]byte
	kinds := []struct {
		name string
		mac  net.HardwareAddr
		ip   netip.Addr
	}{{"genuine", amac, a.Addr.Addr()}, {"spoofed MAC", spoofMAC, a.Addr.Addr()}, {"spoofed IP", amac, other}, {"spoofed both", spoofMAC, bb.Addr.Addr()}}
	for k, kind := range kinds {
		for i := 0; i < each; i++ {
			frames = append(frames, udpFrame(kind.mac, bmac, kind.ip, bb.Addr.Addr(), peripherals.ProbePort, uint64(k*1000+i)))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wait := b.startProbeRecv(ctx, "b", time.Second)
	before := b.links("a").TemplateDrops
	addrErrors := inAddrErrors(t, bb.NS)
	err := fabric.Do(a.NS, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifi, err := net.InterfaceByName(a.IfName)
		if err != nil {
			return err
		}
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], bmac)
		for _, f := range frames {
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				return err
			}
			time.Sleep(200 * time.Microsecond)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send from %s's namespace: %v", a.NS, err)
	}
	recv := wait()
	if recv.Distinct != each {
		t.Errorf("b received %d distinct datagrams, want exactly the %d genuine ones", recv.Distinct, each)
	}
	// The genuine frames reached b's user-level stack through its packet
	// socket and went no further: b's port drops them before its kernel's
	// IP receive (tcbpf.AttachStackDrop), which would count each in
	// InAddrErrors (b's kernel has no address).
	if got := inAddrErrors(t, bb.NS) - addrErrors; got != 0 {
		t.Errorf("b's kernel counted %d InAddrErrors: the stack drop let b's frames through to it", got)
	}
	ls := b.links("a")
	if got := ls.TemplateDrops - before; got != 3*each {
		t.Errorf("a's template counted %d drops, want %d: %+v", got, 3*each, ls.TemplateCounters)
	}
	if ls.TemplateCounters == nil || ls.TemplateCounters.BadMAC < 2*each || ls.TemplateCounters.BadIP < each {
		t.Errorf("drop reasons: %+v", ls.TemplateCounters)
	}
	st := b.status(b.name)
	if st.Nodes[0].Link == nil || st.Nodes[0].Link.TemplateDrops != ls.TemplateDrops {
		t.Errorf("status -o json does not show the template drops: %+v", st.Nodes[0].Link)
	}
	if out := b.must("link", "show", "-t", b.name, "a"); !strings.Contains(out, fmt.Sprint(ls.TemplateDrops)) {
		t.Errorf("link show does not show %d spoof drops:\n%s", ls.TemplateDrops, out)
	}
}

// inAddrErrors reads the IP InAddrErrors counter of namespace ns.
func inAddrErrors(t *testing.T, ns string) uint64 {
	t.Helper()
	var b []byte
	err := fabric.Do(ns, func() (err error) {
		b, err = os.ReadFile("/proc/thread-self/net/snmp") // not /proc/net: that is the main thread's namespace
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Ip:" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		for i, v := range f[1:] {
			if names[i] == "InAddrErrors" {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
	}
	t.Fatal("no Ip InAddrErrors in /proc/net/snmp")
	return 0
}

// udpFrame builds an Ethernet/IPv4/UDP frame with valid checksums whose
// payload starts with seq.
func udpFrame(src, dst net.HardwareAddr, sip, dip netip.Addr, port uint16, seq uint64) []byte {
	payload := make([]byte, 32)
	byteorder.BigEndian.PutUint64(payload, seq)
	f := make([]byte, 14+20+8+len(payload))
	copy(f[0:6], dst)
	copy(f[6:12], src)
	byteorder.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	byteorder.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[8], ip[9] = 64, 17
	s4, d4 := sip.As4(), dip.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	byteorder.BigEndian.PutUint16(ip[10:], checksum.Checksum(ip, 0))
	udp := f[34:]
	byteorder.BigEndian.PutUint16(udp[0:], 40000)
	byteorder.BigEndian.PutUint16(udp[2:], port)
	byteorder.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	byteorder.BigEndian.PutUint16(udp[6:], udpChecksum(ip, udp))
	return f
}

func udpChecksum(ip, udp []byte) uint16 {
	c := checksum.Checksum(udp, checksum.PseudoHeader([4]byte(ip[12:16]), [4]byte(ip[16:20]), 17, uint16(len(udp))))
	if c == 0 {
		c = 0xffff
	}
	return c
}

// TestTopologyLink: a delay declared in the topology is in force from
// `up` (the peripheral applies it at start) and link set removes it.
func TestTopologyLink(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, `nodes:
  - {name: a, kind: cpu, link: {delay: 5ms, corrupt: 0.1%, seed: 7}}
  - {name: b, kind: cpu}
`))
	ls := b.links("a")
	if ls.Params.Delay != 5*time.Millisecond || ls.Params.CorruptPPM != 1000 || ls.Params.Seed != 7 {
		t.Errorf("link show a: %+v", ls.Params)
	}
	rtt := func() float64 {
		out := b.must("ping", "-t", b.name, "-c", "5", "-i", "10ms", "a", "b")
		var min, avg, max float64
		if _, err := fmt.Sscanf(out[strings.LastIndex(out, "= ")+2:], "%f/%f/%f", &min, &avg, &max); err != nil {
			t.Fatalf("ping output: %v\n%s", err, out)
		}
		return min
	}
	if got := rtt(); got < 5000 {
		t.Errorf("min RTT %.0f us through a link delayed 5 ms", got)
	}
	if ls := b.links("a"); ls.LinkLayer == nil || ls.LinkLayer.Delayed == 0 {
		t.Errorf("no delayed frames counted: %+v", ls.LinkLayer)
	}
	b.must("link", "set", "-t", b.name, "a", "--delay", "0")
	if got := rtt(); got >= 5000 {
		t.Errorf("min RTT %.0f us after the delay was removed", got)
	}
}

// TestRootlessLink: without BPF (an ordinary user), the testbed comes up,
// status says in one line that the kernel templates are off, and loss and
// down act in the peripherals' link layer.
func TestRootlessLink(t *testing.T) {
	b := newRootlessBed(t)
	b.must("up", "-f", b.topo(b.name, twoCPUs))
	out := b.must("status", "-t", b.name)
	t.Logf("%s", strings.SplitN(out, "\n", 3)[1])
	if !strings.Contains(out, "kernel transmit templates off: ") || strings.Contains(out, "operation not permitted") {
		t.Errorf("status:\n%s", out)
	}
	if !b.pingOK("a", "b") {
		t.Fatal("a cannot reach b")
	}
	b.must("link", "set", "-t", b.name, "a", "--loss", "5%")
	if ls := b.links("a"); ls.LossEnforcedBy != testbed.EnforcedLinkLayer || ls.Template {
		t.Errorf("link show a: %+v", ls)
	}
	b.must("link", "down", "-t", b.name, "a")
	if b.pingOK("a", "b") {
		t.Error("ping crosses a link that is down")
	}
	b.must("link", "up", "-t", b.name, "a")
	b.must("link", "set", "-t", b.name, "a", "--loss", "0%")
	if !b.pingOK("a", "b") {
		t.Error("link up did not restore the link")
	}
	// The supervisor captures for an ordinary user too.
	pcap := filepath.Join(b.state, "rootless.pcap")
	c := b.cmd("capture", "-t", b.name, "a", "-w", pcap, "-c", "4", "icmp")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	// No ready signal on this path: ping until the capture has its 4
	// frames and exits (two rounds after a fixed 500 ms could all go by
	// before a capture slow to start on a loaded machine, which then
	// waited for ever).
	waited := make(chan error, 1)
	go func() { waited <- c.Wait() }()
	for deadline := time.Now().Add(60 * time.Second); ; {
		b.pingOK("a", "b")
		select {
		case err := <-waited:
			if err != nil {
				t.Fatalf("rootless capture: %v", err)
			}
		default:
			if time.Now().After(deadline) {
				c.Process.Kill()
				<-waited
				t.Fatal("rootless capture -c 4 still running after 60 s of pings")
			}
			continue
		}
		break
	}
	f, err := os.Open(pcap)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, _, err := r.ReadPacketData(); err != nil {
			break
		}
		n++
	}
	if n != 4 {
		t.Errorf("rootless capture -c 4 wrote %d frames", n)
	}
	b.must("down", b.name)
}
