package afpacket

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/linktest"
	"github.com/netstation/netstation/stack/link"
)

// TestPollerOrder: the receive goroutine blocked in ReadBatch and pollers
// take frames off one socket at once (linktest.CheckPollerOrder).
func TestPollerOrder(t *testing.T) {
	w := linktest.NewPair(t, 1500)
	la := open(t, w.A, "vA", Options{})
	lb := open(t, w.B, "vB", Options{})
	linktest.CheckPollerOrder(t, lb, linktest.PollOrder{Total: 5000, Pollers: 2, Seq: linktest.SeqLast,
		Send: func(i int) error {
			f := linktest.Frame(w.MACB, w.MACA, 60, 0)
			binary.BigEndian.PutUint32(f[len(f)-4:], uint32(i))
			if i%64 == 63 {
				time.Sleep(100 * time.Microsecond) // stay under the receive buffer
			}
			_, err := la.WriteBatch([]link.Frame{{Buf: f}})
			return err
		}})
}

// TestPollBatchRing: a receive ring cannot be polled beside its reader.
func TestPollBatchRing(t *testing.T) {
	w := linktest.NewPair(t, 1500)
	l := open(t, w.A, "vA", Options{Rx: RxRing})
	if _, err := l.PollBatch(make([]link.Frame, 4), func([]link.Frame) {}); !errors.Is(err, link.ErrNoPoll) {
		t.Fatalf("PollBatch on RxRing: %v, want ErrNoPoll", err)
	}
}
