package rtt

import "time"

// Config bounds an Estimator.
type Config struct {
	// Initial is the timeout before the first sample (RFC 6298 §2.1
	// says 1 s; a LAN protocol may start lower).
	Initial time.Duration
	// Min and Max clamp the timeout the estimator hands out (RFC 6298
	// §2.4-2.5). Min is the floor that keeps delayed ACKs and scheduling
	// noise from firing spurious retransmissions.
	Min, Max time.Duration
	// Granularity is the clock granularity G of RFC 6298 §2: the
	// variance term is at least G.
	Granularity time.Duration
}

// Estimator is the RFC 6298 smoothed round-trip time, its variation, and
// the retransmission timeout derived from them, with exponential back-off
// (§5.5). The zero value is not usable: build one with New.
type Estimator struct {
	cfg          Config
	srtt, rttvar time.Duration
	rto          time.Duration // before clamping to [Min, Max]
}

// New returns an estimator with no sample yet: RTO is cfg.Initial
// (clamped to [Min, Max]).
func New(cfg Config) Estimator {
	return Estimator{cfg: cfg, rto: cfg.Initial}
}

// minSample stands for a round trip measured as zero or less (a clock
// too coarse for the path): SRTT zero means "no sample yet".
const minSample = time.Microsecond

// Sample feeds one round-trip measurement (RFC 6298 §2.2-2.3) and sets the
// timeout from it, which also ends any back-off (§5.7).
func (e *Estimator) Sample(r time.Duration) {
	if r <= 0 {
		r = minSample
	}
	if e.srtt == 0 {
		e.srtt = r
		e.rttvar = r / 2
	} else {
		d := e.srtt - r
		if d < 0 {
			d = -d
		}
		e.rttvar = (3*e.rttvar + d) / 4 // β = 1/4
		e.srtt = (7*e.srtt + r) / 8     // α = 1/8
	}
	e.rto = e.computed()
}

// computed is SRTT + max(G, 4·RTTVAR), or the initial timeout before any
// sample.
func (e *Estimator) computed() time.Duration {
	if e.srtt == 0 {
		return e.cfg.Initial
	}
	return e.srtt + max(4*e.rttvar, e.cfg.Granularity)
}

// RTO is the retransmission timeout to arm now, within [Min, Max].
func (e *Estimator) RTO() time.Duration {
	return min(max(e.rto, e.cfg.Min), e.cfg.Max)
}

// Backoff doubles the timeout after it expired (RFC 6298 §5.5), up to Max.
func (e *Estimator) Backoff() { e.BackoffTo(e.cfg.Max) }

// BackoffTo doubles the timeout, up to limit (a caller with a lower
// ceiling for one timer, such as TCP's persist timer).
func (e *Estimator) BackoffTo(limit time.Duration) {
	e.rto = min(2*e.RTO(), limit)
}

// BackedOff is the timeout doubled n times, up to Max, without changing
// the estimator: the timeout of the n-th retransmission of one request
// when requests run their own timers.
func (e *Estimator) BackedOff(n int) time.Duration {
	rto := e.RTO()
	for ; n > 0 && rto < e.cfg.Max; n-- {
		rto *= 2
	}
	return min(rto, e.cfg.Max)
}

// Restore ends a back-off without a new sample: the timeout goes back to
// the one the current estimates give (what TCP does when a zero window
// opens, so the persist timer's doubling does not outlive it).
func (e *Estimator) Restore() { e.rto = e.computed() }

// SRTT is the smoothed round-trip time, zero before the first sample.
func (e *Estimator) SRTT() time.Duration { return e.srtt }

// RTTVar is the round-trip time variation, zero before the first sample.
func (e *Estimator) RTTVar() time.Duration { return e.rttvar }
