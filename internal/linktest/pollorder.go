package linktest

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
)

// PollLink is a link whose frames pollers can take beside its reader.
type PollLink interface {
	link.Link
	link.Poller
}

// pollWindow is how many frames CheckPollerOrder has outstanding at most:
// a quarter of afpacket's smallest receive ring.
const pollWindow = 256

// PollOrder is what CheckPollerOrder needs of a link under test.
type PollOrder struct {
	Total   int                           // frames to send
	Pollers int                           // goroutines calling PollBatch beside the reader
	Send    func(i int) error             // sends frame number i to the link under test
	Seq     func(b []byte) (uint32, bool) // a received frame's number; false: not the test's
}

// CheckPollerOrder runs the receive goroutine (blocked in ReadBatch) and
// o.Pollers pollers on rx at once while o.Send sends o.Total numbered
// frames, then closes rx. Each frame must be taken once, and frames must
// be processed one goroutine at a time in the order they were sent: the
// record of them has no lock of its own, so the race detector checks the
// receive turn too. It returns how many frames the pollers took.
func CheckPollerOrder(t testing.TB, rx PollLink, o PollOrder) int {
	t.Helper()
	var seen []uint32
	var count atomic.Int64 // read outside the turn, to wait for the last frame
	record := func(frames []link.Frame) {
		for _, f := range frames {
			if v, ok := o.Seq(f.Buf); ok {
				seen = append(seen, v)
				count.Add(1)
			}
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		frames := make([]link.Frame, 16)
		for {
			n, err := rx.ReadBatch(frames)
			if err != nil {
				return
			}
			record(frames[:n])
		}
	})
	stop := make(chan struct{})
	polled := make([]int, o.Pollers)
	for i := range polled {
		wg.Go(func() {
			frames := make([]link.Frame, 4)
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, err := rx.PollBatch(frames, record)
				if err != nil {
					return
				}
				polled[i] += n
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := range o.Total {
		// At most pollWindow frames outstanding: a reader slowed down
		// (the race detector, a loaded machine) must not have its ring
		// or socket buffer overrun, or a lost frame would look like a
		// frame the link lost. One the link did lose still fails below.
		for int64(i)-count.Load() > pollWindow && time.Now().Before(deadline) {
			time.Sleep(50 * time.Microsecond)
		}
		if err := o.Send(i); err != nil {
			close(stop)
			rx.Close()
			wg.Wait()
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); count.Load() < int64(o.Total) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	rx.Close()
	wg.Wait()
	if len(seen) != o.Total {
		t.Fatalf("%d of %d frames processed", len(seen), o.Total)
	}
	for i, v := range seen {
		if v != uint32(i) {
			t.Fatalf("frame %d processed as number %d: out of order or twice", v, i)
		}
	}
	p := 0
	for _, n := range polled {
		p += n
	}
	t.Logf("%d of %d frames taken by pollers", p, o.Total)
	return p
}

// SeqLast reads the frame number Frame's caller put in its last 4 bytes,
// for frames of this package (IsTest).
func SeqLast(b []byte) (uint32, bool) {
	if !IsTest(b) || len(b) < 4 {
		return 0, false
	}
	return uint32(b[len(b)-4])<<24 | uint32(b[len(b)-3])<<16 | uint32(b[len(b)-2])<<8 | uint32(b[len(b)-1]), true
}

// SendNumbered is a PollOrder.Send: tx sends frame i from the pair's vA
// to vB, its number in its last 4 bytes (SeqLast), pausing 100 us every
// 64 frames so the receiver's buffer or ring is not outrun.
func (p *Pair) SendNumbered(tx link.Link) func(i int) error {
	return func(i int) error {
		f := Frame(p.MACB, p.MACA, 60, 0)
		binary.BigEndian.PutUint32(f[len(f)-4:], uint32(i))
		if i%64 == 63 {
			time.Sleep(100 * time.Microsecond)
		}
		_, err := tx.WriteBatch([]link.Frame{{Buf: f}})
		return err
	}
}
