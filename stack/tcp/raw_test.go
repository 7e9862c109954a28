package tcp_test

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
	"github.com/netstation/netstation/stack/tcp"
)

// rawPeer drives a stack (on ipA) by hand from the other end of a mem
// pair, as ipB: it answers ARP, decodes every frame the stack sends with
// gopacket (checking each TCP checksum) and sends segments it builds.
type rawPeer struct {
	window uint16 // the window the peer advertises (0: 65535)
	t      testing.TB
	s      *stack.Stack
	l      *mem.Link
	segs   chan *layers.TCP
}

func newRawPeer(t testing.TB, cfg tcp.Config) *rawPeer {
	t.Helper()
	if cfg.MinRTO == 0 {
		// Hand-driven exchanges must not race a retransmission: with a
		// 200 ms floor, a loaded machine would see stray segments.
		cfg.MinRTO = 2 * time.Second
	}
	la, lb := mem.Pair(macA, macB, mem.Options{})
	s, err := stack.New(la, stack.Config{Addr: netip.PrefixFrom(ipA, 24), TCP: cfg, NoGratuitousARP: true})
	if err != nil {
		t.Fatal(err)
	}
	r := &rawPeer{t: t, s: s, l: lb, segs: make(chan *layers.TCP, 1024)}
	done := make(chan struct{})
	go r.loop(done)
	t.Cleanup(func() { s.Close(); <-done })
	return r
}

func (r *rawPeer) loop(done chan struct{}) {
	defer close(done)
	frames := make([]link.Frame, 16)
	for {
		n, err := r.l.ReadBatch(frames)
		for i := range frames[:n] {
			r.handle(frames[i].Buf)
		}
		if err != nil {
			return
		}
	}
}

func (r *rawPeer) handle(b []byte) {
	pkt := gopacket.NewPacket(append([]byte(nil), b...), layers.LayerTypeEthernet, gopacket.Default)
	if a, ok := pkt.Layer(layers.LayerTypeARP).(*layers.ARP); ok {
		if a.Operation == layers.ARPRequest && netip.AddrFrom4([4]byte(a.DstProtAddress)) == ipB {
			f := make([]byte, 42)
			header.Ethernet(f).Encode(&header.EthernetFields{Dst: [6]byte(macA), Src: [6]byte(macB), Type: header.EtherTypeARP})
			header.ARP(f[14:]).Encode(&header.ARPFields{Op: header.ARPReply, SenderMAC: [6]byte(macB), TargetMAC: [6]byte(macA),
				SenderAddr: ipB.As4(), TargetAddr: ipA.As4()})
			r.l.WriteBatch([]link.Frame{{Buf: f}})
		}
		return
	}
	if pkt.ErrorLayer() != nil {
		r.t.Errorf("gopacket cannot decode a frame the stack sent: %v", pkt.ErrorLayer().Error())
		return
	}
	tl, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok {
		return
	}
	ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if err := tl.SetNetworkLayerForChecksum(ip); err != nil {
		r.t.Error(err)
	}
	if sum, err := tl.ComputeChecksum(); err != nil || sum != 0 {
		r.t.Errorf("segment %v with a bad checksum (residue %#x)", flagString(tl), sum)
	}
	if ip.Flags&layers.IPv4DontFragment == 0 {
		r.t.Errorf("TCP segment without DF")
	}
	r.segs <- tl
}

func flagString(t *layers.TCP) string {
	s := ""
	for _, f := range []struct {
		on   bool
		name string
	}{{t.SYN, "S"}, {t.ACK, "A"}, {t.FIN, "F"}, {t.RST, "R"}, {t.PSH, "P"}} {
		if f.on {
			s += f.name
		}
	}
	return s
}

// expect returns the next segment the stack sends.
func (r *rawPeer) expect(what string) *layers.TCP {
	r.t.Helper()
	select {
	case s := <-r.segs:
		return s
	case <-time.After(3 * time.Second):
		r.t.Fatalf("no segment from the stack (waiting for %s)", what)
		return nil
	}
}

// expectFlags waits for a segment with exactly these flags (PSH ignored),
// skipping others.
func (r *rawPeer) expectFlags(flags string) *layers.TCP {
	r.t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case s := <-r.segs:
			f := flagString(s)
			if len(f) > 0 && f[len(f)-1] == 'P' {
				f = f[:len(f)-1]
			}
			if f == flags {
				return s
			}
		case <-deadline:
			r.t.Fatalf("no %s segment from the stack", flags)
			return nil
		}
	}
}

// expectData waits for a segment carrying data, skipping others.
func (r *rawPeer) expectData() *layers.TCP {
	r.t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case s := <-r.segs:
			if len(s.Payload) > 0 {
				return s
			}
		case <-deadline:
			r.t.Fatal("no data segment from the stack")
			return nil
		}
	}
}

// silent checks the stack sends nothing for d.
func (r *rawPeer) silent(d time.Duration) {
	r.t.Helper()
	select {
	case s := <-r.segs:
		r.t.Fatalf("unexpected segment %s seq %d ack %d", flagString(s), s.Seq, s.Ack)
	case <-time.After(d):
	}
}

// send sends a segment from ipB:sport to ipA:dport.
func (r *rawPeer) send(sport, dport uint16, seq, ack uint32, flags uint8, payload []byte, opts header.TCPOptions) {
	r.t.Helper()
	wnd := uint16(65535)
	if r.window != 0 {
		wnd = r.window
	}
	f := header.TCPFields{SrcPort: sport, DstPort: dport, Seq: seq, Ack: ack, Flags: flags, Window: wnd, Opts: opts}
	hl := header.TCPMinimumSize + header.TCPOptionsSize(&opts)
	b := make([]byte, 34+hl+len(payload))
	header.Ethernet(b).Encode(&header.EthernetFields{Dst: [6]byte(macA), Src: [6]byte(macB), Type: header.EtherTypeIPv4})
	header.IPv4(b[14:]).Encode(&header.IPv4Fields{TotalLength: uint16(20 + hl + len(payload)), TTL: 64,
		Protocol: header.ProtocolTCP, Src: ipB.As4(), Dst: ipA.As4()})
	seg := header.TCP(b[34:])
	seg.Encode(&f)
	copy(b[34+hl:], payload)
	seg.SetChecksum(header.TCPChecksum(ipB.As4(), ipA.As4(), seg))
	if _, err := r.l.WriteBatch([]link.Frame{{Buf: b}}); err != nil {
		r.t.Fatal(err)
	}
}

func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

// waitConns waits until the stack holds n connections.
func waitConns(t testing.TB, s *stack.Stack, n int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for s.TCP().NumConns() != n {
		if time.Now().After(deadline) {
			t.Fatalf("stack holds %d connections, want %d", s.TCP().NumConns(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

const (
	layers_MSS    = layers.TCPOptionKindMSS
	layers_WS     = layers.TCPOptionKindWindowScale
	layers_SACKOK = layers.TCPOptionKindSACKPermitted
	layers_TS     = layers.TCPOptionKindTimestamps
)

func be16(b []byte) uint16 {
	if len(b) < 2 {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}
