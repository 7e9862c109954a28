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
	for _, rx := range []RxMode{RxRecvmmsg, RxFrameRing} {
		t.Run(rx.String(), func(t *testing.T) { testAdaptiveBusyPoll(t, rx) })
	}
}

func testAdaptiveBusyPoll(t *testing.T, rx RxMode) {
	w := linktest.NewPair(t, 1500)
	la := open(t, w.A, "vA", Options{})
	lb := open(t, w.B, "vB", Options{Rx: rx})
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
	sendBurst := func() { // 32 frames from vA, each received by vB's reader
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
	deadline := time.Now().Add(10 * time.Second)
	for lb.Stats().BusyPolls == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no busy poll after 10 s of bursts")
		}
		sendBurst()
	}

	// Idle again: polling stops a budget after the last frame.
	pollsStop(t, lb, "idle link after a burst")

	// Off: frames still arrive, with no polling.
	lb.SetBusyPoll(0)
	// A reader pollsStop saw standing still may only have been off the
	// CPU inside a busy window that began before SetBusyPoll(0): one burst
	// ends that ReadBatch, and the next reads the setting afresh.
	sendBurst()
	before := lb.Stats().BusyPolls
	for r := 0; r < 5; r++ {
		sendBurst()
	}
	if after := lb.Stats().BusyPolls; after != before {
		t.Fatalf("busy polling off: %d busy polls", after-before)
	}
}

// TestBusyPollAfterSend: a link that sent within its budget polls for
// the answer (a sender waiting for its receiver's credits) even though
// nothing came in yet, and stops a budget later.
func TestBusyPollAfterSend(t *testing.T) {
	for _, rx := range []RxMode{RxRecvmmsg, RxFrameRing} {
		t.Run(rx.String(), func(t *testing.T) { testBusyPollAfterSend(t, rx) })
	}
}

func testBusyPollAfterSend(t *testing.T, rx RxMode) {
	w := linktest.NewPair(t, 1500)
	la := open(t, w.A, "vA", Options{Rx: rx})
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
	pollsStop(t, la, "idle after sending")
}

// pollsStop waits, bounded, for l's busy-poll count to stand still over
// 300 ms: a reader that stops polling a budget (200 us) after the last
// frame does so at once; on a loaded machine the time given to other
// goroutines between polls, which the budget leaves out, may stretch it.
// A reader spinning while idle never stands still.
func pollsStop(t *testing.T, l *Link, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	before := l.Stats().BusyPolls
	for {
		time.Sleep(300 * time.Millisecond)
		after := l.Stats().BusyPolls
		if after == before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still busy-polling after 10 s (%d polls in the last 300 ms)", what, after-before)
		}
		before = after
	}
}
