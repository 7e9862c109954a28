package impair

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netstation/netstation/stack/link"
)

// MaxDelayed bounds the frames waiting in the delay line.
const MaxDelayed = 8192

// Params are the impairments in force. The zero value impairs nothing.
type Params struct {
	LossPPM    uint32        `json:"loss_ppm"`    // frames dropped per million, each direction
	CorruptPPM uint32        `json:"corrupt_ppm"` // frames with one payload byte flipped, per million
	Delay      time.Duration `json:"delay"`       // added to every transmitted frame
	Seed       uint64        `json:"seed"`
	Down       bool          `json:"down"` // drop everything: a cut cable
}

// Counters of what the wrapper did.
type Counters struct {
	RxDropped, TxDropped, Corrupted, Delayed, DelayOverflow uint64
}

// Link is an impaired link.
type Link struct {
	link.Link
	params atomic.Pointer[Params]

	mu  sync.Mutex // guards rng
	rng *rand.Rand

	rxDropped, txDropped, corrupted, delayed, overflow atomic.Uint64

	dl      chan delayed
	dlOnce  sync.Once
	closed  chan struct{}
	closeMu sync.Once
}

type delayed struct {
	due  time.Time
	buf  []byte
	vnet link.VNetHdr
}

var _ link.Link = (*Link)(nil)

// Wrap returns l impaired by nothing until Set is called.
func Wrap(l link.Link) *Link {
	w := &Link{Link: l, closed: make(chan struct{})}
	w.Set(Params{})
	return w
}

// Set changes the impairments; it is safe at any time. A new seed restarts
// the generator.
func (w *Link) Set(p Params) {
	w.mu.Lock()
	w.rng = rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15))
	w.mu.Unlock()
	w.params.Store(&p)
}

// Params returns the impairments in force.
func (w *Link) Params() Params { return *w.params.Load() }

// Counters returns what the wrapper has done so far.
func (w *Link) Counters() Counters {
	return Counters{RxDropped: w.rxDropped.Load(), TxDropped: w.txDropped.Load(), Corrupted: w.corrupted.Load(),
		Delayed: w.delayed.Load(), DelayOverflow: w.overflow.Load()}
}

// trial draws one Bernoulli trial with probability ppm/1e6.
func (w *Link) trial(ppm uint32) bool {
	if ppm == 0 {
		return false
	}
	w.mu.Lock()
	v := w.rng.Uint32N(1_000_000)
	w.mu.Unlock()
	return v < ppm
}

// corrupt flips one byte past the Ethernet, IPv4 and L4 headers (where
// checksums, not parsers, must catch it).
func (w *Link) corrupt(b []byte) {
	if len(b) <= 14+20+8 {
		return
	}
	w.mu.Lock()
	i := 42 + w.rng.IntN(len(b)-42)
	w.mu.Unlock()
	b[i] ^= 0xff
	w.corrupted.Add(1)
}

// ReadBatch reads from the wrapped link and removes the frames the
// impairments drop.
func (w *Link) ReadBatch(frames []link.Frame) (int, error) {
	for {
		n, err := w.Link.ReadBatch(frames)
		p := w.params.Load()
		if n == 0 || (p.LossPPM == 0 && p.CorruptPPM == 0 && !p.Down) {
			return n, err
		}
		k := 0
		for i := 0; i < n; i++ {
			if p.Down || w.trial(p.LossPPM) {
				w.rxDropped.Add(1)
				continue
			}
			if w.trial(p.CorruptPPM) {
				w.corrupt(frames[i].Buf)
			}
			frames[k] = frames[i]
			k++
		}
		if k > 0 || err != nil {
			return k, err
		}
	}
}

// WriteBatch applies the impairments and writes what survives, now or,
// with a delay, from the delay line. Dropped frames count as written: a
// wire does not tell the sender.
func (w *Link) WriteBatch(frames []link.Frame) (int, error) {
	p := w.params.Load()
	if p.LossPPM == 0 && p.CorruptPPM == 0 && !p.Down && p.Delay == 0 {
		return w.Link.WriteBatch(frames)
	}
	for i := range frames {
		f := frames[i]
		if p.Down || w.trial(p.LossPPM) {
			w.txDropped.Add(1)
			continue
		}
		corrupt := w.trial(p.CorruptPPM)
		if p.Delay > 0 || corrupt {
			buf := append([]byte(nil), f.Buf...)
			if corrupt {
				w.corrupt(buf)
			}
			if p.Delay > 0 {
				w.startDelayLine()
				select {
				case w.dl <- delayed{due: time.Now().Add(p.Delay), buf: buf, vnet: f.VNet}:
					w.delayed.Add(1)
				default:
					w.overflow.Add(1)
				}
				continue
			}
			f.Buf = buf
		}
		if _, err := w.Link.WriteBatch([]link.Frame{f}); err != nil {
			return i, err
		}
	}
	return len(frames), nil
}

func (w *Link) startDelayLine() {
	w.dlOnce.Do(func() {
		w.dl = make(chan delayed, MaxDelayed)
		go w.delayLine()
	})
}

// delayLine writes delayed frames in order when they are due.
func (w *Link) delayLine() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		var d delayed
		select {
		case d = <-w.dl:
		case <-w.closed:
			return
		}
		if wait := time.Until(d.due); wait > 0 {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-w.closed:
				return
			}
		}
		_, _ = w.Link.WriteBatch([]link.Frame{{Buf: d.buf, VNet: d.vnet}})
	}
}

// Close stops the delay line and closes the wrapped link.
func (w *Link) Close() error {
	w.closeMu.Do(func() { close(w.closed) })
	return w.Link.Close()
}

// HardwareAddr implements link.Link.
func (w *Link) HardwareAddr() net.HardwareAddr { return w.Link.HardwareAddr() }

var (
	_ link.Lender       = (*Link)(nil)
	_ link.GatherWriter = (*Link)(nil)
	_ link.Poller       = (*Link)(nil)
	_ link.BusyPoller   = (*Link)(nil)
)

// SetBusyPoll implements link.BusyPoller when the wrapped link does (a
// no-op otherwise): the impairments apply to what its ReadBatch returns,
// however the frames were waited for.
func (w *Link) SetBusyPoll(d time.Duration) {
	if b, ok := w.Link.(link.BusyPoller); ok {
		b.SetBusyPoll(d)
	}
}

// PollBatch implements link.Poller when the wrapped link polls and nothing
// is impaired on receive; otherwise it returns link.ErrNoPoll, and the
// frames reach the stack through ReadBatch and its impairments.
func (w *Link) PollBatch(frames []link.Frame, fn func([]link.Frame)) (int, error) {
	p := w.params.Load()
	pl, ok := w.Link.(link.Poller)
	if !ok || p.LossPPM != 0 || p.CorruptPPM != 0 || p.Down {
		return 0, link.ErrNoPoll
	}
	return pl.PollBatch(frames, fn)
}

// Hold implements link.Lender for a wrapped link that lends its receive
// buffers (false otherwise: the stack copies). Frames the impairments
// drop are simply never held.
func (w *Link) Hold(loan uint32, n int) bool {
	l, ok := w.Link.(link.Lender)
	return ok && l.Hold(loan, n)
}

// Release implements link.Lender.
func (w *Link) Release(loan uint32, n int) {
	if l, ok := w.Link.(link.Lender); ok {
		l.Release(loan, n)
	}
}

// LoanBuf implements link.Lender.
func (w *Link) LoanBuf(loan uint32) []byte { return w.Link.(link.Lender).LoanBuf(loan) }

// WriteGather implements link.GatherWriter when nothing is impaired and
// the wrapped link gathers; otherwise it returns link.ErrNoGather and the
// sender assembles the frame for WriteBatch, which applies the
// impairments.
func (w *Link) WriteGather(v link.VNetHdr, pieces [][]byte) error {
	p := w.params.Load()
	gw, ok := w.Link.(link.GatherWriter)
	if !ok || p.LossPPM != 0 || p.CorruptPPM != 0 || p.Down || p.Delay != 0 {
		return link.ErrNoGather
	}
	return gw.WriteGather(v, pieces)
}
