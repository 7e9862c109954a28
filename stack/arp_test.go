package stack

import (
	"net/netip"
	"testing"
	"time"

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
	raw.WriteBatch([]link.Frame{{Buf: req}})
	time.Sleep(20 * time.Millisecond)
	if st := s.Stats(); st.ARPRepliesOut != 1 || st.ARPRequestsIn != 2 {
		t.Fatalf("replies %d requests in %d", st.ARPRepliesOut, st.ARPRequestsIn)
	}
}
