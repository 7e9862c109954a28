package afpacket

import (
	"testing"
	"time"

	"github.com/netstation/netstation/internal/linktest"
)

// TestStress blasts a mix of small, full-size and GSO frames at a link from
// a link in the peer namespace, one sender per CPU, and checks every frame
// the receiver delivers (intact, no duplicate, none from the past), then
// that lone frames still arrive promptly.
func TestStress(t *testing.T) {
	for _, c := range []struct {
		name string
		o    Options
	}{
		{"default", Options{}},
		{"recvmmsg/smallbuf", Options{ReceiveBuffer: 256 << 10}},
		{"recvmmsg/busypoll", Options{BusyPoll: 50 * time.Microsecond}},
		{"ring", Options{Rx: RxRing}},
		{"ring/small", Options{Rx: RxRing, Blocks: 2, BlockSize: 128 << 10}},
		{"ring/small/busypoll", Options{Rx: RxRing, Blocks: 2, BlockSize: 128 << 10, BusyPoll: 50 * time.Microsecond}},
		{"framering", Options{Rx: RxFrameRing}},
		{"framering/small", Options{Rx: RxFrameRing, RingFrames: 32, ReceiveBuffer: 256 << 10}},
		{"framering/small/busypoll", Options{Rx: RxFrameRing, RingFrames: 32, BusyPoll: 50 * time.Microsecond}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := linktest.NewPair(t, 1500)
			la := open(t, w.A, "vA", Options{})
			lb := open(t, w.B, "vB", c.o)
			// A lone frame must arrive, not wait for the next burst to
			// flush its block (no burst follows it: it would never
			// come). 2 s says so with room for a loaded machine (500 ms
			// failed at load averages of 300), 5 s under the race
			// detector (and a busy-polling reader beside it).
			bound := 2 * time.Second
			if raceEnabled {
				bound = 5 * time.Second
			}
			res := linktest.Stress(t, la, lb, w.MACB, w.MACA, 3*time.Second, bound)
			st := lb.Stats()
			t.Logf("sent %d received %d (GSO %d) drops %d truncated %d resyncs %d", res.Sent, res.Received, res.GSOReceived, st.RingDrops, st.RxTruncated, st.RxResyncs)
		})
	}
}
