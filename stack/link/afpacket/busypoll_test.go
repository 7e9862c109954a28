package afpacket

import (
	"testing"
	"time"

	"github.com/netstation/netstation/internal/linktest"
	"github.com/netstation/netstation/stack/link"
)

// TestAdaptiveBusyPoll: with SetBusyPoll, a reader polls only while
// traffic flows: never on an idle link, after a burst for about its
// budget, then it sleeps again (an idle peripheral must not spin); and a
// link whose polling is turned off again never polls.
func TestAdaptiveBusyPoll(t *testing.T) {
	w := linktest.NewPair(t, 1500)
	la := open(t, w.A, "vA", Options{})
	lb := open(t, w.B, "vB", Options{})
	lb.SetBusyPoll(200 * time.Microsecond)
	cb := collect(t, lb)

	time.Sleep(50 * time.Millisecond)
	if p := lb.Stats().BusyPolls; p != 0 {
		t.Fatalf("idle link, no frame yet: %d busy polls", p)
	}

	// Bursts until the reader has polled after one (a burst whose frames
	// it found queued or got soon after asking: traffic flows). Bounded.
	burst := make([]link.Frame, 32)
	seq := uint32(0)
	deadline := time.Now().Add(10 * time.Second)
	for lb.Stats().BusyPolls == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no busy poll after 10 s of bursts")
		}
		for i := range burst {
			burst[i] = link.Frame{Buf: linktest.Frame(w.MACB, w.MACA, 60, seq)}
			seq++
		}
		if _, err := la.WriteBatch(burst); err != nil {
			t.Fatal(err)
		}
		for range burst {
			cb.next(t, 5*time.Second, isTest)
		}
	}

	// Idle again: polling stops a budget after the last frame. Measured
	// well after that, the count must stand still.
	time.Sleep(100 * time.Millisecond)
	before := lb.Stats().BusyPolls
	time.Sleep(300 * time.Millisecond)
	if after := lb.Stats().BusyPolls; after != before {
		t.Fatalf("idle link after a burst: %d busy polls in 300 ms (a reader spinning while idle)", after-before)
	}

	// Off: frames still arrive, with no polling.
	lb.SetBusyPoll(0)
	time.Sleep(10 * time.Millisecond) // the reader may finish a budget armed before
	before = lb.Stats().BusyPolls
	for r := 0; r < 5; r++ {
		for i := range burst {
			burst[i] = link.Frame{Buf: linktest.Frame(w.MACB, w.MACA, 60, seq)}
			seq++
		}
		if _, err := la.WriteBatch(burst); err != nil {
			t.Fatal(err)
		}
		for range burst {
			cb.next(t, 5*time.Second, isTest)
		}
	}
	if after := lb.Stats().BusyPolls; after != before {
		t.Fatalf("busy polling off: %d busy polls", after-before)
	}
}

// TestBusyPollAfterSend: a link that sent within its budget polls for
// the answer (a sender waiting for its receiver's credits) even though
// nothing came in yet, and stops a budget later.
func TestBusyPollAfterSend(t *testing.T) {
	w := linktest.NewPair(t, 1500)
	la := open(t, w.A, "vA", Options{})
	lb := open(t, w.B, "vB", Options{})
	la.SetBusyPoll(200 * time.Microsecond)
	ca := collect(t, la)
	time.Sleep(20 * time.Millisecond) // the reader is asleep, idle
	deadline := time.Now().Add(10 * time.Second)
	for i := uint32(0); la.Stats().BusyPolls == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no busy poll after 10 s of sends")
		}
		if _, err := la.WriteBatch([]link.Frame{{Buf: linktest.Frame(w.MACB, w.MACA, 60, i)}}); err != nil {
			t.Fatal(err)
		}
		// An answer wakes the reader, whose next read follows a send.
		if _, err := lb.WriteBatch([]link.Frame{{Buf: linktest.Frame(w.MACA, w.MACB, 60, i)}}); err != nil {
			t.Fatal(err)
		}
		ca.next(t, 5*time.Second, isTest)
	}
	time.Sleep(100 * time.Millisecond)
	before := la.Stats().BusyPolls
	time.Sleep(300 * time.Millisecond)
	if after := la.Stats().BusyPolls; after != before {
		t.Fatalf("idle after sending: %d busy polls in 300 ms", after-before)
	}
}
