package mem

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/netstation/netstation/stack/link"
)

// Options shape a pair.
type Options struct {
	MTU      int       // default 1500
	Caps     link.Caps // offloads both ends claim
	MaxFrame int       // default MTU+14, or 65550 with CapGSO
	Depth    int       // frames queued per direction before writers block; default 1024
	// Drop, if set, is asked about every written frame; true discards it
	// (counted in Dropped). It lets tests inject loss deterministically.
	Drop func(f *link.Frame) bool
}

// memFrame carries the pool handle with the frame, so recycling the
// buffer does not allocate.
type memFrame struct {
	f  link.Frame
	bp *[]byte
}

// Link is one end of a pair.
type Link struct {
	opts Options
	mac  net.HardwareAddr
	tx   chan<- memFrame
	rx   <-chan memFrame
	// rxBufs are the buffers of the frames the last ReadBatch returned,
	// recycled on the next call.
	rxBufs []*[]byte
	// readable (this end's) and peerReadable (the other end's) carry one
	// token each: a frame was queued since the reader last looked.
	readable, peerReadable chan struct{}
	// turn orders ReadBatch and pollers (link.Poller); holding says
	// ReadBatch has it, from frames returned until its next call.
	turn     link.RxTurn
	holding  bool
	pollBufs []*[]byte // buffers of the frames the current PollBatch took
	done     chan struct{}
	close    *sync.Once // shared by both ends
	pool     *sync.Pool

	// Dropped counts frames Options.Drop discarded on writes from this end.
	Dropped atomic.Uint64
}

var (
	_ link.Link   = (*Link)(nil)
	_ link.Poller = (*Link)(nil)
)

// Pair returns two connected ends with the given MAC addresses.
func Pair(macA, macB net.HardwareAddr, o Options) (*Link, *Link) {
	if o.MTU == 0 {
		o.MTU = 1500
	}
	if o.MaxFrame == 0 {
		o.MaxFrame = o.MTU + 14
		if o.Caps&link.CapGSO != 0 {
			o.MaxFrame = 65550
		}
	}
	if o.Depth == 0 {
		o.Depth = 1024
	}
	ab := make(chan memFrame, o.Depth)
	ba := make(chan memFrame, o.Depth)
	done := make(chan struct{})
	pool := &sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}
	once := new(sync.Once)
	ra, rb := make(chan struct{}, 1), make(chan struct{}, 1)
	a := &Link{opts: o, mac: macA, tx: ab, rx: ba, readable: ra, peerReadable: rb, done: done, close: once, pool: pool}
	b := &Link{opts: o, mac: macB, tx: ba, rx: ab, readable: rb, peerReadable: ra, done: done, close: once, pool: pool}
	return a, b
}

// ReadBatch implements link.Link. It takes frames only with the receive
// turn (link.RxTurn) and keeps the turn until the next call, so frames
// that pollers take in between are never handed over out of order.
func (l *Link) ReadBatch(frames []link.Frame) (int, error) {
	l.recycle()
	if l.holding {
		l.holding = false
		l.turn.Give() // the caller is done with the last batch
	}
	if len(frames) == 0 {
		return 0, nil
	}
	for {
		select {
		case <-l.done:
			return 0, link.ErrClosed
		default:
		}
		if l.turn.TakeWoken() {
			if n := l.take(frames, &l.rxBufs); n > 0 {
				l.holding = true
				return n, nil
			}
			l.turn.Give()
		}
		// Empty, or a poller has the turn and takes what is queued.
		select {
		case <-l.readable:
		case <-l.done:
			return 0, link.ErrClosed
		}
	}
}

// take moves up to len(frames) queued frames into frames without
// blocking and notes their buffers in bufs. The caller holds the turn.
func (l *Link) take(frames []link.Frame, bufs *[]*[]byte) int {
	n := 0
	for n < len(frames) {
		var f memFrame
		select {
		case f = <-l.rx:
		default:
			return n
		}
		frames[n] = f.f
		*bufs = append(*bufs, f.bp)
		n++
	}
	return n
}

// PollBatch implements link.Poller.
func (l *Link) PollBatch(frames []link.Frame, fn func([]link.Frame)) (int, error) {
	select {
	case <-l.done:
		return 0, link.ErrClosed
	default:
	}
	if len(frames) == 0 {
		return 0, nil
	}
	total := 0
	for l.turn.TryTake() {
		for {
			n := l.take(frames, &l.pollBufs)
			if n > 0 {
				fn(frames[:n])
				total += n
			}
			for i, bp := range l.pollBufs {
				*bp = (*bp)[:0]
				l.pool.Put(bp)
				l.pollBufs[i] = nil
			}
			l.pollBufs = l.pollBufs[:0]
			if n < len(frames) {
				break
			}
		}
		if !l.turn.Give() {
			break
		}
	}
	if total == 0 {
		runtime.Gosched()
	}
	return total, nil
}

func (l *Link) recycle() {
	for i, bp := range l.rxBufs {
		*bp = (*bp)[:0]
		l.pool.Put(bp)
		l.rxBufs[i] = nil
	}
	l.rxBufs = l.rxBufs[:0]
}

// WriteBatch implements link.Link. Frames are copied.
func (l *Link) WriteBatch(frames []link.Frame) (int, error) {
	for i := range frames {
		select {
		case <-l.done: // a ready channel must not win over Close
			return i, link.ErrClosed
		default:
		}
		f := &frames[i]
		if len(f.Buf) > l.opts.MaxFrame {
			return i, errFrameTooBig
		}
		if l.opts.Drop != nil && l.opts.Drop(f) {
			l.Dropped.Add(1)
			continue
		}
		bp := l.pool.Get().(*[]byte)
		*bp = append((*bp)[:0], f.Buf...)
		select {
		case l.tx <- memFrame{link.Frame{Buf: *bp, VNet: f.VNet}, bp}:
		case <-l.done:
			return i, link.ErrClosed
		}
		l.notifyPeer()
	}
	return len(frames), nil
}

// notifyPeer tells the other end's ReadBatch that a frame is queued.
func (l *Link) notifyPeer() {
	select {
	case l.peerReadable <- struct{}{}:
	default:
	}
}

type memError string

func (e memError) Error() string { return string(e) }

const errFrameTooBig = memError("mem: frame longer than MaxFrame")

// MTU implements link.Link.
func (l *Link) MTU() int { return l.opts.MTU }

// MaxFrame implements link.Link.
func (l *Link) MaxFrame() int { return l.opts.MaxFrame }

// HardwareAddr implements link.Link.
func (l *Link) HardwareAddr() net.HardwareAddr { return l.mac }

// Caps implements link.Link.
func (l *Link) Caps() link.Caps { return l.opts.Caps }

// Close closes both ends of the pair.
func (l *Link) Close() error {
	l.close.Do(func() { close(l.done) })
	return nil
}
