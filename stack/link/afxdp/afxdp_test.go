package afxdp

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/linktest"
	"github.com/netstation/netstation/internal/nstest"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/afpacket"
)

func openXDP(t testing.TB, ns *nstest.NS, ifname string, o Options) *Link {
	t.Helper()
	return linktest.Open(t, ns, func() (*Link, error) { return Open(ifname, o) })
}

func openPacket(t testing.TB, ns *nstest.NS, ifname string) *afpacket.Link {
	t.Helper()
	return linktest.Open(t, ns, func() (*afpacket.Link, error) { return afpacket.Open(ifname, afpacket.Options{}) })
}

// readTest reads l until a linktest.EtherTest frame arrives and returns a copy, or
// fails after timeout (closing l to unblock the reader).
func readTest(t testing.TB, l link.Link, timeout time.Duration) []byte {
	t.Helper()
	c := make(chan []byte, 1)
	go func() {
		frames := make([]link.Frame, 16)
		for {
			n, err := l.ReadBatch(frames)
			if err != nil {
				c <- nil
				return
			}
			for _, f := range frames[:n] {
				if linktest.IsTest(f.Buf) {
					c <- append([]byte(nil), f.Buf...)
					return
				}
			}
		}
	}()
	select {
	case b := <-c:
		return b
	case <-time.After(timeout):
		l.Close()
		<-c
		t.Fatalf("no test frame within %v", timeout)
		return nil
	}
}

func TestOptionsRejected(t *testing.T) {
	for _, o := range []Options{{Rx: 5}, {FrameSize: 1000}, {TxFrames: 100}, {RxFrames: 3}} {
		if _, err := Open("lo", o); !errors.Is(err, ErrBadOptions) {
			t.Errorf("Open(%+v) = %v, want ErrBadOptions", o, err)
		}
	}
}

// TestFramesCross: 60- and 1514-byte frames cross between an XSK link
// (both receive modes) and an afpacket link, both directions, intact.
func TestFramesCross(t *testing.T) {
	for _, rx := range []RxMode{RxAFPacket, RxXSK} {
		t.Run(rx.String(), func(t *testing.T) {
			w := linktest.NewPair(t, 1500)
			x := openXDP(t, w.A, "vA", Options{Rx: rx})
			p := openPacket(t, w.B, "vB")
			if x.Caps() != 0 || x.MaxFrame() != 1514 || !bytes.Equal(x.HardwareAddr(), w.MACA) {
				t.Fatalf("Caps %v MaxFrame %d MAC %v", x.Caps(), x.MaxFrame(), x.HardwareAddr())
			}
			for i, size := range []int{60, 1514, 60, 1514} {
				f := linktest.Frame(w.MACB, w.MACA, size, uint32(i))
				if n, err := x.WriteBatch([]link.Frame{{Buf: f}}); n != 1 || err != nil {
					t.Fatalf("XSK WriteBatch = %d, %v", n, err)
				}
				if got := readTest(t, p, 2*time.Second); !bytes.Equal(got, f) {
					t.Fatalf("XSK->afpacket frame %d (%d B) differs", i, size)
				}
				g := linktest.Frame(w.MACA, w.MACB, size, uint32(100+i))
				if _, err := p.WriteBatch([]link.Frame{{Buf: g}}); err != nil {
					t.Fatal(err)
				}
				if got := readTest(t, x, 2*time.Second); !bytes.Equal(got, g) {
					t.Fatalf("afpacket->XSK frame %d (%d B) differs", i, size)
				}
			}
			// A burst larger than the transmit ring wraps it.
			batch := make([]link.Frame, 64)
			for i := range batch {
				batch[i].Buf = linktest.Frame(w.MACB, w.MACA, 60+i, uint32(1000+i))
			}
			for r := 0; r < 100; r++ {
				if n, err := x.WriteBatch(batch); n != len(batch) || err != nil {
					t.Fatalf("burst %d: %d, %v", r, n, err)
				}
			}
			if st := x.Stats(); st.TxFrames != 4+6400 || st.TxInvalid != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestBadFrames(t *testing.T) {
	w := linktest.NewPair(t, 1500)
	x := openXDP(t, w.A, "vA", Options{})
	good := link.Frame{Buf: linktest.Frame(w.MACB, w.MACA, 60, 1)}
	for _, c := range []struct {
		bad  link.Frame
		want error
	}{
		{link.Frame{Buf: make([]byte, 5)}, ErrFrameTooShort},
		{link.Frame{Buf: make([]byte, 1515)}, ErrFrameTooLong},
		{link.Frame{Buf: make([]byte, 100), VNet: link.VNetHdr{Flags: link.VNetNeedsCsum}}, ErrNoOffload},
	} {
		if n, err := x.WriteBatch([]link.Frame{good, c.bad, good}); n != 1 || !errors.Is(err, c.want) {
			t.Errorf("WriteBatch = %d, %v; want 1, %v", n, err, c.want)
		}
	}
}

// TestLinkToKernel: a hand-built UDP datagram sent through the XSK reaches
// a kernel UDP socket in the peer namespace.
func TestLinkToKernel(t *testing.T) {
	w := linktest.NewPair(t, 1500)
	x := openXDP(t, w.B, "vB", Options{})
	conn := w.KernelUDP(t, netip.MustParsePrefix("10.78.0.1/24"), netip.MustParseAddr("10.78.0.2"), 4002)
	payload := bytes.Repeat([]byte("xsk!"), 300)
	f := linktest.UDPFrame(w.MACA, w.MACB, [4]byte{10, 78, 0, 2}, [4]byte{10, 78, 0, 1}, 7000, 4002, payload, false, 0)
	if _, err := x.WriteBatch([]link.Frame{f}); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 2000)
	n, from, err := conn.ReadFromUDP(buf)
	if err != nil || !bytes.Equal(buf[:n], payload) || from.Port != 7000 {
		t.Fatalf("kernel got %d bytes from %v: %v", n, from, err)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	for _, rx := range []RxMode{RxAFPacket, RxXSK} {
		t.Run(rx.String(), func(t *testing.T) {
			w := linktest.NewPair(t, 1500)
			before := runtime.NumGoroutine()
			linktest.CheckCloseUnblocksRead(t, openXDP(t, w.A, "vA", Options{Rx: rx}), before)
		})
	}
}

// BenchmarkTx measures XSK transmit (one b.N = one frame) into an afpacket
// link that drains the peer end.
func BenchmarkTx(b *testing.B) {
	for _, size := range []int{60, 1514} {
		b.Run(fmt.Sprintf("xsk/%d", size), func(b *testing.B) {
			w := linktest.NewPair(b, 1500)
			x := openXDP(b, w.A, "vA", Options{})
			p := openPacket(b, w.B, "vB")
			batch := make([]link.Frame, 64)
			for i := range batch {
				batch[i].Buf = linktest.Frame(w.MACB, w.MACA, size, uint32(i))
			}
			linktest.BenchTx(b, x, p, batch, size,
				func() uint64 { return x.Stats().TxRetries },
				func() uint64 { return p.Stats().RingDrops })
		})
	}
}

// BenchmarkRx measures receive rate of each receive mode (one b.N = one
// frame) while an afpacket link in the peer namespace transmits flat out.
func BenchmarkRx(b *testing.B) {
	for _, rx := range []RxMode{RxAFPacket, RxXSK} {
		for _, size := range []int{60, 1514} {
			b.Run(fmt.Sprintf("%v/%d", rx, size), func(b *testing.B) {
				w := linktest.NewPair(b, 1500)
				x := openXDP(b, w.A, "vA", Options{Rx: rx})
				p := openPacket(b, w.B, "vB")
				batch := make([]link.Frame, 64)
				for i := range batch {
					batch[i].Buf = linktest.Frame(w.MACA, w.MACB, size, uint32(i))
				}
				linktest.BenchRx(b, p, x, batch, size, func() uint64 {
					st := x.Stats()
					return st.RxDropped + st.RxRingFull + st.AFPacket.RingDrops
				})
			})
		}
	}
}

// BenchmarkPingPong: round trip of a 60-byte frame between two XSK links
// of the same receive mode (one b.N = one round trip); p50/p99 in
// microseconds, goroutines not pinned.
func BenchmarkPingPong(b *testing.B) {
	for _, rx := range []RxMode{RxAFPacket, RxXSK} {
		b.Run(rx.String(), func(b *testing.B) {
			w := linktest.NewPair(b, 1500)
			la := openXDP(b, w.A, "vA", Options{Rx: rx})
			lb := openXDP(b, w.B, "vB", Options{Rx: rx})
			linktest.BenchPingPong(b, la, lb, linktest.Frame(w.MACB, w.MACA, 60, 0), linktest.Frame(w.MACA, w.MACB, 60, 0))
		})
	}
}

// TestNoAllocs: steady-state XSK WriteBatch and XSK ReadBatch allocate
// nothing per call.
func TestNoAllocs(t *testing.T) {
	w := linktest.NewPair(t, 1500)
	la := openXDP(t, w.A, "vA", Options{Rx: RxXSK})
	lb := openXDP(t, w.B, "vB", Options{Rx: RxXSK})
	linktest.CheckNoAllocs(t, la, lb, w.MACB, w.MACA)
}
