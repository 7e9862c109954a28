package mem

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
)

// TestPollerOrder: a goroutine blocked in ReadBatch and several pollers
// take frames off one end at once; every frame is taken exactly once and
// they are processed in the order they were sent, one goroutine at a time
// (the receive turn: seen is appended to without a lock of its own, so
// the race detector checks that too).
func TestPollerOrder(t *testing.T) {
	const total = 20000
	a, b := Pair(macA, macB, Options{Depth: 64})
	defer a.Close()
	var seen []uint32
	record := func(frames []link.Frame) {
		for _, f := range frames {
			seen = append(seen, binary.BigEndian.Uint32(f.Buf[14:]))
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the receive goroutine: records between two ReadBatch calls
		defer wg.Done()
		frames := make([]link.Frame, 16)
		for {
			n, err := b.ReadBatch(frames)
			if err != nil {
				return
			}
			record(frames[:n])
		}
	}()
	stop := make(chan struct{})
	polled := make([]int, 3)
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
				n, err := b.PollBatch(frames, record)
				if err != nil {
					return
				}
				polled[i] += n
			}
		}()
	}
	buf := make([]byte, 60)
	for i := range total {
		binary.BigEndian.PutUint32(buf[14:], uint32(i))
		if _, err := a.WriteBatch([]link.Frame{{Buf: buf}}); err != nil {
			t.Fatal(err)
		}
	}
	// Every frame is taken: by a poller, or by ReadBatch at the latest.
	deadline := time.Now().Add(10 * time.Second)
	for done := false; !done; {
		if time.Now().After(deadline) {
			t.Fatal("frames still not taken after 10 s")
		}
		done = b.turn.TryTake()
		if done {
			done = len(seen) == total
			b.turn.Give()
		}
	}
	close(stop)
	a.Close()
	wg.Wait()
	for i, v := range seen {
		if v != uint32(i) {
			t.Fatalf("frame %d processed as number %d: out of order or twice", v, i)
		}
	}
	p := 0
	for _, n := range polled {
		p += n
	}
	t.Logf("%d of %d frames taken by pollers", p, total)
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
