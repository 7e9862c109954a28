package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/netstation/netstation/stack/checksum"
	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/link"
)

var (
	ourMAC  = [6]byte{2, 0, 0, 0, 0, 1}
	peerMAC = [6]byte{2, 0, 0, 0, 0, 2}
	ourIP   = [4]byte{10, 0, 0, 1}
	peerIP  = [4]byte{10, 0, 0, 2}
)

func classifier() *Classifier {
	return &Classifier{MAC: ourMAC, Addr: ourIP, Broadcast: [4]byte{10, 0, 0, 255}}
}

// udpFrame builds a valid frame from peer to us.
func udpFrame(payload []byte) []byte {
	b := make([]byte, 42+len(payload))
	header.Ethernet(b).Encode(&header.EthernetFields{Dst: ourMAC, Src: peerMAC, Type: header.EtherTypeIPv4})
	header.IPv4(b[14:]).Encode(&header.IPv4Fields{TotalLength: uint16(28 + len(payload)), TTL: 64, Protocol: header.ProtocolUDP, Src: peerIP, Dst: ourIP})
	header.UDP(b[34:]).Encode(&header.UDPFields{SrcPort: 1000, DstPort: 2000, Length: uint16(8 + len(payload))})
	copy(b[42:], payload)
	header.UDP(b[34:]).SetChecksum(header.UDPChecksum(peerIP, ourIP, b[34:]))
	return b
}

func TestClassifyUDP(t *testing.T) {
	c := classifier()
	var p Packet
	f := link.Frame{Buf: udpFrame([]byte("payload"))}
	if r := c.Classify(&f, &p); r != DropNone {
		t.Fatalf("valid frame dropped: %v", r)
	}
	if p.Proto != header.ProtocolUDP || p.SrcPort != 1000 || p.DstPort != 2000 || string(p.L4Payload()) != "payload" {
		t.Fatalf("packet %+v", p)
	}
	// Corrupt the payload: software verification catches it...
	f.Buf[45] ^= 1
	if r := c.Classify(&f, &p); r != DropUDPBadChecksum {
		t.Fatalf("got %v", r)
	}
	// ...unless the link vouches for it (DATA_VALID) or the checksum is
	// partial (NEEDS_CSUM from a local kernel).
	f.VNet.Flags = link.VNetDataValid
	if r := c.Classify(&f, &p); r != DropNone {
		t.Fatalf("DATA_VALID: %v", r)
	}
	f.VNet = link.VNetHdr{Flags: link.VNetNeedsCsum, CsumStart: 34, CsumOffset: 6}
	if r := c.Classify(&f, &p); r != DropNone || !p.PartialCsum {
		t.Fatalf("NEEDS_CSUM: %v %v", r, p.PartialCsum)
	}
}

func TestFinishChecksum(t *testing.T) {
	b := udpFrame([]byte("partial checksum"))
	want := header.UDP(b[34:]).Checksum()
	var v link.VNetHdr
	b[40], b[41] = 0, 0
	SetL4Checksum(b, 34, 6, checksum.PseudoHeader(peerIP, ourIP, 17, uint16(len(b)-34)), true, &v)
	if v.Flags != link.VNetNeedsCsum || v.CsumStart != 34 || v.CsumOffset != 6 {
		t.Fatalf("vnet %+v", v)
	}
	if err := FinishChecksum(b, &v); err != nil {
		t.Fatal(err)
	}
	if got := header.UDP(b[34:]).Checksum(); got != want || v.Flags != 0 {
		t.Fatalf("finished checksum %#x, want %#x", got, want)
	}
	bad := link.VNetHdr{Flags: link.VNetNeedsCsum, CsumStart: 60000, CsumOffset: 6}
	if err := FinishChecksum(b, &bad); !errors.Is(err, ErrBadOffload) {
		t.Fatalf("bad offsets: %v", err)
	}
}

func TestTTLIncrementalUpdate(t *testing.T) {
	b := udpFrame(nil)
	ip := header.IPv4(b[14:])
	for ttl := 64; ttl >= 1; ttl-- {
		ip.SetTTL(uint8(ttl))
		if !ip.IsChecksumValid() {
			t.Fatalf("ttl %d: checksum invalid after RFC 1624 update", ttl)
		}
	}
}

func TestFlowTableOrder(t *testing.T) {
	var ft FlowTable[string]
	ft.Insert(FlowKey{Proto: 17, LocalPort: 53}, "any")
	ft.Insert(FlowKey{Proto: 17, LocalAddr: ourIP, LocalPort: 53}, "ours")
	ft.Insert(FlowKey{Proto: 17, LocalAddr: ourIP, LocalPort: 53, RemoteAddr: peerIP, RemotePort: 9}, "exact")
	if err := ft.Insert(FlowKey{Proto: 17, LocalPort: 53}, "dup"); !errors.Is(err, ErrInUse) {
		t.Fatalf("duplicate insert: %v", err)
	}
	for _, tc := range []struct {
		laddr [4]byte
		rport uint16
		want  string
	}{{ourIP, 9, "exact"}, {ourIP, 10, "ours"}, {[4]byte{255, 255, 255, 255}, 9, "any"}} {
		if e, ok := ft.Lookup(17, tc.laddr, 53, peerIP, tc.rport); !ok || e != tc.want {
			t.Errorf("%v:%d got %q", tc.laddr, tc.rport, e)
		}
	}
	ft.Insert(FlowKey{Proto: 17, LocalPort: 53, RemoteAddr: peerIP, RemotePort: 11}, "any-local connected")
	if e, _ := ft.Lookup(17, ourIP, 53, peerIP, 11); e != "any-local connected" {
		t.Errorf("connected on wildcard address: got %q", e)
	}
	if e, _ := ft.Lookup(17, ourIP, 53, peerIP, 12); e != "ours" {
		t.Errorf("after adding a connected flow: got %q", e)
	}
	if _, ok := ft.Lookup(6, ourIP, 53, peerIP, 9); ok {
		t.Error("TCP matched a UDP flow")
	}
	ft.Remove(FlowKey{Proto: 17, LocalAddr: ourIP, LocalPort: 53, RemoteAddr: peerIP, RemotePort: 9})
	if e, _ := ft.Lookup(17, ourIP, 53, peerIP, 9); e != "ours" {
		t.Errorf("after remove got %q", e)
	}
}

func TestTemplate(t *testing.T) {
	tm := Template{SrcMAC: peerMAC, SrcAddr: peerIP, SrcPort: 1000, Proto: header.ProtocolUDP}
	b := udpFrame(nil)
	if !tm.Match(b) {
		t.Fatal("own frame rejected")
	}
	for i, mut := range []func([]byte){
		func(b []byte) { b[11] ^= 1 },   // source MAC
		func(b []byte) { b[29] ^= 1 },   // source IP
		func(b []byte) { b[35] ^= 1 },   // source port
		func(b []byte) { b[23] = 6 },    // protocol
		func(b []byte) { b[12] = 0x86 }, // ethertype
	} {
		c := append([]byte(nil), b...)
		mut(c)
		if tm.Match(c) {
			t.Errorf("mutation %d passed the template", i)
		}
	}
	if tm.Match(b[:20]) {
		t.Error("truncated frame passed")
	}
}

type countingLink struct {
	link.Link
	n int
}

func (l *countingLink) WriteBatch(f []link.Frame) (int, error) { l.n += len(f); return len(f), nil }

func TestTransmitDropsMismatch(t *testing.T) {
	l := &countingLink{}
	e := &Engine{Link: l}
	tm := Template{SrcMAC: peerMAC, SrcAddr: peerIP, SrcPort: 1000, Proto: header.ProtocolUDP}
	good := udpFrame(nil)
	spoof := append([]byte(nil), good...)
	spoof[29] = 66
	n, err := e.Transmit([]link.Frame{{Buf: good}, {Buf: spoof}, {Buf: good}}, &tm)
	if err != nil || n != 2 || l.n != 2 || e.Drops[DropTemplateMismatch].Load() != 1 || e.TxFrames.Load() != 2 {
		t.Fatalf("sent %d (link %d), err %v, mismatches %d", n, l.n, err, e.Drops[DropTemplateMismatch].Load())
	}
}

func TestDropReasonStrings(t *testing.T) {
	seen := map[string]bool{}
	for r := range NumDropReasons {
		s := r.String()
		if s == "" || seen[s] {
			t.Errorf("reason %d has name %q", r, s)
		}
		seen[s] = true
	}
	if NumDropReasons.String() != "unknown drop reason" {
		t.Error("out-of-range reason")
	}
}

func FuzzClassify(f *testing.F) {
	f.Add(udpFrame([]byte("seed")), uint8(0), uint8(0), uint16(0))
	f.Add(udpFrame(nil)[:20], uint8(0), uint8(0), uint16(0))
	arp := make([]byte, 42)
	header.Ethernet(arp).Encode(&header.EthernetFields{Dst: header.Broadcast, Src: peerMAC, Type: header.EtherTypeARP})
	header.ARP(arp[14:]).Encode(&header.ARPFields{Op: 1, SenderMAC: peerMAC, SenderAddr: peerIP, TargetAddr: ourIP})
	f.Add(arp, uint8(0), uint8(0), uint16(0))
	gso := udpFrame(make([]byte, 3000))
	f.Add(gso, link.VNetNeedsCsum, link.GSOUDPL4, uint16(1000))
	frag := udpFrame(make([]byte, 64))
	binary.BigEndian.PutUint16(frag[20:], 0x2000)
	header.IPv4(frag[14:]).SetChecksum(0)
	header.IPv4(frag[14:]).SetChecksum(header.IPv4(frag[14:]).CalculateChecksum())
	f.Add(frag, uint8(0), uint8(0), uint16(0))
	c := classifier()
	f.Fuzz(func(t *testing.T, b []byte, flags, gsoType uint8, gsoSize uint16) {
		fr := link.Frame{Buf: b, VNet: link.VNetHdr{Flags: flags, GSOType: gsoType, GSOSize: gsoSize}}
		var p Packet
		r := c.Classify(&fr, &p)
		if r >= NumDropReasons {
			t.Fatalf("reason %d out of range", r)
		}
		if r != DropNone {
			return
		}
		// Whatever was accepted must be safe to slice as described.
		if p.EtherType == header.EtherTypeIPv4 {
			_ = p.IP()
			if !p.Fragment {
				_ = p.L4Payload()
				if p.GSO && p.VNet.GSOSize == 0 {
					t.Fatal("GSO accepted with size 0")
				}
			}
		}
		_ = fmt.Sprint(r)
	})
}

func BenchmarkClassify(b *testing.B) {
	c := classifier()
	for _, size := range []int{64, 1472} {
		f := link.Frame{Buf: udpFrame(make([]byte, size))}
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			var p Packet
			b.SetBytes(int64(size))
			for b.Loop() {
				if c.Classify(&f, &p) != DropNone {
					b.Fatal("dropped")
				}
			}
		})
	}
	f := link.Frame{Buf: udpFrame(make([]byte, 1472)), VNet: link.VNetHdr{Flags: link.VNetNeedsCsum}}
	b.Run("1472-needs-csum", func(b *testing.B) {
		var p Packet
		for b.Loop() {
			c.Classify(&f, &p)
		}
	})
}

func BenchmarkFlowLookup(b *testing.B) {
	var ft FlowTable[int]
	for i := range 1000 {
		ft.Insert(FlowKey{Proto: 17, LocalAddr: ourIP, LocalPort: uint16(1000 + i), RemoteAddr: peerIP, RemotePort: 9}, i)
	}
	ft.Insert(FlowKey{Proto: 17, LocalPort: 53}, -1)
	b.Run("exact", func(b *testing.B) {
		for b.Loop() {
			if _, ok := ft.Lookup(17, ourIP, 1500, peerIP, 9); !ok {
				b.Fatal("miss")
			}
		}
	})
	b.Run("wildcard", func(b *testing.B) {
		for b.Loop() {
			if _, ok := ft.Lookup(17, ourIP, 53, peerIP, 9); !ok {
				b.Fatal("miss")
			}
		}
	})
}

func BenchmarkTemplateMatch(b *testing.B) {
	tm := Template{SrcMAC: peerMAC, SrcAddr: peerIP, SrcPort: 1000, Proto: header.ProtocolUDP}
	f := udpFrame(make([]byte, 64))
	for b.Loop() {
		if !tm.Match(f) {
			b.Fatal("mismatch")
		}
	}
}

func TestZeroAllocsEngine(t *testing.T) {
	c := classifier()
	var ft FlowTable[int]
	ft.Insert(FlowKey{Proto: 17, LocalPort: 2000}, 1)
	f := link.Frame{Buf: udpFrame(make([]byte, 100))}
	var p Packet
	if a := testing.AllocsPerRun(1000, func() {
		c.Classify(&f, &p)
		ft.Lookup(p.Proto, p.Dst, p.DstPort, p.Src, p.SrcPort)
	}); a != 0 {
		t.Fatalf("%v allocations per frame", a)
	}
}
