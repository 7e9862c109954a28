package tcbpf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/netstation/netstation/fabric/capture"
	"github.com/netstation/netstation/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary act as "another process" that opens a
// pinned impairment and sets it: NS|IFNAME|LOSSPPM|DOWN.
const helperEnv = "NETSTATION_TCBPF_HELPER"

func TestMain(m *testing.M) {
	if v := os.Getenv(helperEnv); v != "" {
		os.Exit(helperMain(v))
	}
	os.Exit(m.Run())
}

func helperMain(v string) int {
	f := strings.Split(v, "|")
	loss, _ := strconv.ParseUint(f[2], 10, 32)
	imp, err := Open(f[0], f[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer imp.Close()
	if err := imp.Set(Params{LossPPM: uint32(loss), Down: f[3] == "1", Seed: 1}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type peer struct {
	ns  *nstest.NS
	eth netlink.Link
	ip  net.IP
}

// fabricOf builds kernel peers a (10.79.0.1) and b (10.79.0.2) whose eth0
// are joined by a bridge in namespace br through ports va and vb. IPv6 is
// off, so the only frames are the ones a test sends (and ARP unless
// staticARP).
func fabricOf(t *testing.T, staticARP bool) (a, b peer, br *nstest.NS) {
	nsA, nsB, br := nstest.New(t, "a"), nstest.New(t, "b"), nstest.New(t, "br")
	t.Cleanup(func() {
		if err := DetachAll(br.Name); err != nil {
			t.Error(err)
		}
	})
	for _, ns := range []*nstest.NS{nsA, nsB, br} {
		if out, err := ns.Run(t, 5*time.Second, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
			t.Fatalf("disable IPv6: %v: %s", err, out)
		}
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "br0"
	// Without multicast snooping br0 joins no 224.0.0.106 and sends no
	// IGMP reports, which TestTemplateStopsSpoofing would count as spoofed.
	snooping := false
	bridge := &netlink.Bridge{LinkAttrs: attrs, MulticastSnooping: &snooping}
	if err := br.Handle.LinkAdd(bridge); err != nil {
		t.Fatal(err)
	}
	if err := br.Handle.LinkSetUp(bridge); err != nil {
		t.Fatal(err)
	}
	peers := []*peer{&a, &b}
	for i, ns := range []*nstest.NS{nsA, nsB} {
		port, eth := nstest.Veth(t, br, fmt.Sprintf("v%c", 'a'+i), ns, "eth0", 1500)
		if err := br.Handle.LinkSetMaster(port, bridge); err != nil {
			t.Fatal(err)
		}
		ns.AddrAdd(t, eth, fmt.Sprintf("10.79.0.%d/24", i+1))
		*peers[i] = peer{ns: ns, eth: eth, ip: net.IPv4(10, 79, 0, byte(i+1)).To4()}
	}
	if staticARP {
		for _, p := range [][2]peer{{a, b}, {b, a}} {
			err := p[0].ns.Handle.NeighSet(&netlink.Neigh{
				LinkIndex: p[0].eth.Attrs().Index, State: netlink.NUD_PERMANENT,
				IP: p[1].ip, HardwareAddr: p[1].eth.Attrs().HardwareAddr,
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return a, b, br
}

// udpSnmp reads the Udp counters of /proc/net/snmp inside ns.
func udpSnmp(t *testing.T, ns *nstest.NS) map[string]uint64 { return snmp(t, ns, "Udp:") }

// snmp reads the counters of one protocol's lines ("Ip:", "Udp:") of
// /proc/net/snmp inside ns.
func snmp(t *testing.T, ns *nstest.NS, proto string) map[string]uint64 {
	t.Helper()
	out, err := ns.Run(t, 5*time.Second, "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatalf("read snmp: %v", err)
	}
	var names []string
	res := map[string]uint64{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != proto {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		for i, v := range f[1:] {
			res[names[i]], _ = strconv.ParseUint(v, 10, 64)
		}
	}
	return res
}

// blast sends n datagrams of size bytes from a to b:9000 and returns how
// many b received (all payloads that arrived, and those that arrived
// altered).
func blast(t *testing.T, a, b peer, n, size int) (received, altered int) {
	t.Helper()
	var srv, cli *net.UDPConn
	if err := b.ns.Do(func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: b.ip, Port: 9000})
		srv = c
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	forceRcvbuf(t, srv, 32<<20)
	if err := a.ns.Do(func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: b.ip, Port: 9000})
		cli = c
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var got, bad atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			srv.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			k, err := srv.Read(buf)
			if err != nil {
				return
			}
			got.Add(1)
			if k != size || !bytes.Equal(buf[8:k], pattern(size)[8:]) {
				bad.Add(1)
			}
		}
	}()
	msg := pattern(size)
	for i := range n {
		msg[0], msg[1], msg[2], msg[3] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		if _, err := cli.Write(msg); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if i%100 == 99 { // let the receiver keep up
			for int64(i)-got.Load() > 4000 {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	wg.Wait()
	return int(got.Load()), int(bad.Load())
}

func pattern(size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func forceRcvbuf(t *testing.T, c *net.UDPConn, n int) {
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n); err != nil {
			t.Fatal(err)
		}
	})
}

// predictDrops counts the frames Decide drops and corrupts among the first n.
func predict(p Params, dir Direction, n int) (drops, corrupts int) {
	for i := range uint64(n) {
		d, c := Decide(p, dir, i)
		if d {
			drops++
		}
		if c {
			corrupts++
		}
	}
	return
}

// TestLossFidelity: 5% seeded loss over 20,000 datagrams drops 5 +/- 1%,
// exactly the frames Decide predicts, and the same seed again drops the
// same number.
func TestLossFidelity(t *testing.T) {
	a, b, br := fabricOf(t, true)
	imp, err := Attach(br.Name, "va")
	if err != nil {
		t.Fatal(err)
	}
	defer imp.Close()
	const n = 20_000
	p := Params{LossPPM: 50_000, Seed: 7}
	wantDrops, _ := predict(p, Ingress, n)
	var prev Counters
	for run := range 2 {
		if err := imp.Set(p); err != nil {
			t.Fatal(err)
		}
		got, _ := blast(t, a, b, n, 64)
		c, err := imp.Counters()
		if err != nil {
			t.Fatal(err)
		}
		dropped := c.Ingress.Dropped - prev.Ingress.Dropped
		passed := c.Ingress.Passed - prev.Ingress.Passed
		prev = c
		loss := float64(n-got) / n * 100
		t.Logf("run %d: sent %d, received %d (%.2f%% lost), program dropped %d, passed %d, Decide predicts %d",
			run, n, got, loss, dropped, passed, wantDrops)
		if loss < 4 || loss > 6 {
			t.Errorf("run %d: measured loss %.2f%%, want 5 +/- 1%%", run, loss)
		}
		if int(dropped) != wantDrops || int(passed) != n-wantDrops {
			t.Errorf("run %d: program dropped %d passed %d, want %d and %d", run, dropped, passed, wantDrops, n-wantDrops)
		}
		if got != int(passed) {
			t.Errorf("run %d: received %d, but the program passed %d (loss elsewhere)", run, got, passed)
		}
	}
}

// setTxChecksum turns a veth's transmit checksum offload on or off
// (ETHTOOL_STXCSUM), so its kernel computes full checksums before the
// frame leaves.
func setTxChecksum(t *testing.T, ns *nstest.NS, ifname string, on bool) {
	t.Helper()
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		val := struct{ cmd, data uint32 }{0x17, 0} // ETHTOOL_STXCSUM
		if on {
			val.data = 1
		}
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data unsafe.Pointer
			_    [16]byte
		}
		copy(ifr.name[:], ifname)
		ifr.data = unsafe.Pointer(&val)
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
			return e
		}
		return nil
	})
	if err != nil {
		t.Fatalf("ethtool tx %v on %s: %v", on, ifname, err)
	}
}

// TestCorruptCaughtByChecksum: with full checksums from the sender, every
// corrupted datagram shows up in the receiver's UDP InCsumErrors and never
// reaches the socket.
func TestCorruptCaughtByChecksum(t *testing.T) {
	a, b, br := fabricOf(t, true)
	setTxChecksum(t, a.ns, "eth0", false)
	imp, err := Attach(br.Name, "va")
	if err != nil {
		t.Fatal(err)
	}
	defer imp.Close()
	const n = 5000
	p := Params{CorruptPPM: 20_000, Seed: 11}
	if err := imp.Set(p); err != nil {
		t.Fatal(err)
	}
	_, wantCorrupt := predict(p, Ingress, n)
	before := udpSnmp(t, b.ns)
	got, altered := blast(t, a, b, n, 200)
	after := udpSnmp(t, b.ns)
	c, _ := imp.Counters()
	csumErrs := after["InCsumErrors"] - before["InCsumErrors"]
	t.Logf("corrupted %d (Decide: %d), InCsumErrors +%d, received %d of %d, altered %d", c.Ingress.Corrupted, wantCorrupt, csumErrs, got, n, altered)
	if int(c.Ingress.Corrupted) != wantCorrupt || wantCorrupt == 0 {
		t.Errorf("program corrupted %d, Decide predicts %d", c.Ingress.Corrupted, wantCorrupt)
	}
	if csumErrs != c.Ingress.Corrupted {
		t.Errorf("InCsumErrors rose by %d, want %d", csumErrs, c.Ingress.Corrupted)
	}
	if got != n-int(c.Ingress.Corrupted) || altered != 0 {
		t.Errorf("received %d (altered %d), want %d unaltered", got, altered, n-int(c.Ingress.Corrupted))
	}
}

// TestCorruptPartialChecksumUndetected documents the limit: when the
// sender leaves the checksum to offload (veth's default), the byte is
// flipped before anyone computes the checksum, so the receiver accepts the
// altered payload.
func TestCorruptPartialChecksumUndetected(t *testing.T) {
	a, b, br := fabricOf(t, true)
	imp, err := Attach(br.Name, "va")
	if err != nil {
		t.Fatal(err)
	}
	defer imp.Close()
	if err := imp.Set(Params{CorruptPPM: 100_000, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	before := udpSnmp(t, b.ns)
	got, altered := blast(t, a, b, n, 200)
	after := udpSnmp(t, b.ns)
	c, _ := imp.Counters()
	t.Logf("corrupted %d, InCsumErrors +%d, received %d, altered %d", c.Ingress.Corrupted, after["InCsumErrors"]-before["InCsumErrors"], got, altered)
	if c.Ingress.Corrupted == 0 || got != n || altered != int(c.Ingress.Corrupted) {
		t.Errorf("with checksum offload: corrupted %d, received %d of %d, altered %d", c.Ingress.Corrupted, got, n, altered)
	}
}

func ping(t *testing.T, p peer, dst net.IP) error {
	out, err := p.ns.Run(t, 10*time.Second, "ping", "-c", "1", "-W", "1", dst.String())
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// TestDownUpFromAnotherProcess: the attaching handle is closed, another
// process opens the pinned impairment and takes the link down, then up.
func TestDownUpFromAnotherProcess(t *testing.T) {
	a, b, br := fabricOf(t, false)
	imp, err := Attach(br.Name, "vb")
	if err != nil {
		t.Fatal(err)
	}
	if err := imp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ping(t, a, b.ip); err != nil {
		t.Fatalf("ping before Down: %v", err)
	}
	other := func(loss uint32, down bool) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		d := "0"
		if down {
			d = "1"
		}
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|vb|%d|%s", helperEnv, br.Name, loss, d))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("helper process: %v: %s", err, out)
		}
	}
	other(0, true)
	if err := ping(t, a, b.ip); err == nil {
		t.Fatal("ping crosses a link that is down")
	}
	h, err := Open(br.Name, "vb")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p, _ := h.Params()
	c, _ := h.Counters()
	if !p.Down || c.Egress.Blocked == 0 {
		t.Errorf("after Down: params %+v, counters %+v", p, c)
	}
	other(123, false)
	if err := ping(t, a, b.ip); err != nil {
		t.Fatalf("ping after Up: %v", err)
	}
	if p, _ := h.Params(); p.Down || p.LossPPM != 123 {
		t.Errorf("params after Up from the other process: %+v", p)
	}
	if err := Detach(br.Name, "vb"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(br.Name, "vb"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open after Detach: %v, want ErrNotFound", err)
	}
}

// TestAttachErrors covers bad arguments and a missing port.
func TestAttachErrors(t *testing.T) {
	a, _, br := fabricOf(t, true)
	if _, err := Attach(br.Name, "nosuch0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing interface: %v", err)
	}
	if _, err := Attach(br.Name, "../x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad name: %v", err)
	}
	imp, err := Attach(br.Name, "va")
	if err != nil {
		t.Fatal(err)
	}
	defer imp.Close()
	if err := imp.Set(Params{LossPPM: PPM + 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("rate above 100%%: %v", err)
	}
	if _, err := AttachTemplate(br.Name, "va", macOf(t, br, "va"), netipZero()); err != nil {
		t.Fatal(err)
	}
	if err := imp.Set(Params{LossPPM: 10}); err != nil {
		t.Fatal(err)
	}
	// Attaching again reuses what is there (parameters reset): still one
	// program per hook and kind.
	imp2, err := Attach(br.Name, "va")
	if err != nil {
		t.Fatal(err)
	}
	defer imp2.Close()
	if p, _ := imp.Params(); p != (Params{}) {
		t.Errorf("params after a second Attach: %+v", p)
	}
	tpl, err := AttachTemplate(br.Name, "va", macOf(t, br, "va"), netipZero())
	if err != nil {
		t.Fatal(err)
	}
	tpl.Close()
	if in, eg := filterPrograms(t, br, "va"); in != 2 || eg != 1 {
		t.Errorf("after attaching twice: %d ingress and %d egress programs, want 2 and 1", in, eg)
	}
	// A port deleted and made again under the same name gets fresh
	// programs, not the inert pinned ones.
	va, _ := br.Handle.LinkByName("va")
	if err := br.Handle.LinkDel(va); err != nil {
		t.Fatal(err)
	}
	imp.Close()
	imp2.Close()
	nstest.Veth(t, br, "va", a.ns, "eth1", 1500)
	imp3, err := Attach(br.Name, "va")
	if err != nil {
		t.Fatal(err)
	}
	defer imp3.Close()
	if in, eg := filterPrograms(t, br, "va"); in != 1 || eg != 1 {
		t.Errorf("on the new port: %d ingress and %d egress programs, want 1 and 1", in, eg)
	}
	if err := imp3.Set(Params{Down: true}); err != nil {
		t.Fatal(err)
	}
	imp3.Close()
	if err := imp3.Set(Params{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Set on a closed handle: %v", err)
	}
	if _, err := imp3.Counters(); !errors.Is(err, ErrClosed) {
		t.Errorf("Counters on a closed handle: %v", err)
	}
	if _, err := AttachTemplate(br.Name, "va", net.HardwareAddr{1, 2, 3}, netipZero()); !errors.Is(err, ErrInvalid) {
		t.Errorf("short MAC: %v", err)
	}
}

// rawSend sends frames on ifname from inside ns with an AF_PACKET socket.
func rawSend(t *testing.T, ns *nstest.NS, ifname string, frames ...[]byte) {
	t.Helper()
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		for _, f := range frames {
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("raw send: %v", err)
	}
}

func udpTo(t *testing.T, srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, marker string) []byte {
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src, DstIP: dst}
	udp := &layers.UDP{SrcPort: 4000, DstPort: 9001}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true},
		eth, ip, udp, gopacket.Payload(marker)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func arpFrom(t *testing.T, ethSrc, sha net.HardwareAddr, spa, tpa net.IP) []byte {
	eth := &layers.Ethernet{SrcMAC: ethSrc, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPReply, SourceHwAddress: sha, SourceProtAddress: spa, DstHwAddress: make([]byte, 6), DstProtAddress: tpa}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, eth, arp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestTemplateStopsSpoofing: frames with a wrong source MAC, a wrong
// source IP or a lying ARP, sent from inside a's namespace with a raw
// socket, never reach b; a's legitimate traffic (ARP, ping, a raw frame
// with its own addresses) does, and the counters say why each was dropped.
// An impairment on the same port sees only what the template passed.
func TestTemplateStopsSpoofing(t *testing.T) {
	a, b, br := fabricOf(t, false)
	macA, macB := a.eth.Attrs().HardwareAddr, b.eth.Attrs().HardwareAddr
	tpl, err := AttachTemplate(br.Name, "va", macA, netipFrom(a.ip))
	if err != nil {
		t.Fatal(err)
	}
	defer tpl.Close()
	imp, err := Attach(br.Name, "va") // attached after, but runs after the template
	if err != nil {
		t.Fatal(err)
	}
	defer imp.Close()
	if err := ping(t, a, b.ip); err != nil { // needs a's ARP to pass
		t.Fatalf("legitimate ping: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var pcap bytes.Buffer
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := capture.Run(ctx, b.ns.Name, "eth0", &pcap, capture.Options{Ready: func() { close(ready) }})
		done <- err
	}()
	<-ready
	fake := net.HardwareAddr{0x02, 0xba, 0xd0, 0, 0, 1}
	spoofIP := net.IPv4(10, 79, 0, 66).To4()
	rawSend(t, a.ns, "eth0",
		udpTo(t, fake, macB, a.ip, b.ip, "SPOOF-MAC"),
		udpTo(t, macA, macB, spoofIP, b.ip, "SPOOF-IP"),
		arpFrom(t, macA, macA, b.ip, b.ip),          // claims b's address
		arpFrom(t, macA, fake, a.ip, b.ip),          // sender MAC not a's
		udpTo(t, macA, macB, a.ip, b.ip, "LEGIT-1"), // own addresses
	)
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	r, err := pcapgo.NewReader(&pcap)
	if err != nil {
		t.Fatal(err)
	}
	var legit, spoofed int
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		switch {
		case p.Layer(layers.LayerTypeICMPv4) != nil:
			// b's port unreachable for the raw datagrams: it quotes them.
		case bytes.Contains(data, []byte("LEGIT")):
			legit++
		case bytes.Contains(data, []byte("SPOOF")), !bytes.Equal(eth.SrcMAC, macA) && !bytes.Equal(eth.SrcMAC, macB):
			spoofed++
		case p.Layer(layers.LayerTypeARP) != nil:
			arp := p.Layer(layers.LayerTypeARP).(*layers.ARP)
			if !bytes.Equal(arp.SourceHwAddress, eth.SrcMAC) || (bytes.Equal(eth.SrcMAC, macA) && !net.IP(arp.SourceProtAddress).Equal(a.ip)) {
				spoofed++
			}
		}
	}
	c, err := tpl.Counters()
	if err != nil {
		t.Fatal(err)
	}
	ic, _ := imp.Counters()
	t.Logf("b saw %d legitimate, %d spoofed; template %+v; impairment ingress %+v", legit, spoofed, c, ic.Ingress)
	if legit != 1 || spoofed != 0 {
		t.Errorf("b saw %d legitimate and %d spoofed frames, want 1 and 0", legit, spoofed)
	}
	if c.BadMAC != 1 || c.BadIP != 1 || c.BadARP != 2 || c.BadType != 0 || c.Runt != 0 {
		t.Errorf("template counters %+v, want BadMAC 1, BadIP 1, BadARP 2", c)
	}
	if c.Passed < 3 || ic.Ingress.Passed != c.Passed {
		t.Errorf("template passed %d, impairment saw %d: want the same, >= 3 (ARP, ping, raw)", c.Passed, ic.Ingress.Passed)
	}

	// A second process can read the template and change it: with b's
	// address, a's own frames are now the spoofed ones.
	t2, err := OpenTemplate(br.Name, "va")
	if err != nil {
		t.Fatal(err)
	}
	defer t2.Close()
	if err := t2.Set(macA, netipFrom(b.ip)); err != nil {
		t.Fatal(err)
	}
	rawSend(t, a.ns, "eth0", udpTo(t, macA, macB, a.ip, b.ip, "LEGIT-2"))
	if c2, _ := t2.Counters(); c2.BadIP != c.BadIP+1 {
		t.Errorf("after Set: BadIP %d, want %d", c2.BadIP, c.BadIP+1)
	}
	if err := DetachTemplate(br.Name, "va"); err != nil {
		t.Fatal(err)
	}
	tpl.Close()
	t2.Close()
	if _, err := OpenTemplate(br.Name, "va"); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenTemplate after detach: %v", err)
	}
	if err := ping(t, a, b.ip); err != nil {
		t.Errorf("ping after detaching the template: %v", err)
	}
}

func netipFrom(ip net.IP) netip.Addr { a, _ := netip.AddrFromSlice(ip.To4()); return a }

func netipZero() netip.Addr { return netip.Addr{} }

func macOf(t *testing.T, ns *nstest.NS, ifname string) net.HardwareAddr {
	l, err := ns.Handle.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().HardwareAddr
}

// filterPrograms counts the bpf filters on the port's clsact ingress and
// egress.
func filterPrograms(t *testing.T, ns *nstest.NS, ifname string) (in, eg int) {
	t.Helper()
	l, err := ns.Handle.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		n      *int
		parent uint32
	}{{&in, netlink.HANDLE_MIN_INGRESS}, {&eg, netlink.HANDLE_MIN_EGRESS}} {
		fs, err := ns.Handle.FilterList(l, x.parent)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if _, ok := f.(*netlink.BpfFilter); ok {
				*x.n++
			}
		}
	}
	return in, eg
}
