package stack

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/netstation/netstation/stack/checksum"
	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/tcp"
)

// tcpNet is the stack as the tcp package sees it: the layer that puts
// segments into frames and frames onto the link.
type tcpNet struct{ s *Stack }

var (
	_ tcp.Network  = tcpNet{}
	_ tcp.Driver   = tcpNet{}
	_ tcp.Lender   = tcpNet{}
	_ tcp.Gatherer = tcpNet{}
)

func (n tcpNet) LocalAddr() [4]byte { return n.s.addr }
func (n tcpNet) MTU() int           { return n.s.mtu }
func (n tcpNet) GSO() bool          { return n.s.gso }

// Gather: a link that gathers and finishes checksums takes a segment's
// payload from the connection's send ring as pieces (tcp.Gatherer).
func (n tcpNet) Gather() bool             { return n.s.gather && n.s.offload }
func (n tcpNet) Drop(r engine.DropReason) { n.s.eng.Drop(r) }

// Hold and Release lend the link's receive buffers to TCP (tcp.Lender):
// only frames that arrived lent (deliverTCP's loan) are held.
func (n tcpNet) Hold(loan uint32, k int) bool {
	if n.s.lender == nil || !n.s.lender.Hold(loan, k) {
		return false
	}
	n.s.st.lentFramesIn.Add(1)
	return true
}
func (n tcpNet) Release(loan uint32, k int) { n.s.lender.Release(loan, k) }
func (n tcpNet) Drive(ready func() bool, deadline int64, budget time.Duration) {
	if budget < 0 {
		budget = n.s.cfg.PollBudget
	}
	// No yield before the first poll (commit 9c6b404 had one: p50 -12 %
	// on one CPU over AF_PACKET, but p99 twice as long on a loaded
	// machine, and nothing over XSK, whose poller looks again right after
	// its own yield): see docs/ARCHITECTURE.md, "Kernel facts".
	n.s.drive(ready, deadline, budget)
}
func (n tcpNet) NewRoute(dst [4]byte, lport uint16) (tcp.Route, error) {
	if _, _, _, err := n.s.nextHop(dst, time.Now()); err != nil {
		return nil, err // fail a Dial at once, as a kernel does (ENETUNREACH)
	}
	return &tcpRoute{s: n.s, dst: dst,
		tmpl: engine.Template{SrcMAC: n.s.mac, SrcAddr: n.s.addr, SrcPort: lport, Proto: header.ProtocolTCP}}, nil
}

// tcpRoute frames one connection's segments: Ethernet and IPv4 headers go
// into the headroom the tcp package left, the checksum is offloaded (or
// computed), super-frames get their TCPv4 GSO header, and the batch goes
// through the engine's template check to the link in one call.
type tcpRoute struct {
	s      *Stack
	dst    [4]byte
	tmpl   engine.Template
	frames []link.Frame
	pieces [][]byte // a gathered segment's: headers, payload pieces
}

const tcpCsumStart = header.EthernetMinimumSize + header.IPv4MinimumSize

func (r *tcpRoute) Output(segs []tcp.Segment) error {
	s := r.s
	now := time.Now()
	mac, ok, hop, err := s.nextHop(r.dst, now)
	if err != nil {
		return err
	}
	eth := header.EthernetFields{Dst: mac, Src: s.mac, Type: header.EtherTypeIPv4}
	r.frames = r.frames[:0]
	for i := range segs {
		seg := &segs[i]
		b := seg.Buf
		pay := len(seg.Payload[0]) + len(seg.Payload[1])
		if pay > 0 && !ok {
			// Waiting for ARP: the queue keeps a copy of the whole frame.
			b = append(append(b, seg.Payload[0]...), seg.Payload[1]...)
			pay = 0
		}
		l4 := len(b) + pay - tcpCsumStart
		header.Ethernet(b).Encode(&eth)
		header.IPv4(b[header.EthernetMinimumSize:]).Encode(&header.IPv4Fields{
			TotalLength: uint16(header.IPv4MinimumSize + l4),
			ID:          s.newID(),
			Flags:       header.IPv4FlagDontFragment,
			TTL:         s.cfg.TTL,
			Protocol:    header.ProtocolTCP,
			Src:         s.addr,
			Dst:         r.dst,
		})
		pseudo := checksum.PseudoHeader(s.addr, r.dst, header.ProtocolTCP, uint16(l4))
		var v link.VNetHdr
		if g := seg.GSOSize; g > 0 {
			// hdr_len is the whole frame (up to gsoLinearMax), as for UDP
			// super-frames: packet_snd then builds one linear head instead
			// of page fragments, cheaper to fill and, at the receiver, to
			// copy out (BenchmarkTCPBulk at real-time priority, 2 rounds
			// alternating, 2026-12-02: user 22.2/22.2 -> 28.3/23.4 Gbit/s,
			// user-bridge 22.0/22.9 -> 24.3/28.9; NBD 1 MiB READs +2-10 %).
			v = link.VNetHdr{GSOType: link.GSOTCPv4, GSOSize: uint16(g), HdrLen: gsoHdrLen(len(b) + pay)}
			engine.SetL4Checksum(b, tcpCsumStart, 16, pseudo, true, &v)
			s.st.gsoFramesOut.Add(1)
		} else {
			// A gathered segment's checksum is the link's to finish
			// (tcpNet.Gather asks for offload).
			engine.SetL4Checksum(b, tcpCsumStart, 16, pseudo, s.offload || pay > 0, &v)
		}
		if pay > 0 {
			if err := r.gather(b, seg, v); err != nil {
				clear(r.frames)
				r.frames = r.frames[:0]
				return err
			}
			continue
		}
		if ok {
			r.frames = append(r.frames, link.Frame{Buf: b, VNet: v})
			continue
		}
		if !r.tmpl.Match(b) {
			s.eng.Drop(engine.DropTemplateMismatch)
			continue
		}
		request, dropped := s.arp.Enqueue(hop, link.Frame{Buf: b, VNet: v}, now)
		s.wakeTimer()
		if dropped {
			s.eng.Drop(engine.DropARPQueueFull)
		}
		if request {
			s.sendARP(header.ARPRequest, header.Broadcast, hop)
		}
	}
	if len(r.frames) == 0 {
		return nil
	}
	_, err = s.eng.Transmit(r.frames, &r.tmpl)
	clear(r.frames) // do not keep the connection's buffers reachable from here
	return err
}

// gather sends the segment whose headers are b and whose payload is in
// seg.Payload as pieces the link gathers, after the frames before it; a
// link that cannot gather this frame now gets it assembled in b's room.
func (r *tcpRoute) gather(b []byte, seg *tcp.Segment, v link.VNetHdr) error {
	s := r.s
	if len(r.frames) > 0 { // keep the order of frames
		_, err := s.eng.Transmit(r.frames, &r.tmpl)
		clear(r.frames)
		r.frames = r.frames[:0]
		if err != nil {
			return err
		}
	}
	r.pieces = append(r.pieces[:0], b, seg.Payload[0])
	if len(seg.Payload[1]) > 0 {
		r.pieces = append(r.pieces, seg.Payload[1])
	}
	sent, err := s.eng.TransmitGather(v, r.pieces, &r.tmpl)
	clear(r.pieces) // do not keep the connection's buffers reachable from here
	if sent {
		return err
	}
	b = append(append(b, seg.Payload[0]...), seg.Payload[1]...)
	f := [1]link.Frame{{Buf: b, VNet: v}}
	_, err = s.eng.Transmit(f[:], &r.tmpl)
	return err
}

func (r *tcpRoute) Close() {}

// ListenTCP opens a TCP listener on laddr (our address or unspecified;
// port 0 picks an ephemeral port). The result is a *tcp.Listener.
func (s *Stack) ListenTCP(laddr netip.AddrPort) (net.Listener, error) {
	l, err := s.tcp.Listen(laddr)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// DialTCP connects from laddr (zero value: our address, an ephemeral
// port) to raddr; ctx bounds the handshake.
func (s *Stack) DialTCP(ctx context.Context, laddr, raddr netip.AddrPort) (*tcp.Conn, error) {
	return s.tcp.Dial(ctx, laddr, raddr)
}

// TCP returns the stack's TCP instance (counters, connection count).
func (s *Stack) TCP() *tcp.Protocol { return s.tcp }

func (s *Stack) deliverTCP(p *engine.Packet) {
	gso := 0
	if p.VNet.GSOType&^link.GSOECN == link.GSOTCPv4 {
		gso = int(p.VNet.GSOSize)
		s.st.gsoFramesIn.Add(1)
	}
	// The segment lies in the frame as received, where the link may lend
	// it (s.rxLoan is zero otherwise); ACKs wait for the batch's end
	// (inputBatch's tcp.Flush).
	s.tcp.Input(p.Src, p.Dst, p.Buf[p.L4:p.End], gso, s.rxLoan)
}
