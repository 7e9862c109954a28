package tcp

import (
	"math"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/rtt"
)

// TestCubicCurve drives the window of one connection through a loss and
// the epoch after it with a synthetic clock and checks the RFC 9438
// shape: down to beta, back to W_max after K seconds (concave), beyond it
// afterwards (convex), never below what Reno would have.
func TestCubicCurve(t *testing.T) {
	const mss = 1000
	c := &Conn{p: &Protocol{}, mssBase: mss, rtt: rtt.New(rtt.Config{Max: time.Minute})}
	c.rtt.Sample(100 * time.Millisecond)
	c.cwnd = 100 * mss
	ss := c.cubicLossLocked()
	if ss != 70*mss {
		t.Fatalf("ssthresh after loss at 100 segments: %d, want %d", ss, 70*mss)
	}
	c.cwnd = ss
	k := math.Cbrt(30 / cubicC)
	start := time.Unix(1000, 0)
	now := start
	// One window of ACKs per 100 ms round trip (long enough for the cubic
	// region; at short round trips the Reno-friendly estimate leads).
	var atK, late uint32
	for now.Sub(start) < time.Duration((k+2)*float64(time.Second)) {
		for acked := uint32(0); acked < c.cwnd; acked += mss {
			c.cubicAckLocked(mss, now)
		}
		now = now.Add(100 * time.Millisecond)
		if atK == 0 && now.Sub(start).Seconds() >= k {
			atK = c.cwnd
		}
		late = c.cwnd
	}
	if atK < 95*mss || atK > 110*mss {
		t.Errorf("window at K=%.2fs: %d segments, want about W_max (100)", k, atK/mss)
	}
	if late <= atK {
		t.Errorf("window 2 s after K: %d segments, not above %d (no convex growth)", late/mss, atK/mss)
	}
	// A second loss below W_max: fast convergence lowers W_max.
	c.cwnd = 80 * mss
	c.cc.wMax = 100
	c.cubicLossLocked()
	if got := c.cc.wMax; math.Abs(got-80*(1+cubicBeta)/2) > 1e-9 {
		t.Errorf("fast convergence: W_max %.2f", got)
	}
}
