package afxdp

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/linktest"
	"github.com/netstation/netstation/stack/link"
)

// TestPollerOrder: the receive goroutine blocked in ReadBatch and two
// pollers take frames off one link at once; each frame is taken once, and
// they are processed one goroutine at a time in the order they were sent
// (seen has no lock of its own: the race detector checks the receive turn
// too). Both receive modes: the XSK's ring, and the mixed link's AF_PACKET
// half.
func TestPollerOrder(t *testing.T) {
	for _, rx := range []RxMode{RxXSK, RxAFPacket} {
		t.Run(rx.String(), func(t *testing.T) {
			const total = 5000
			w := linktest.NewPair(t, 1500)
			la := openPacket(t, w.A, "vA")
			lb := openXDP(t, w.B, "vB", Options{Rx: rx})
			var seen []uint32
			record := func(frames []link.Frame) {
				for _, f := range frames {
					if linktest.IsTest(f.Buf) {
						seen = append(seen, binary.BigEndian.Uint32(f.Buf[len(f.Buf)-4:]))
					}
				}
			}
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				frames := make([]link.Frame, 16)
				for {
					n, err := lb.ReadBatch(frames)
					if err != nil {
						return
					}
					record(frames[:n])
				}
			}()
			stop := make(chan struct{})
			var polled [2]int
			for i := range polled {
				wg.Add(1)
				go func() {
					defer wg.Done()
					frames := make([]link.Frame, 4)
					for {
						select {
						case <-stop:
							return
						default:
						}
						n, err := lb.PollBatch(frames, record)
						if err != nil {
							return
						}
						polled[i] += n
					}
				}()
			}
			for i := range total {
				f := linktest.Frame(w.MACB, w.MACA, 60, 0)
				binary.BigEndian.PutUint32(f[len(f)-4:], uint32(i))
				if _, err := la.WriteBatch([]link.Frame{{Buf: f}}); err != nil {
					t.Fatal(err)
				}
				if i%64 == 63 {
					time.Sleep(100 * time.Microsecond) // stay under the receive ring
				}
			}
			// Wait (bounded) until the link delivered every frame; the
			// goroutines that record them are then stopped and waited for
			// before seen is read.
			for deadline := time.Now().Add(10 * time.Second); lb.Stats().RxFrames < total && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			close(stop)
			lb.Close()
			wg.Wait()
			if len(seen) != total {
				t.Fatalf("%d of %d frames processed (stats %+v)", len(seen), total, lb.Stats())
			}
			for i, v := range seen {
				if v != uint32(i) {
					t.Fatalf("frame %d processed as number %d: out of order or twice", v, i)
				}
			}
			if rx == RxXSK && lb.Stats().PolledFrames != uint64(polled[0]+polled[1]) {
				t.Errorf("PolledFrames %d, pollers counted %d", lb.Stats().PolledFrames, polled[0]+polled[1])
			}
			t.Logf("%d of %d frames taken by pollers", polled[0]+polled[1], total)
		})
	}
}
