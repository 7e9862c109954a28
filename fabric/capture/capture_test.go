package capture

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/netstation/netstation/internal/nstest"
	"github.com/netstation/netstation/internal/privtest"
	"github.com/vishvananda/netlink"
)

// fabricOf builds two kernel peers a (10.78.0.1) and b (10.78.0.2) whose
// eth0 are joined through a bridge in a third namespace (ports va, vb).
func fabricOf(t testing.TB) (a, b, br *nstest.NS) {
	a, b, br = nstest.New(t, "a"), nstest.New(t, "b"), nstest.New(t, "br")
	for _, ns := range []*nstest.NS{a, b, br} {
		if out, err := ns.Run(t, 5*time.Second, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
			t.Fatalf("disable IPv6: %v: %s", err, out)
		}
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "br0"
	bridge := &netlink.Bridge{LinkAttrs: attrs}
	if err := br.Handle.LinkAdd(bridge); err != nil {
		t.Fatal(err)
	}
	if err := br.Handle.LinkSetUp(bridge); err != nil {
		t.Fatal(err)
	}
	for i, peer := range []*nstest.NS{a, b} {
		port, eth := nstest.Veth(t, br, fmt.Sprintf("v%c", 'a'+i), peer, "eth0", 1500)
		if err := br.Handle.LinkSetMaster(port, bridge); err != nil {
			t.Fatal(err)
		}
		peer.AddrAdd(t, eth, fmt.Sprintf("10.78.0.%d/24", i+1))
	}
	return a, b, br
}

// capturing starts Run in the background and returns a function that stops
// it and returns what it wrote.
func capturing(t *testing.T, ns, ifname string, opts Options) func() []byte {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	opts.Ready = func() { close(ready) }
	var buf bytes.Buffer
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, runErr = Run(ctx, ns, ifname, &buf, opts)
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("capture did not start")
	}
	return func() []byte {
		cancel()
		wg.Wait()
		if runErr != nil {
			t.Fatalf("capture: %v", runErr)
		}
		return buf.Bytes()
	}
}

type decoded struct {
	echoReq, echoRep, udp, arp, other int
}

// decode reads a pcap stream with gopacket's reader and checks every IPv4,
// ICMP and UDP checksum by recomputing it.
func decode(t *testing.T, data []byte) decoded {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("pcap reader: %v", err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Fatalf("link type %v", r.LinkType())
	}
	var d decoded
	for {
		raw, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		if ci.CaptureLength != len(raw) || ci.Timestamp.IsZero() {
			t.Errorf("capture info %+v", ci)
		}
		p := gopacket.NewPacket(raw, layers.LayerTypeEthernet, gopacket.Default)
		if el := p.ErrorLayer(); el != nil {
			t.Errorf("decode error: %v", el.Error())
			continue
		}
		switch {
		case p.Layer(layers.LayerTypeARP) != nil:
			d.arp++
			continue
		case p.Layer(layers.LayerTypeIPv4) == nil:
			d.other++
			continue
		}
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if sum := onesSum(ip.Contents, 0); sum != 0xffff {
			t.Errorf("bad IPv4 header checksum in %v", p)
		}
		if ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
			if sum := onesSum(append(append([]byte{}, ic.Contents...), ic.Payload...), 0); sum != 0xffff {
				t.Errorf("bad ICMP checksum in %v", p)
			}
			switch ic.TypeCode.Type() {
			case layers.ICMPv4TypeEchoRequest:
				d.echoReq++
			case layers.ICMPv4TypeEchoReply:
				d.echoRep++
			}
		}
		if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
			seg := append(append([]byte{}, u.Contents...), u.Payload...)
			pseudo := append(append([]byte{}, ip.SrcIP.To4()...), ip.DstIP.To4()...)
			pseudo = append(pseudo, 0, 17, byte(len(seg)>>8), byte(len(seg)))
			if sum := onesSum(seg, onesSum(pseudo, 0)); sum != 0xffff {
				t.Errorf("bad UDP checksum %#04x (sum %#04x) in %v", u.Checksum, sum, p)
			}
			d.udp++
		}
	}
	return d
}

// onesSum is a straightforward RFC 1071 sum, independent of stack/checksum.
func onesSum(b []byte, initial uint16) uint16 {
	s := uint32(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// udpExchange sends n datagrams from a to b:9000 and has b echo each.
func udpExchange(t *testing.T, a, b *nstest.NS, n int) {
	t.Helper()
	var srv, cli net.PacketConn
	if err := b.Do(func() (err error) { srv, err = net.ListenPacket("udp4", "10.78.0.2:9000"); return }); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := a.Do(func() (err error) { cli, err = net.ListenPacket("udp4", "10.78.0.1:0"); return }); err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(buf[:n], from)
		}
	}()
	dst := &net.UDPAddr{IP: net.IPv4(10, 78, 0, 2), Port: 9000}
	buf := make([]byte, 2048)
	for i := range n {
		msg := []byte(fmt.Sprintf("storage block %d %s", i, strings.Repeat("x", 100*i)))
		cli.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := cli.WriteTo(msg, dst); err != nil {
			t.Fatal(err)
		}
		if k, _, err := cli.ReadFrom(buf); err != nil || !bytes.Equal(buf[:k], msg) {
			t.Fatalf("echo %d: %v", i, err)
		}
	}
}

// TestCapturePingAndUDP captures a ping and a UDP exchange on one port and,
// at the same time, the whole fabric with a filter; an independent reader
// decodes both and every checksum is valid.
func TestCapturePingAndUDP(t *testing.T) {
	a, b, br := fabricOf(t)
	stopPort := capturing(t, br.Name, "va", Options{})
	stopFabric := capturing(t, br.Name, "", Options{Filter: "icmp"})
	if out, err := a.Run(t, 10*time.Second, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.78.0.2"); err != nil {
		t.Fatalf("ping: %v: %s", err, out)
	}
	udpExchange(t, a, b, 4)
	port, whole := stopPort(), stopFabric()

	d := decode(t, port)
	t.Logf("port va: %+v", d)
	if d.echoReq != 3 || d.echoRep != 3 || d.udp != 8 || d.arp < 2 || d.other != 0 {
		t.Errorf("port capture: %+v, want 3 echo requests, 3 replies, 8 UDP, >= 2 ARP", d)
	}
	// Fabric-wide: each frame once (entering at its source's port), and
	// only ICMP.
	d = decode(t, whole)
	t.Logf("fabric: %+v", d)
	if d.echoReq != 3 || d.echoRep != 3 || d.udp != 0 || d.arp != 0 {
		t.Errorf("fabric capture with filter icmp: %+v, want exactly 3 requests and 3 replies", d)
	}

	privtest.Tool(t, "tshark")
	file := filepath.Join(t.TempDir(), "port.pcap")
	if err := os.WriteFile(file, port, 0o600); err != nil {
		t.Fatal(err)
	}
	tshark := func(file string, args ...string) string {
		var stderr bytes.Buffer
		cmd := exec.Command("tshark", append([]string{"-r", file, "-n",
			"-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"}, args...)...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tshark %v: %v: %s", args, err, stderr.Bytes())
		}
		return string(out)
	}
	lines := func(s string) int { return len(strings.Fields(strings.ReplaceAll(s, " ", "_"))) }
	if n := lines(tshark(file, "-Y", "icmp", "-T", "fields", "-e", "frame.number")); n != 6 {
		t.Errorf("tshark sees %d ICMP frames, want 6", n)
	}
	if n := lines(tshark(file, "-Y", "udp.port == 9000", "-T", "fields", "-e", "frame.number")); n != 8 {
		t.Errorf("tshark sees %d UDP frames, want 8", n)
	}
	badFilter := `ip.checksum.status == "Bad" || udp.checksum.status == "Bad" || icmp.checksum.status == "Bad" || _ws.malformed || _ws.expert.severity >= "error"`
	if bad := tshark(file, "-Y", badFilter); strings.TrimSpace(bad) != "" {
		t.Errorf("tshark flags frames:\n%s", bad)
	}
	// The same check must see a broken UDP checksum: rewrite the file with
	// one frame's checksum altered.
	broken := filepath.Join(t.TempDir(), "broken.pcap")
	f, err := os.Create(broken)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := pcapgo.NewReader(bytes.NewReader(port))
	w := pcapgo.NewWriterNanos(f)
	w.WriteFileHeader(r.Snaplen(), r.LinkType())
	altered := false
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		if !altered && len(data) > 42 && data[23] == 17 {
			data[41] ^= 0x55
			altered = true
		}
		w.WritePacket(ci, data)
	}
	f.Close()
	if bad := tshark(broken, "-Y", badFilter); strings.Count(strings.TrimSpace(bad), "\n") != 0 || !strings.Contains(bad, "UDP") {
		t.Errorf("tshark does not flag exactly the altered frame:\n%s", bad)
	}
}

// TestCaptureCount stops after Count frames and honours Snaplen.
func TestCaptureCount(t *testing.T) {
	a, _, br := fabricOf(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var buf bytes.Buffer
	ready := make(chan struct{})
	done := make(chan error, 1)
	var st Stats
	go func() {
		var err error
		st, err = Run(ctx, br.Name, "va", &buf, Options{Count: 2, Snaplen: 60, Filter: "icmp", Ready: func() { close(ready) }})
		done <- err
	}()
	<-ready
	if out, err := a.Run(t, 10*time.Second, "ping", "-c", "3", "-i", "0.2", "-s", "500", "10.78.0.2"); err != nil {
		t.Fatalf("ping: %v: %s", err, out)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("Run did not stop at Count")
	}
	r, err := pcapgo.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		n++
		if len(data) != 60 || ci.Length != 14+20+8+500 {
			t.Errorf("frame kept %d of %d bytes, want 60 of %d", len(data), ci.Length, 14+20+8+500)
		}
	}
	if n != 2 || st.Packets != 2 {
		t.Errorf("%d frames written (stats %+v), want 2", n, st)
	}
}

func TestRunErrors(t *testing.T) {
	_, _, br := fabricOf(t)
	if _, err := Run(context.Background(), br.Name, "va", &bytes.Buffer{}, Options{Filter: "udp and"}); err == nil {
		t.Error("bad filter accepted")
	}
	if _, err := Run(context.Background(), br.Name, "nosuch0", &bytes.Buffer{}, Options{}); err == nil {
		t.Error("missing interface accepted")
	}
}
