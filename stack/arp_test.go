package stack

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/netstation/netstation/stack/arp"
	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

// readFrame reads one frame from a raw end, failing after a while.
func readFrame(t *testing.T, raw *mem.Link) []byte {
	t.Helper()
	ch := make(chan []byte, 1)
	go func() {
		fr := make([]link.Frame, 1)
		if n, err := raw.ReadBatch(fr); err == nil && n == 1 {
			ch <- append([]byte(nil), fr[0].Buf...)
		}
	}()
	select {
	case b := <-ch:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no frame")
		return nil
	}
}

func TestARPGratuitousAndReply(t *testing.T) {
	la, raw := mem.Pair(macA, macB, mem.Options{})
	s, err := New(la, Config{Addr: netip.PrefixFrom(ipA, 24)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g := readFrame(t, raw)
	a := header.ARP(g[14:])
	if header.Ethernet(g).Dst() != header.Broadcast || a.Op() != header.ARPRequest ||
		a.SenderAddr() != ipA.As4() || a.TargetAddr() != ipA.As4() || len(g) != 60 {
		t.Fatalf("gratuitous ARP %x", g)
	}
	req := make([]byte, arp.FrameSize)
	arp.EncodeRequest(req, [6]byte(macB), ipB.As4(), ipA.As4())
	raw.WriteBatch([]link.Frame{{Buf: req}})
	r := readFrame(t, raw)
	a = header.ARP(r[14:])
	if header.Ethernet(r).Dst() != [6]byte(macB) || a.Op() != header.ARPReply || a.SenderMAC() != [6]byte(macA) ||
		a.SenderAddr() != ipA.As4() || a.TargetMAC() != [6]byte(macB) || a.TargetAddr() != ipB.As4() {
		t.Fatalf("reply %x", r)
	}
	// The request taught the stack B's address: no ARP before this ping.
	if m, ok := s.arp.Lookup(ipB.As4(), time.Now()); !ok || m != [6]byte(macB) {
		t.Fatal("requester not learned")
	}
	// A request for someone else is not answered.
	arp.EncodeRequest(req, [6]byte(macB), ipB.As4(), [4]byte{10, 9, 0, 77})
	inject(t, s, raw, req) // waits until the stack has taken it in (a fixed 20 ms was short under -race and load)
	if st := s.Stats(); st.ARPRepliesOut != 1 || st.ARPRequestsIn != 2 {
		t.Fatalf("replies %d requests in %d", st.ARPRepliesOut, st.ARPRequestsIn)
	}
}

// TestSeededNeighborsNeedNoARP: with its peer given in Config.Neighbors,
// a stack sends its first datagram straight to the peer's Ethernet
// address, with no request before it (a decoder checks what went out);
// entries off the subnet or of its own address are not taken.
func TestSeededNeighborsNeedNoARP(t *testing.T) {
	s, raw := rawPeer(t, Config{Neighbors: map[netip.Addr]net.HardwareAddr{
		ipB:                              macB,
		ipA:                              macB, // ours: ignored
		netip.MustParseAddr("10.77.0.1"): macB, // off the subnet: ignored
	}}, mem.Options{})
	if st := s.arp.Stats(); st.Entries != 1 {
		t.Fatalf("cache after seeding: %+v", st)
	}
	c, err := s.ListenUDP(netip.AddrPortFrom(ipA, 4000))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteToUDPAddrPort([]byte("hello"), netip.AddrPortFrom(ipB, 4001)); err != nil {
		t.Fatal(err)
	}
	pkt := gopacket.NewPacket(readFrame(t, raw), layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	udp, _ := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if eth == nil || udp == nil || eth.DstMAC.String() != macB.String() || udp.DstPort != 4001 {
		t.Fatalf("first frame out is not the datagram to %v: %v", macB, pkt)
	}
	if st := s.Stats(); st.ARPRequestsOut != 0 {
		t.Fatalf("%d ARP requests sent", st.ARPRequestsOut)
	}
}
