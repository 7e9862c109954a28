package afpacket

import (
	"fmt"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/linktest"
	"github.com/netstation/netstation/stack/link"
)

func benchFrames(w *linktest.Pair, size int) []link.Frame {
	batch := make([]link.Frame, 64)
	for i := range batch {
		if size > 1514 {
			batch[i] = linktest.UDPFrame(w.MACB, w.MACA, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}, 1, 2, linktest.Pattern(size-42, 0), true, 1472)
		} else {
			batch[i].Buf = linktest.Frame(w.MACB, w.MACA, size, uint32(i))
		}
	}
	return batch
}

// BenchmarkTx measures transmit rate (one b.N = one frame) with each
// transmit path; a link in the peer namespace drains the frames.
func BenchmarkTx(b *testing.B) {
	for _, mode := range []TxMode{TxSendmmsg, TxRing} {
		for _, size := range []int{60, 1514, 65000} {
			b.Run(fmt.Sprintf("%v/%d", mode, size), func(b *testing.B) {
				w := linktest.NewPair(b, 1500)
				la := open(b, w.A, "vA", Options{Tx: mode})
				lb := open(b, w.B, "vB", Options{})
				linktest.BenchTx(b, la, lb, benchFrames(w, size), size,
					func() uint64 { return la.Stats().TxRetries },
					func() uint64 { return lb.Stats().RingDrops })
			})
		}
	}
}

// BenchmarkRx measures receive rate (one b.N = one frame read) with each
// receive mode while a goroutine transmits as fast as it can from the peer
// namespace; 65000 is a UDP_L4 GSO super-frame.
func BenchmarkRx(b *testing.B) {
	for _, rx := range []RxMode{RxRecvmmsg, RxRing} {
		for _, size := range []int{60, 1514, 65000} {
			b.Run(fmt.Sprintf("%v/%d", rx, size), func(b *testing.B) {
				w := linktest.NewPair(b, 1500)
				la := open(b, w.A, "vA", Options{})
				lb := open(b, w.B, "vB", Options{Rx: rx})
				linktest.BenchRx(b, la, lb, benchFrames(w, size), size, func() uint64 { return lb.Stats().RingDrops })
			})
		}
	}
}

// BenchmarkPingPong measures the round trip of a 60-byte frame between two
// links (one b.N = one round trip) with each receive mode: an echo
// goroutine answers on the far link. Reported: p50 and p99 in
// microseconds. Goroutines are not pinned; with GOMAXPROCS=2 the two sides
// may run on different CPUs.
func BenchmarkPingPong(b *testing.B) {
	for _, c := range []struct {
		name string
		o    Options
	}{
		{"recvmmsg", Options{}},
		{"recvmmsg+busypoll50us", Options{BusyPoll: 50 * time.Microsecond}},
		{"ring", Options{Rx: RxRing}},
		{"ring+busypoll50us", Options{Rx: RxRing, BusyPoll: 50 * time.Microsecond}},
	} {
		b.Run(c.name, func(b *testing.B) {
			w := linktest.NewPair(b, 1500)
			la := open(b, w.A, "vA", c.o)
			lb := open(b, w.B, "vB", c.o)
			linktest.BenchPingPong(b, la, lb, linktest.Frame(w.MACB, w.MACA, 60, 0), linktest.Frame(w.MACA, w.MACB, 60, 0))
		})
	}
}
