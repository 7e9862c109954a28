package afpacket

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/stack/link"
)

const (
	// rxSockBatch is the most frames one RxRecvmmsg ReadBatch returns.
	rxSockBatch = 64
	// rxSockBatchBytes bounds the bytes one recvmmsg is asked for, from
	// the size of the frames the last one returned: 64 GSO super-frames
	// are 4 MiB, twice this machine kind's L2, so the copy into them
	// misses and the reader finds the first frames of the batch evicted
	// by the last (the kernel's UDP_GRO baseline reads 16 x 64 KiB).
	rxSockBatchBytes = 1 << 20
	// rxPollBatch is the most frames one PollBatch round takes: a poller
	// waits for a reply or two, not for bulk.
	rxPollBatch = 8
	// rxSlotSize holds a virtio-net header and the largest GSO frame,
	// rounded up to 16 bytes.
	rxSlotSize = (link.VNetHdrLen + maxFrameGSO + 15) &^ 15
)

// rxSock is the RxRecvmmsg receive path: a non-blocking, ring-less packet
// socket registered with the Go netpoller. Guarded by Link.rxMu, except
// close (Link.statMu).
type rxSock struct {
	fd   int // for getsockopt; owned by file
	file *os.File
	rc   syscall.RawConn

	// pool holds the receive buffers, rxSlotSize each: header then
	// frame. The pages of the tail of a slot are touched only by large
	// frames. Message i reads into pool.slots[pool.at[i]].
	pool rxPool
	msgs []unix.Mmsghdr
	iovs []unix.Iovec

	want int // messages the next recvmmsg may fill
	got  int // messages the last recvmmsg filled
	// limit is the most messages the next recvmmsg may fill for its
	// bytes to stay within rxSockBatchBytes, judged by the largest frame
	// of the last batch.
	limit int
	err   syscall.Errno
	busy  bool // recv reports EAGAIN as done (busy polling)
	// flowing: the last ReadBatch got its frames within the adaptive
	// busy-poll budget (Link.SetBusyPoll), so the next one polls.
	flowing bool
	recv    func(uintptr) bool // r.recvmmsg as a func value, made once

	// turn orders the blocked reader and pollers (link.Poller); holding
	// says the reader has it, from frames returned until its next call.
	turn    link.RxTurn
	holding bool

	// The pollers' own buffers (used by the holder of the turn): a
	// poller never touches the frames the blocked reader returned.
	pbufs    []byte
	pmsgs    []unix.Mmsghdr
	piovs    []unix.Iovec
	pwant    int
	pgot     int
	perr     syscall.Errno
	pollRecv func(uintptr) // r.recvPoll as a func value, made once
}

// open creates, configures and binds the receive socket on interface ifidx.
func (r *rxSock) open(ifidx int, o Options) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("receive socket: %w", err)
	}
	r.fd = fd
	r.file = os.NewFile(uintptr(fd), "afpacket")
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fmt.Errorf("receive PACKET_VNET_HDR: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fmt.Errorf("receive PACKET_IGNORE_OUTGOING: %w", err)
	}
	rcvbuf := o.ReceiveBuffer
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
		// Without CAP_NET_ADMIN: as much as net.core.rmem_max allows.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf); err != nil {
			return fmt.Errorf("receive SO_RCVBUF: %w", err)
		}
	}
	if o.Accept.IsValid() {
		if err := attachFilter(fd, acceptFilter(o.Accept, 0x40000)); err != nil {
			return fmt.Errorf("accept filter: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifidx}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	r.rc, err = r.file.SyscallConn()
	if err != nil {
		return fmt.Errorf("receive socket: %w", err)
	}
	r.pool.init()
	r.msgs = make([]unix.Mmsghdr, rxSockBatch)
	r.iovs = make([]unix.Iovec, rxSockBatch)
	for i := range r.msgs {
		r.iovs[i].Base = &r.pool.slots[r.pool.at[i]].buf[0]
		r.iovs[i].SetLen(rxSlotSize)
		r.msgs[i].Hdr.Iov = &r.iovs[i]
		r.msgs[i].Hdr.SetIovlen(1)
	}
	r.recv = r.recvmmsg
	r.limit = rxSockBatch
	r.pbufs = make([]byte, rxPollBatch*rxSlotSize)
	r.pmsgs = make([]unix.Mmsghdr, rxPollBatch)
	r.piovs = make([]unix.Iovec, rxPollBatch)
	for i := range r.pmsgs {
		r.piovs[i].Base = &r.pbufs[i*rxSlotSize]
		r.piovs[i].SetLen(rxSlotSize)
		r.pmsgs[i].Hdr.Iov = &r.piovs[i]
		r.pmsgs[i].Hdr.SetIovlen(1)
	}
	r.pollRecv = r.recvPoll
	return nil
}

// close closes the socket, waking a reader waiting in the netpoller; r.rc
// then fails, so a reader never touches a closed or reused descriptor.
func (r *rxSock) close() {
	if r.file != nil {
		_ = r.file.Close()
		r.file = nil
	}
	r.fd = -1
}

// recvmmsg is the RawConn.Read callback: it reports false (wait for
// readability) on EAGAIN unless busy polling. It reads only with the
// receive turn and keeps the turn when it got frames; when a poller holds
// the turn, the poller takes what is waiting and the reader sleeps again.
func (r *rxSock) recvmmsg(fd uintptr) bool {
	r.got, r.err = 0, 0
	if !r.holding {
		if !r.turn.TakeWoken() {
			return r.busy
		}
		r.holding = true
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(r.want), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			r.giveTurn()
			return r.busy
		case 0:
			r.got = int(n)
		default:
			r.err = e
			r.giveTurn()
		}
		return true
	}
}

// giveTurn gives the blocked reader's turn back. A note left meanwhile
// was its own (only the reader sleeps on readability) and it reads again
// before it sleeps, so the note needs nothing more.
func (r *rxSock) giveTurn() {
	if r.holding {
		r.holding = false
		r.turn.Give()
	}
}

// recvPoll is the RawConn.Control callback of PollBatch: one recvmmsg
// into the pollers' buffers, never waiting. A raw system call: it cannot
// block (MSG_DONTWAIT, a few frames), and the runtime's
// entersyscall/exitsyscall would add 0.1-0.3 us to every round of a
// poller's loop here, delay before a frame that arrives meanwhile is seen.
func (r *rxSock) recvPoll(fd uintptr) {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.pmsgs[0])), uintptr(r.pwant), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			r.pgot, r.perr = 0, 0
		case 0:
			r.pgot, r.perr = int(n), 0
		default:
			r.pgot, r.perr = 0, e
		}
		return
	}
}

// sockRead runs one recvmmsg through the netpoller (waiting unless busy).
func (l *Link) sockRead(busy bool) (int, error) {
	r := &l.rs
	r.busy = busy
	if err := r.rc.Read(r.recv); err != nil {
		if l.closed.Load() || errors.Is(err, os.ErrClosed) {
			return 0, link.ErrClosed
		}
		return 0, fmt.Errorf("afpacket: %w", err)
	}
	if r.err != 0 {
		if l.closed.Load() {
			return 0, link.ErrClosed
		}
		return 0, fmt.Errorf("afpacket: recvmmsg: %w", r.err)
	}
	return r.got, nil
}

// readSock is ReadBatch for RxRecvmmsg; l.rxMu is held.
func (l *Link) readSock(frames []link.Frame) (int, error) {
	r := &l.rs
	r.giveTurn() // the caller is done with the last batch
	r.want = min(len(frames), rxSockBatch, max(r.limit, 1))
	w := l.pollWindow(r.flowing)
	r.refill(r.want) // the last batch's buffers on loan are replaced
	for {
		busy := w.busy()
		got, err := l.sockRead(busy)
		if err != nil {
			return 0, err
		}
		if n := l.deliverSock(frames, r.msgs[:got], false); n > 0 {
			r.flowing = w.flowing(r.flowing)
			return n, nil
		}
		r.giveTurn() // nothing deliverable: read again as if woken
		if busy && got == 0 {
			l.busyPolls.Add(1)
			w.yield()
		}
	}
}

// busyWindow is how long one ReadBatch polls before it sleeps:
// Options.BusyPoll always, and the adaptive budget (SetBusyPoll) while
// traffic flows (the last batch came within it, or the link sent within
// it).
type busyWindow struct {
	adaptive        time.Duration
	start, deadline time.Time // zero deadline: no polling
}

// pollWindow opens the window of a ReadBatch; flowing is what the last
// batch found.
func (l *Link) pollWindow(flowing bool) busyWindow {
	w := busyWindow{adaptive: time.Duration(l.busyPoll.Load())}
	if l.opts.BusyPoll > 0 || w.adaptive > 0 {
		w.start = time.Now()
	}
	if l.opts.BusyPoll > 0 {
		w.deadline = w.start.Add(l.opts.BusyPoll)
	}
	if w.adaptive > 0 && (flowing || l.sentWithin(w.start, w.adaptive)) {
		w.deadline = w.start.Add(max(w.adaptive, l.opts.BusyPoll))
	}
	return w
}

// busy reports whether the window is still open.
func (w *busyWindow) busy() bool {
	return !w.deadline.IsZero() && time.Now().Before(w.deadline)
}

// flowing is what a batch that just came says of the traffic for the
// next ReadBatch: it flows when the frames came within the adaptive
// budget of asking for them (time given to other goroutines between
// polls left out); was is kept when there is no adaptive budget.
func (w *busyWindow) flowing(was bool) bool {
	if w.adaptive <= 0 {
		return was
	}
	return time.Since(w.start) <= w.adaptive
}

// yield lets the process's other goroutines run when a poll found
// nothing (with one P, the reader the loop just woke), and does not count
// their time against the window.
func (w *busyWindow) yield() {
	t := time.Now()
	runtime.Gosched()
	d := time.Since(t)
	w.deadline = w.deadline.Add(d)
	w.start = w.start.Add(d)
}

// sentWithin reports whether the link sent a frame within d before t.
func (l *Link) sentWithin(t time.Time, d time.Duration) bool {
	last := l.lastTx.Load()
	return last != 0 && t.Sub(l.epoch) < time.Duration(last)+d
}

// noteTx records that a frame left now, for the adaptive busy poll (a
// sender waiting for its peer's answers keeps polling): only when it is on.
func (l *Link) noteTx() {
	if l.busyPoll.Load() > 0 {
		l.lastTx.Store(int64(max(time.Since(l.epoch), 1)))
	}
}

// SetBusyPoll implements link.BusyPoller for RxRecvmmsg and RxFrameRing
// (RxRing's reader sees only retired blocks and is left as it is): while
// frames keep coming or leaving, ReadBatch polls the socket or the ring for
// up to d before it waits in the netpoller, yielding the processor between
// polls.
func (l *Link) SetBusyPoll(d time.Duration) {
	if l.opts.Rx != RxRing {
		l.busyPoll.Store(int64(max(d, 0)))
	}
}

var _ link.BusyPoller = (*Link)(nil)

// PollBatch implements link.Poller. RxRecvmmsg: a recvmmsg that does not
// wait, on the receive socket, into buffers of the pollers' own.
// RxFrameRing: loads from the ring, no system call. A link with RxRing
// returns link.ErrNoPoll: only retired blocks may be read, and a poller
// cannot retire one.
func (l *Link) PollBatch(frames []link.Frame, fn func([]link.Frame)) (int, error) {
	switch l.opts.Rx {
	case RxRing:
		return 0, link.ErrNoPoll
	case RxFrameRing:
		return l.pollFrameRing(frames, fn)
	}
	if l.closed.Load() {
		return 0, link.ErrClosed
	}
	if len(frames) == 0 {
		return 0, nil
	}
	r := &l.rs
	total := 0
	for r.turn.TryTake() {
		for {
			r.pwant = min(len(frames), rxPollBatch)
			if err := r.rc.Control(r.pollRecv); err != nil {
				r.turn.Give()
				return total, link.ErrClosed
			}
			if r.perr != 0 {
				err := fmt.Errorf("afpacket: recvmmsg: %w", r.perr)
				r.turn.Give()
				return total, err
			}
			got := r.pgot
			if n := l.deliverSock(frames, r.pmsgs[:got], true); n > 0 {
				fn(frames[:n])
				total += n
			}
			if got < r.pwant {
				break
			}
		}
		if !r.turn.Give() {
			break
		}
	}
	if total == 0 {
		// Nothing came: let a peer on this CPU run (it may be the one
		// that answers). Not raw: see afxdp's PollBatch.
		unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	}
	return total, nil
}

// deliverSock points frames at the frames of msgs, received into the
// lendable pool (ReadBatch) or into the pollers' buffers (polled: frames
// valid only while the poller holds the turn, never lent), and returns
// how many it filled; truncated or runt messages are counted and skipped.
func (l *Link) deliverSock(frames []link.Frame, msgs []unix.Mmsghdr, polled bool) int {
	r := &l.rs
	n, largest := 0, 0
	var bytes uint64
	for i := range msgs {
		m := &msgs[i]
		size := int(m.Len)
		largest = max(largest, size)
		if m.Hdr.Flags&unix.MSG_TRUNC != 0 || size < link.VNetHdrLen+14 || size > rxSlotSize {
			l.rxTrunc.Add(1)
			continue
		}
		var slot []byte
		var loan uint32
		if polled {
			slot = r.pbufs[i*rxSlotSize : i*rxSlotSize+size : i*rxSlotSize+size]
		} else {
			k := r.pool.at[i]
			slot = r.pool.slots[k].buf[:size:size]
			loan = uint32(k + 1)
		}
		f := &frames[n]
		f.VNet.Decode(slot)
		f.Buf = slot[link.VNetHdrLen:]
		f.Loan, f.LoanOff = loan, 0
		if loan != 0 {
			f.LoanOff = link.VNetHdrLen
		}
		bytes += uint64(size - link.VNetHdrLen)
		n++
	}
	l.rxFrames.Add(uint64(n))
	l.rxBytes.Add(bytes)
	if !polled {
		r.limit = rxSockBatch
		if largest > 0 {
			r.limit = max(rxSockBatchBytes/largest, 1)
		}
	}
	return n
}
