package rtt

import (
	"testing"
	"time"
)

var tcpLike = Config{Initial: time.Second, Min: 200 * time.Millisecond, Max: 120 * time.Second, Granularity: time.Millisecond}

func TestInitialBeforeSample(t *testing.T) {
	e := New(tcpLike)
	if got := e.RTO(); got != time.Second {
		t.Fatalf("RTO before a sample = %v, want the initial 1s", got)
	}
	if e.SRTT() != 0 || e.RTTVar() != 0 {
		t.Fatalf("SRTT/RTTVAR before a sample = %v/%v, want 0/0", e.SRTT(), e.RTTVar())
	}
	low := New(Config{Initial: 5 * time.Millisecond, Min: 20 * time.Millisecond, Max: time.Second})
	if got := low.RTO(); got != 20*time.Millisecond {
		t.Fatalf("initial below the floor: RTO = %v, want the 20ms floor", got)
	}
}

// TestRFC6298Arithmetic checks SRTT, RTTVAR and RTO against the formulas
// of RFC 6298 §2.2-2.3 worked by hand.
func TestRFC6298Arithmetic(t *testing.T) {
	e := New(Config{Initial: time.Second, Max: time.Minute, Granularity: time.Millisecond})
	e.Sample(100 * time.Millisecond)
	// First sample: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4·RTTVAR.
	if e.SRTT() != 100*time.Millisecond || e.RTTVar() != 50*time.Millisecond || e.RTO() != 300*time.Millisecond {
		t.Fatalf("after R=100ms: SRTT %v RTTVAR %v RTO %v, want 100ms 50ms 300ms", e.SRTT(), e.RTTVar(), e.RTO())
	}
	e.Sample(60 * time.Millisecond)
	// RTTVAR = 3/4·50 + 1/4·|100-60| = 47.5 ms; SRTT = 7/8·100 + 1/8·60 = 95 ms.
	if e.RTTVar() != 47500*time.Microsecond || e.SRTT() != 95*time.Millisecond {
		t.Fatalf("after R=60ms: SRTT %v RTTVAR %v, want 95ms 47.5ms", e.SRTT(), e.RTTVar())
	}
	if want := 95*time.Millisecond + 4*47500*time.Microsecond; e.RTO() != want {
		t.Fatalf("RTO = %v, want %v", e.RTO(), want)
	}
}

// TestGranularityFloor: with a steady path RTTVAR decays towards zero and
// the variance term must not go below the clock granularity.
func TestGranularityFloor(t *testing.T) {
	e := New(Config{Initial: time.Second, Max: time.Minute, Granularity: time.Millisecond})
	for range 200 {
		e.Sample(10 * time.Millisecond)
	}
	if e.RTTVar() >= time.Millisecond/4 {
		t.Fatalf("RTTVAR = %v after 200 equal samples, want it decayed below G/4", e.RTTVar())
	}
	if got := e.RTO(); got != 11*time.Millisecond {
		t.Fatalf("RTO = %v, want SRTT + G = 11ms", got)
	}
}

func TestClampAndBackoff(t *testing.T) {
	e := New(tcpLike)
	e.Sample(time.Millisecond)
	if got := e.RTO(); got != 200*time.Millisecond {
		t.Fatalf("RTO = %v on a 1ms path, want the 200ms floor", got)
	}
	e.Backoff()
	if got := e.RTO(); got != 400*time.Millisecond {
		t.Fatalf("after one back-off RTO = %v, want 400ms (doubled from the floor)", got)
	}
	for range 20 {
		e.Backoff()
	}
	if got := e.RTO(); got != 120*time.Second {
		t.Fatalf("after many back-offs RTO = %v, want the 120s ceiling", got)
	}
	e.BackoffTo(60 * time.Second)
	if got := e.RTO(); got != 60*time.Second {
		t.Fatalf("BackoffTo(60s) = %v, want 60s", got)
	}
	e.Restore()
	if got := e.RTO(); got != 200*time.Millisecond {
		t.Fatalf("after Restore RTO = %v, want the estimate again (200ms floor)", got)
	}
	e.Backoff()
	e.Sample(time.Millisecond)
	if got := e.RTO(); got != 200*time.Millisecond {
		t.Fatalf("a new sample must end the back-off: RTO = %v", got)
	}
}

func TestBackedOffLeavesEstimator(t *testing.T) {
	e := New(Config{Initial: 50 * time.Millisecond, Min: 20 * time.Millisecond, Max: time.Second})
	for n, want := range []time.Duration{50, 100, 200, 400, 800, 1000, 1000} {
		if got := e.BackedOff(n); got != want*time.Millisecond {
			t.Errorf("BackedOff(%d) = %v, want %v", n, got, want*time.Millisecond)
		}
	}
	if e.RTO() != 50*time.Millisecond {
		t.Fatalf("BackedOff changed the estimator: RTO %v", e.RTO())
	}
}

// TestZeroSample: a sample of zero (a clock coarser than the path) still
// counts as a sample; SRTT zero would read as "none yet".
func TestZeroSample(t *testing.T) {
	e := New(tcpLike)
	e.Sample(0)
	if e.SRTT() <= 0 {
		t.Fatalf("SRTT = %v after a zero sample, want > 0", e.SRTT())
	}
	if e.RTO() != tcpLike.Min {
		t.Fatalf("RTO = %v, want the floor", e.RTO())
	}
}
