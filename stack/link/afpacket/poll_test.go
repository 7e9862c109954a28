package afpacket

import (
	"errors"
	"testing"

	"github.com/netstation/netstation/internal/linktest"
	"github.com/netstation/netstation/stack/link"
)

// TestPollerOrder: the receive goroutine blocked in ReadBatch and pollers
// take frames off one socket (or ring) at once (linktest.CheckPollerOrder).
func TestPollerOrder(t *testing.T) {
	for _, rx := range []RxMode{RxRecvmmsg, RxFrameRing} {
		t.Run(rx.String(), func(t *testing.T) {
			w := linktest.NewPair(t, 1500)
			la := open(t, w.A, "vA", Options{})
			lb := open(t, w.B, "vB", Options{Rx: rx})
			linktest.CheckPollerOrder(t, lb, linktest.PollOrder{Total: 5000, Pollers: 2, Seq: linktest.SeqLast, Send: w.SendNumbered(la)})
		})
	}
}

// TestPollBatchRing: a receive ring cannot be polled beside its reader.
func TestPollBatchRing(t *testing.T) {
	w := linktest.NewPair(t, 1500)
	l := open(t, w.A, "vA", Options{Rx: RxRing})
	if _, err := l.PollBatch(make([]link.Frame, 4), func([]link.Frame) {}); !errors.Is(err, link.ErrNoPoll) {
		t.Fatalf("PollBatch on RxRing: %v, want ErrNoPoll", err)
	}
}
