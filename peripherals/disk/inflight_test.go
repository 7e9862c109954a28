package disk

import (
	"testing"
	"time"

	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/wire/diskproto"
)

// TestInFlight: a transfer's window of unanswered tile windows halves on
// loss (never below one), grows back by one per clean frame, and never
// exceeds TransferInFlight.
func TestInFlight(t *testing.T) {
	w := inFlight{TransferInFlight}
	if w.windows() != TransferInFlight {
		t.Fatalf("starts at %d", w.windows())
	}
	w.clean()
	if w.windows() != TransferInFlight {
		t.Fatalf("grew past %d: %d", TransferInFlight, w.windows())
	}
	want := TransferInFlight
	for w.windows() > 1 {
		if !w.lost() {
			t.Fatal("a loss above one window did not cut it")
		}
		want = max(1, want/2)
		if w.windows() != want {
			t.Fatalf("after a loss: %d, want %d", w.windows(), want)
		}
	}
	if w.lost() || w.windows() != 1 {
		t.Fatalf("cut below one window: %d", w.windows())
	}
	for i := 2; i <= TransferInFlight; i++ {
		w.clean()
		if w.windows() != i {
			t.Fatalf("clean frame %d: %d windows, want %d", i-1, w.windows(), i)
		}
	}
}

// sendTimes is a dgram.Conn that records when each datagram was sent.
type sendTimes struct {
	dgram.Conn // nil: only WriteBatch is called
	at         []time.Time
}

func (c *sendTimes) WriteBatch(msgs []dgram.Message) (int, error) {
	for range msgs {
		c.at = append(c.at, time.Now())
	}
	return len(msgs), nil
}

// TestTilePacing: before a checkpoint RTT sample tiles leave at once; with
// one (10 ms, one window of 100 KB in flight: 15 MB/s) a window of 256
// tiles of 1,472 B (four chunks of 64) is spread over the three chunks
// after the first, at least 3 x 94 KB at 15 MB/s (a late wake-up only
// spreads it more); the waits are counted.
func TestTilePacing(t *testing.T) {
	s := &Server{}
	conn := &sendTimes{}
	ts := &tileSender{s: s, conn: conn, tiles: make([][]byte, 256), flight: inFlight{1}, winBytes: 100_000,
		res: &diskproto.TransferResult{}}
	for i := range ts.tiles {
		ts.tiles[i] = make([]byte, 1472)
	}
	if err := ts.send(0, 256, nil); err != nil {
		t.Fatal(err)
	}
	if w := s.xfer.paceWaits.Load(); w != 0 {
		t.Errorf("unpaced: %d waits", w)
	}
	ts.minRTT = 10 * time.Millisecond
	ts.paceNext = time.Time{}
	conn.at = conn.at[:0]
	if err := ts.send(0, 256, nil); err != nil {
		t.Fatal(err)
	}
	want := time.Duration(3*64*1472) * time.Second / 15_000_000
	if d := conn.at[255].Sub(conn.at[0]); d < want*9/10 {
		t.Errorf("paced window sent in %v, want at least %v", d, want)
	}
	// Three waits, or fewer when a sleep overslept and the next chunk
	// caught up; never none.
	if w := s.xfer.paceWaits.Load(); w < 1 || w > 3 {
		t.Errorf("%d pace waits, want 1 to 3", w)
	}
}
