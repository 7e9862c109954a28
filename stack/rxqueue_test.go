package stack

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestRxQueueLaps drives one socket ring through many laps of its arena
// with random datagram sizes, batches and partial reads, as the receive
// goroutine and a reader do: every datagram comes out intact and in
// order, and a drained ring never refuses a datagram that fits (the arena
// jumps back to its start when the reader has released everything).
func TestRxQueueLaps(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var q rxQueue
	q.init(6, 8192) // 8 descriptors after rounding
	if len(q.descs) != 8 {
		t.Fatalf("%d descriptors, want 8", len(q.descs))
	}
	msgs := make([]Message, 3)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 2048)
	}
	var sent, got, refused uint64
	var want [][]byte // pushed, not yet popped
	mk := func(seq uint64, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(seq*7 + uint64(i))
		}
		return b
	}
	for round := 0; round < 20000; round++ {
		drained := q.tail.Load() == q.head.Load()
		q.refresh()
		for range rng.IntN(5) { // batches may be empty
			p := mk(sent, rng.IntN(1500))
			ok := q.push(p, [4]byte{10, 0, 0, byte(sent)}, uint16(sent))
			if !ok {
				if drained && len(want) == 0 {
					t.Fatalf("round %d: a drained ring refused %d bytes", round, len(p))
				}
				refused++
				continue
			}
			drained = false
			want = append(want, p)
			sent++
		}
		q.publish()
		for rng.IntN(3) != 0 {
			n := q.pop(msgs[:1+rng.IntN(len(msgs))])
			if n == 0 {
				break
			}
			for i := range msgs[:n] {
				if !bytes.Equal(msgs[i].Buf[:msgs[i].N], want[i]) {
					t.Fatalf("datagram %d corrupted", got)
				}
				if a := msgs[i].Addr; a.Port() != uint16(got) || a.Addr().As4()[3] != byte(got) {
					t.Fatalf("datagram %d from %v", got, a)
				}
				got++
			}
			want = want[n:]
		}
	}
	if got == 0 || refused == 0 {
		t.Fatalf("got %d, refused %d: the test did not exercise a full ring", got, refused)
	}
}
