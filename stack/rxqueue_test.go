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
	var srcs []uint64 // their sources' numbers
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
			if rng.IntN(2) == 0 {
				// A GSO run: datagrams of seg bytes end to end, the
				// last one shorter.
				seg, cnt := 1+rng.IntN(700), 1+rng.IntN(8)
				var run [][]byte
				var all []byte
				for j := range cnt {
					n := seg
					if j == cnt-1 {
						n = 1 + rng.IntN(seg)
					}
					d := mk(sent+uint64(j), n)
					run = append(run, d)
					all = append(all, d...)
				}
				took := q.pushRun(all, seg, [4]byte{10, 0, 0, byte(sent)}, uint16(sent))
				if took%seg != 0 && took != len(all) {
					t.Fatalf("pushRun took %d bytes of a run of %d-byte datagrams", took, seg)
				}
				k := (took + seg - 1) / seg
				if k == 0 {
					if drained && len(want) == 0 {
						t.Fatalf("round %d: a drained ring refused a run of %d-byte datagrams", round, seg)
					}
					refused++
					continue
				}
				// Every datagram of the run carries the first one's
				// source: fix the expectations accordingly.
				for j := range k {
					want = append(want, run[j])
					srcs = append(srcs, sent)
				}
				sent += uint64(k)
				drained = false
				continue
			}
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
			srcs = append(srcs, sent)
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
				if a := msgs[i].Addr; a.Port() != uint16(srcs[i]) || a.Addr().As4()[3] != byte(srcs[i]) {
					t.Fatalf("datagram %d from %v, want source %d", got, a, srcs[i])
				}
				got++
			}
			want, srcs = want[n:], srcs[n:]
		}
	}
	if got == 0 || refused == 0 {
		t.Fatalf("got %d, refused %d: the test did not exercise a full ring", got, refused)
	}
}
