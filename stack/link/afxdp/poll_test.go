package afxdp

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/linktest"
	"github.com/netstation/netstation/stack/link"
)

// TestPollerOrder: the receive goroutine blocked in ReadBatch and two
// pollers take frames off one link at once (linktest.CheckPollerOrder),
// in both receive modes: the XSK's ring, and the mixed link's AF_PACKET
// half.
func TestPollerOrder(t *testing.T) {
	for _, rx := range []RxMode{RxXSK, RxAFPacket} {
		t.Run(rx.String(), func(t *testing.T) {
			w := linktest.NewPair(t, 1500)
			la := openPacket(t, w.A, "vA")
			lb := openXDP(t, w.B, "vB", Options{Rx: rx})
			polled := linktest.CheckPollerOrder(t, lb, linktest.PollOrder{Total: 5000, Pollers: 2, Seq: linktest.SeqLast,
				Send: func(i int) error {
					f := linktest.Frame(w.MACB, w.MACA, 60, 0)
					binary.BigEndian.PutUint32(f[len(f)-4:], uint32(i))
					if i%64 == 63 {
						time.Sleep(100 * time.Microsecond) // stay under the receive ring
					}
					_, err := la.WriteBatch([]link.Frame{{Buf: f}})
					return err
				}})
			if rx == RxXSK && lb.Stats().PolledFrames != uint64(polled) {
				t.Errorf("PolledFrames %d, pollers counted %d", lb.Stats().PolledFrames, polled)
			}
		})
	}
}
