package stack

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

func TestPing(t *testing.T) {
	for _, size := range []int{0, 56, 1472, 8000} {
		a, b := pair(t, mem.Options{})
		rtt, err := a.Ping(ctxT(t), ipB, size)
		if err != nil {
			t.Fatalf("ping %d: %v", size, err)
		}
		if rtt <= 0 {
			t.Fatalf("rtt %v", rtt)
		}
		sb := b.Stats()
		if sb.EchoRequestsIn != 1 || sb.EchoRepliesOut != 1 {
			t.Fatalf("size %d: echo in/out %d/%d", size, sb.EchoRequestsIn, sb.EchoRepliesOut)
		}
		if sa := a.Stats(); sa.ARP.Learned == 0 {
			t.Fatalf("a learned no ARP entry")
		}
	}
}

// TestPingSelf: an echo to the stack's own address is answered locally,
// as a kernel host's loopback answers it; nothing reaches the peer.
func TestPingSelf(t *testing.T) {
	a, b := pair(t, mem.Options{})
	if _, err := a.Ping(ctxT(t), ipA, 56); err != nil {
		t.Fatalf("ping own address: %v", err)
	}
	sa, sb := a.Stats(), b.Stats()
	if sa.EchoRequestsOut != 1 || sa.EchoRequestsIn != 1 || sa.EchoRepliesOut != 1 || sa.EchoRepliesIn != 1 {
		t.Errorf("own echo counters: %+v", sa)
	}
	if sb.EchoRequestsIn != 0 {
		t.Errorf("the peer saw %d echo requests", sb.EchoRequestsIn)
	}
}

func TestUDPBothWays(t *testing.T) {
	for _, caps := range []link.Caps{0, link.CapVNetHdr, link.CapVNetHdr | link.CapGSO} {
		a, b := pair(t, mem.Options{Caps: caps})
		ca, err := a.ListenUDP(netip.AddrPortFrom(netip.Addr{}, 4000))
		if err != nil {
			t.Fatal(err)
		}
		cb, err := b.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(ipA, 4000))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 70000)
		for _, size := range []int{1, 1472, 9000, 65507} {
			msg := pattern(size, byte(size))
			if _, err := cb.Write(msg); err != nil {
				t.Fatalf("caps %v size %d: write: %v", caps, size, err)
			}
			ca.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := ca.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("caps %v size %d: read: %v (stats %+v)", caps, size, err, a.Stats().Drops)
			}
			if !bytes.Equal(buf[:n], msg) || from.Addr() != ipB {
				t.Fatalf("caps %v size %d: got %d bytes from %v", caps, size, n, from)
			}
			// and back
			if _, err := ca.WriteToUDPAddrPort(msg, from); err != nil {
				t.Fatal(err)
			}
			cb.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err = cb.Read(buf)
			if err != nil || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("caps %v size %d: reply %d bytes, %v", caps, size, n, err)
			}
		}
		if d := a.Stats().TotalDrops() + b.Stats().TotalDrops(); d != 0 {
			t.Fatalf("drops: %v %v", a.Stats().Drops, b.Stats().Drops)
		}
	}
}
