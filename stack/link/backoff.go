package link

import (
	"errors"
	"runtime"
	"sync/atomic"
	"time"
)

// ErrTxStalled: the kernel kept refusing frames (or kept its transmit ring
// full) for longer than a TxBackoff's Budget.
var ErrTxStalled = errors.New("link: transmit stalled")

// TxBackoff paces the retries of a transmit the kernel refused for the
// moment (ENOBUFS, EAGAIN, a full ring): the first four retries only yield
// the processor, later ones sleep 20 us doubling up to about 10 ms, and
// once retrying has gone on for longer than Budget, Wait gives up with
// ErrTxStalled. The zero value of its unexported state is "no retry yet";
// one TxBackoff serves one operation and is reset after progress.
type TxBackoff struct {
	// Budget is how long retrying may go on.
	Budget time.Duration
	// Retries, when not nil, counts every Wait (a link's retry statistic).
	Retries *atomic.Uint64

	start time.Time
	tries int
}

// NewTxBackoff returns a TxBackoff with the given budget that counts its
// waits in retries (which may be nil).
func NewTxBackoff(budget time.Duration, retries *atomic.Uint64) TxBackoff {
	return TxBackoff{Budget: budget, Retries: retries}
}

// Wait counts one retry and waits before it, a little longer on each call,
// or returns ErrTxStalled once the budget is spent.
func (b *TxBackoff) Wait() error {
	if b.Retries != nil {
		b.Retries.Add(1)
	}
	if b.tries == 0 {
		b.start = time.Now()
	} else if time.Since(b.start) > b.Budget {
		return ErrTxStalled
	}
	b.tries++
	if b.tries <= 4 {
		runtime.Gosched()
		return nil
	}
	time.Sleep(time.Duration(1<<min(b.tries-4, 10)) * 10 * time.Microsecond) // up to ~10 ms
	return nil
}

// Reset starts the budget afresh, after the kernel took something.
func (b *TxBackoff) Reset() { b.start, b.tries = time.Time{}, 0 }
