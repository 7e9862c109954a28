package tcp

import (
	"math"
	"time"
)

// CUBIC congestion avoidance (RFC 9438). Slow start, fast retransmit and
// recovery stay as in RFC 5681/6582/6675; CUBIC decides how far cwnd
// falls on a loss (to beta = 0.7 of it) and how it grows afterwards: a
// cubic function of the time since the loss, centred on the window where
// the loss happened, never slower than Reno would grow.

const (
	cubicC    = 0.4 // segments per second cubed
	cubicBeta = 0.7
	// Reno-friendly additive increase for beta 0.7 (RFC 9438 §4.3).
	cubicAlpha = 3 * (1 - cubicBeta) / (1 + cubicBeta)
)

type cubic struct {
	wMax       float64   // window before the last reduction, in segments
	k          float64   // seconds from the epoch start to wMax
	epochStart time.Time // zero: a new epoch starts at the next ACK
	cwndEpoch  float64
	wEst       float64 // Reno-friendly estimate, in segments
}

// cubicLossLocked runs on a congestion event: it remembers the window
// and returns the new ssthresh (RFC 9438 §4.6-4.7, fast convergence).
func (c *Conn) cubicLossLocked() uint32 {
	mss := float64(max(c.mssBase, 1))
	w := float64(c.cwnd) / mss
	if w < c.cc.wMax {
		c.cc.wMax = w * (1 + cubicBeta) / 2
	} else {
		c.cc.wMax = w
	}
	c.cc.epochStart = time.Time{}
	return max(uint32(float64(c.cwnd)*cubicBeta), 2*uint32(mss))
}

// cubicAckLocked grows cwnd in congestion avoidance for acked bytes.
func (c *Conn) cubicAckLocked(acked uint32, now time.Time) {
	mss := float64(max(c.mssBase, 1))
	cw := float64(c.cwnd) / mss
	cc := &c.cc
	if cc.epochStart.IsZero() {
		cc.epochStart = now
		cc.cwndEpoch = cw
		cc.wEst = cw
		if cw < cc.wMax {
			cc.k = math.Cbrt((cc.wMax - cw) / cubicC)
		} else {
			cc.k = 0
			cc.wMax = cw
		}
	}
	rtt := c.rtt.SRTT()
	if rtt <= 0 {
		rtt = time.Millisecond
	}
	t := now.Sub(cc.epochStart) + rtt
	d := t.Seconds() - cc.k
	target := cubicC*d*d*d + cc.wMax
	target = min(max(target, cw), 1.5*cw)
	segs := float64(acked) / mss
	cc.wEst += cubicAlpha * segs / cw
	next := cw + (target-cw)*segs/cw
	if cc.wEst > next {
		next = cc.wEst // the Reno-friendly region
	}
	c.cwnd = min(uint32(next*mss), 1<<30)
	if c.cwnd < uint32(mss) {
		c.cwnd = uint32(mss)
	}
}
