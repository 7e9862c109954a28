package afxdp

import (
	"testing"

	"github.com/netstation/netstation/internal/linktest"
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
			polled := linktest.CheckPollerOrder(t, lb, linktest.PollOrder{Total: 5000, Pollers: 2, Seq: linktest.SeqLast, Send: w.SendNumbered(la)})
			if rx == RxXSK && lb.Stats().PolledFrames != uint64(polled) {
				t.Errorf("PolledFrames %d, pollers counted %d", lb.Stats().PolledFrames, polled)
			}
		})
	}
}
