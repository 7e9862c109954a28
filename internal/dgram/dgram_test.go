package dgram_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/link/mem"
)

// wrapped hides a *net.UDPConn's type, as a test double would.
type wrapped struct{ net.PacketConn }

// TestBatchesOverKernelSockets moves a batch each way between a kernel
// socket in batch mode (recvmmsg/sendmmsg) and one behind the one-at-a-time
// fallback, and checks contents and addresses.
func TestBatchesOverKernelSockets(t *testing.T) {
	a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ca, cb := dgram.Of(a), dgram.Of(wrapped{b})
	defer ca.Close()
	defer cb.Close()
	aAddr, bAddr := a.LocalAddr().(*net.UDPAddr).AddrPort(), b.LocalAddr().(*net.UDPAddr).AddrPort()
	for _, dir := range []struct {
		from, to dgram.Conn
		dst, src netip.AddrPort
	}{{ca, cb, bAddr, aAddr}, {cb, ca, aAddr, bAddr}} {
		out := make([]dgram.Message, 8)
		for i := range out {
			out[i] = dgram.Message{Buf: bytes.Repeat([]byte{byte(i)}, 100+i), Addr: dir.dst}
		}
		if n, err := dir.from.WriteBatch(out); n != len(out) || err != nil {
			t.Fatalf("WriteBatch: %d, %v", n, err)
		}
		dir.to.SetReadDeadline(time.Now().Add(2 * time.Second))
		got := 0
		in := make([]dgram.Message, 8)
		for i := range in {
			in[i].Buf = make([]byte, 2048)
		}
		for got < len(out) {
			n, err := dir.to.ReadBatch(in)
			if err != nil {
				t.Fatalf("ReadBatch after %d: %v", got, err)
			}
			for _, m := range in[:n] {
				if m.Addr != dir.src || !bytes.Equal(m.Buf[:m.N], out[got].Buf) {
					t.Fatalf("datagram %d: %d bytes from %v", got, m.N, m.Addr)
				}
				got++
			}
		}
	}
	if dgram.ReceiveBuffer(ca, 1472) <= 0 || dgram.BurstLimit(ca, 1472) <= 0 {
		t.Fatalf("kernel socket: receive buffer %d, burst limit %d", dgram.ReceiveBuffer(ca, 1472), dgram.BurstLimit(ca, 1472))
	}
}

// TestUserStackSocket: a user-level socket is its own Conn, its queue is
// what ReceiveBuffer reports, and it needs no burst limit (GSO runs are
// one frame each).
func TestUserStackSocket(t *testing.T) {
	la, _ := mem.Pair(net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}, mem.Options{})
	st, err := stack.New(la, stack.Config{Addr: netip.MustParsePrefix("10.9.0.1/24")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	u, err := st.ListenUDP(netip.MustParseAddrPort("10.9.0.1:9"))
	if err != nil {
		t.Fatal(err)
	}
	c := dgram.Of(u)
	if c != dgram.Conn(u) {
		t.Fatal("Of wrapped a user-level socket")
	}
	bytes, n := u.ReceiveBuffer()
	if got := dgram.ReceiveBuffer(c, 1472); got != min(bytes, n*1472) || got <= 0 {
		t.Fatalf("ReceiveBuffer %d, queue %d bytes / %d datagrams", got, bytes, n)
	}
	if dgram.BurstLimit(c, 1472) != 0 {
		t.Fatal("a user-level socket got a burst limit")
	}
}
