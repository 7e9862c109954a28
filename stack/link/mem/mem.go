package mem

import (
	"net"
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
	done   chan struct{}
	close  *sync.Once // shared by both ends
	pool   *sync.Pool

	// Dropped counts frames Options.Drop discarded on writes from this end.
	Dropped atomic.Uint64
}

var _ link.Link = (*Link)(nil)

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
	a := &Link{opts: o, mac: macA, tx: ab, rx: ba, done: done, close: once, pool: pool}
	b := &Link{opts: o, mac: macB, tx: ba, rx: ab, done: done, close: once, pool: pool}
	return a, b
}

// ReadBatch implements link.Link.
func (l *Link) ReadBatch(frames []link.Frame) (int, error) {
	l.recycle()
	if len(frames) == 0 {
		return 0, nil
	}
	select {
	case <-l.done:
		return 0, link.ErrClosed
	default:
	}
	var f memFrame
	select {
	case f = <-l.rx:
	case <-l.done:
		return 0, link.ErrClosed
	}
	frames[0] = f.f
	l.rxBufs = append(l.rxBufs, f.bp)
	n := 1
	// Drain what is already queued, up to the batch size, without
	// blocking: a true batch, like a ring that holds several frames.
	for n < len(frames) {
		select {
		case f = <-l.rx:
		default:
			return n, nil
		}
		frames[n] = f.f
		l.rxBufs = append(l.rxBufs, f.bp)
		n++
	}
	return n, nil
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
	}
	return len(frames), nil
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
