package stack

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

// FuzzStackInput feeds whole frames (with any virtio-net header) through
// the stack's receive path: classifier, reassembly, ARP, ICMP and UDP
// delivery. Nothing may panic, and every frame is either delivered,
// answered or counted.
func FuzzStackInput(f *testing.F) {
	f.Add(udpFrame(1, 7000, []byte("seed")), uint8(0), uint8(0), uint16(0))
	f.Add(udpFrame(1, 7001, []byte("closed port")), uint8(0), uint8(0), uint16(0))
	f.Add(udpFrame(1, 7000, make([]byte, 3000)), link.VNetNeedsCsum, link.GSOUDPL4, uint16(1000))
	for _, fr := range fragmentFrames(udpFrame(1, 7000, make([]byte, 2000)), 800, 3) {
		f.Add(fr, uint8(0), uint8(0), uint16(0))
	}
	ping := udpFrame(0, 0, make([]byte, 8))
	ping[23] = 1
	copy(ping[34:], []byte{8, 0, 0, 0, 0, 1, 0, 1})
	binary.BigEndian.PutUint16(ping[36:], ^sum16(ping[34:42]))
	fixIPChecksum(ping)
	f.Add(ping[:42], uint8(0), uint8(0), uint16(0))

	la, lb := mem.Pair(macA, macB, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Depth: 1 << 16})
	s, err := New(la, Config{Addr: netip.PrefixFrom(ipA, 24), NoGratuitousARP: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	c, _ := s.ListenUDP(netip.AddrPortFrom(netip.Addr{}, 7000))
	// Drain the peer side so replies never block the stack.
	go func() {
		fr := make([]link.Frame, 64)
		for {
			if _, err := lb.ReadBatch(fr); err != nil {
				return
			}
		}
	}()
	// The same on a link that lends its receive buffers: every hold the
	// stack takes comes back once the socket is read.
	lc, ld := mem.Pair(macA, macB, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Depth: 1 << 16})
	ll := newLendingLink(lc, 8)
	s2, err := New(ll, Config{Addr: netip.PrefixFrom(ipA, 24), NoGratuitousARP: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s2.Close() })
	c2, _ := s2.ListenUDP(netip.AddrPortFrom(netip.Addr{}, 7000))
	go func() {
		fr := make([]link.Frame, 64)
		for {
			if _, err := ld.ReadBatch(fr); err != nil {
				return
			}
		}
	}()
	msgs := make([]Message, 64)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 2048)
	}
	f.Fuzz(func(t *testing.T, b []byte, flags, gsoType uint8, gsoSize uint16) {
		if len(b) <= 65550 {
			lent := ll.slots[0].buf[3 : 3+len(b)]
			copy(lent, b)
			var p engine.Packet
			s2.inputBatch([]link.Frame{{Buf: lent, VNet: link.VNetHdr{Flags: flags, GSOType: gsoType, GSOSize: gsoSize}, Loan: 1, LoanOff: 3}}, &p)
			for c2.q.tail.Load() != c2.q.head.Load() {
				c2.q.pop(msgs)
			}
			if h := ll.held.Load(); h != 0 {
				t.Fatalf("%d buffers still on loan after the socket was read", h)
			}
		}
		var p engine.Packet
		before := s.Stats()
		// input is the receive goroutine's; it is idle (nothing arrives on
		// la), so the fuzzer may stand in for it.
		s.inputBatch([]link.Frame{{Buf: b, VNet: link.VNetHdr{Flags: flags, GSOType: gsoType, GSOSize: gsoSize}}}, &p)
		after := s.Stats()
		if after.RxFrames != before.RxFrames+1 {
			t.Fatal("frame not counted")
		}
		for c.q.tail.Load() != c.q.head.Load() {
			c.q.pop(msgs)
		}
	})
}
