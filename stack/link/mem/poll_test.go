package mem

import (
	"encoding/binary"
	"testing"

	"github.com/netstation/netstation/internal/linktest"
	"github.com/netstation/netstation/stack/link"
)

// TestPollerOrder: a goroutine blocked in ReadBatch and three pollers
// take frames off one end at once (linktest.CheckPollerOrder).
func TestPollerOrder(t *testing.T) {
	a, b := Pair(macA, macB, Options{Depth: 64})
	defer a.Close()
	buf := make([]byte, 60)
	linktest.CheckPollerOrder(t, b, linktest.PollOrder{Total: 20000, Pollers: 3,
		Seq: func(f []byte) (uint32, bool) { return binary.BigEndian.Uint32(f[14:]), true },
		Send: func(i int) error {
			binary.BigEndian.PutUint32(buf[14:], uint32(i))
			_, err := a.WriteBatch([]link.Frame{{Buf: buf}})
			return err
		}})
}

// TestPollBatchEmpty: nothing queued, or no room, means 0 at once; a
// closed link says so.
func TestPollBatchEmpty(t *testing.T) {
	a, b := Pair(macA, macB, Options{})
	called := false
	fn := func([]link.Frame) { called = true }
	if n, err := b.PollBatch(make([]link.Frame, 4), fn); n != 0 || err != nil || called {
		t.Fatalf("empty link: %d %v, fn called %v", n, err, called)
	}
	if _, err := a.WriteBatch([]link.Frame{{Buf: make([]byte, 60)}}); err != nil {
		t.Fatal(err)
	}
	if n, err := b.PollBatch(nil, fn); n != 0 || err != nil || called {
		t.Fatalf("no frames to fill: %d %v, fn called %v", n, err, called)
	}
	if n, err := b.PollBatch(make([]link.Frame, 4), fn); n != 1 || err != nil || !called {
		t.Fatalf("one queued: %d %v, fn called %v", n, err, called)
	}
	a.Close()
	if _, err := b.PollBatch(make([]link.Frame, 4), fn); err != link.ErrClosed {
		t.Fatalf("closed: %v", err)
	}
}
