package afpacket

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/stack/link"
)

// The RxFrameRing receive path: a TPACKET_V2 receive ring of fixed-size
// slots, each with a status word of its own. tpacket_rcv copies a frame
// into its slot, writes the slot's header, then (after smp_mb) stores
// TP_STATUS_USER into the slot's status: a slot that reads TP_STATUS_USER
// is complete, whatever other CPUs are filling meanwhile. There is no block
// and no retire timer, so a frame is readable the moment its sender's
// transmit call has run the veth's receive path, and reading it is a load
// from ring memory: a poller (link.Poller) costs no system call per round.
//
// A frame longer than a slot (a GSO super-frame) is flagged TP_STATUS_COPY
// with PACKET_COPY_THRESH set: the kernel queues the whole skb on the
// socket before it publishes the slot, in slot order, and the reader takes
// a run of them with one recvmmsg into lendable buffers of the pool
// (lend.go).
const (
	// frameSlotSize is a slot: the V2 header, the sockaddr_ll, the
	// virtio-net header and a 1514-byte frame fit with room to spare.
	frameSlotSize = 2048
	// frameBlockSize is the ring's allocation unit (32 slots).
	frameBlockSize = 64 << 10
	// DefaultRingFrames is RxFrameRing's default slot count (2 MiB).
	DefaultRingFrames = 1024

	// struct tpacket2_hdr.
	v2Status  = 0
	v2Len     = 4
	v2Snaplen = 8
	v2Mac     = 12
	v2HdrSize = 32

	tpStatusUser = unix.TP_STATUS_USER
	tpStatusCopy = unix.TP_STATUS_COPY
)

// frameRing is the RxFrameRing state. The reader's fields are guarded by
// Link.rxMu, the ring walk by the receive turn; close by Link.statMu.
type frameRing struct {
	fd   int // for getsockopt; owned by file
	file *os.File
	rc   syscall.RawConn
	// life keeps the ring mapped and the socket open while a poller uses
	// them: PollBatch holds it shared, Close takes it before it closes the
	// socket and unmaps the ring.
	life sync.RWMutex

	mem   []byte
	slots int
	cur   int   // next slot to read (turn holder only)
	held  []int // slots the last ReadBatch delivered, given back at the next
	// copies lists the pool buffers the last ReadBatch read TP_STATUS_COPY
	// frames into: assigned until the next ReadBatch.
	copies []int

	turn    link.RxTurn
	holding bool // the reader has the turn, from frames returned until its next call

	// ReadBatch's RawConn.Read callback state.
	rdFrames []link.Frame
	rdN      int
	busy     bool
	flowing  bool // as rxSock.flowing
	readCb   func(uintptr) bool

	// recvmmsg's messages for runs of TP_STATUS_COPY frames, and the
	// loan of each one's buffer (made at the first such frame).
	cmsgs  []unix.Mmsghdr
	ciovs  []unix.Iovec
	cloans []uint32
	// The pollers' buffers for TP_STATUS_COPY frames (rxPollBatch
	// slots, made at the first such frame a poller meets) and the slots
	// of their round.
	pbufs []byte
	pheld []int

	empty atomic.Uint32 // empty polls, for yieldEvery
}

// openFrameRing opens the RxFrameRing socket with its ring on l.ifidx.
func (l *Link) openFrameRing() error {
	r := &l.fr
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("receive socket: %w", err)
	}
	r.fd = fd
	r.file = os.NewFile(uintptr(fd), "afpacket-v2")
	set := func(name string, level, opt, v int) error {
		if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
			return fmt.Errorf("setsockopt %s: %w", name, err)
		}
		return nil
	}
	for _, o := range []struct {
		name       string
		level, opt int
		v          int
	}{
		{"PACKET_VERSION", unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2},
		{"PACKET_VNET_HDR", unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1},
		{"PACKET_IGNORE_OUTGOING", unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1},
		// Any non-zero value: frames longer than a slot are queued whole.
		{"PACKET_COPY_THRESH", unix.SOL_PACKET, unix.PACKET_COPY_THRESH, 1},
	} {
		if err := set(o.name, o.level, o.opt, o.v); err != nil {
			return err
		}
	}
	// The receive buffer bounds only the queued TP_STATUS_COPY frames.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, l.opts.ReceiveBuffer); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, l.opts.ReceiveBuffer); err != nil {
			return fmt.Errorf("receive SO_RCVBUF: %w", err)
		}
	}
	n := l.opts.RingFrames
	req := unix.TpacketReq{
		Block_size: frameBlockSize,
		Block_nr:   uint32(n * frameSlotSize / frameBlockSize),
		Frame_size: frameSlotSize,
		Frame_nr:   uint32(n),
	}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fmt.Errorf("PACKET_RX_RING (V2): %w", err)
	}
	m, err := unix.Mmap(fd, 0, n*frameSlotSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap %d bytes: %w", n*frameSlotSize, err)
	}
	r.mem, r.slots = m, n
	if l.opts.Accept.IsValid() {
		if err := attachFilter(fd, acceptFilter(l.opts.Accept, 0x40000)); err != nil {
			return fmt.Errorf("accept filter: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.ifidx}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if r.rc, err = r.file.SyscallConn(); err != nil {
		return fmt.Errorf("receive socket: %w", err)
	}
	r.held = make([]int, 0, rxSockBatch)
	r.copies = make([]int, 0, rxSockBatch)
	r.pheld = make([]int, 0, rxPollBatch)
	r.readCb = l.frameReady
	l.rs.pool.slots = make([]rxSlot, maxRxSlots)
	return nil
}

// close closes the socket, waking a reader waiting in the netpoller.
func (r *frameRing) close() {
	if r.file != nil {
		_ = r.file.Close()
		r.file = nil
	}
	r.fd = -1
}

// unmap unmaps the ring once no poller is reading it.
func (r *frameRing) unmap() {
	r.life.Lock()
	r.unmapLocked()
	r.life.Unlock()
}

// unmapLocked is unmap with r.life held.
func (r *frameRing) unmapLocked() {
	if r.mem != nil {
		_ = unix.Munmap(r.mem)
		r.mem = nil
	}
}

func (r *frameRing) status(slot int) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.mem[slot*frameSlotSize+v2Status]))
}

// parseFrameSlot checks the header of a slot the kernel handed over and
// returns where its frame lies in the slot, the virtio-net header being
// the VNetHdrLen bytes before start. ok is false for a slot whose frame
// was cut short (snaplen below the frame's length: no room and no copy) or
// whose header points outside the slot.
func parseFrameSlot(slot []byte) (start, end int, ok bool) {
	if len(slot) < v2HdrSize {
		return 0, 0, false
	}
	p := unsafe.Pointer(&slot[0])
	snap := int(*(*uint32)(unsafe.Add(p, v2Snaplen)))
	length := int(*(*uint32)(unsafe.Add(p, v2Len)))
	mac := int(*(*uint16)(unsafe.Add(p, v2Mac)))
	if snap != length || snap < 14 || mac < v2HdrSize+link.VNetHdrLen || mac+snap > len(slot) {
		return 0, 0, false
	}
	return mac, mac + snap, true
}

// takeFrames walks the slots the kernel has handed over, at most
// len(frames) of them (so never onto a slot of its own batch), pointing frames at them (or at the pool buffer or poller
// buffer a TP_STATUS_COPY frame is read into), and appends every slot it
// walked to held; polled says a poller reads (copies go to its own
// buffers, never lent). It returns how many frames it filled. The caller
// holds the receive turn and gives held back when the frames are done.
func (l *Link) takeFrames(frames []link.Frame, held *[]int, polled bool) int {
	r := &l.fr
	n, copies, walked := 0, 0, 0
	var bytes uint64
	for walked < len(frames) {
		st := atomic.LoadUint32(r.status(r.cur))
		if st&tpStatusUser == 0 {
			break
		}
		if st&tpStatusCopy != 0 {
			// This slot and the TP_STATUS_COPY slots handed over right
			// after it: their frames are queued in the same order, and
			// one recvmmsg takes them all (a bulk sender's super-frames
			// come in runs).
			k := 1
			for walked+k < len(frames) {
				s := r.cur + k
				if s >= r.slots {
					s -= r.slots
				}
				if st := atomic.LoadUint32(r.status(s)); st&tpStatusUser == 0 || st&tpStatusCopy == 0 {
					break
				}
				k++
			}
			for range k {
				*held = append(*held, r.cur)
				if r.cur++; r.cur == r.slots {
					r.cur = 0
				}
			}
			walked += k
			got := l.readCopies(frames[n:n+k], copies, polled)
			for _, f := range frames[n : n+got] {
				bytes += uint64(len(f.Buf))
			}
			n += got
			copies += k
			continue
		}
		slot := r.cur
		*held = append(*held, slot)
		if r.cur++; r.cur == r.slots {
			r.cur = 0
		}
		walked++
		mem := r.mem[slot*frameSlotSize : (slot+1)*frameSlotSize]
		start, end, ok := parseFrameSlot(mem)
		if !ok {
			l.rxTrunc.Add(1)
			continue
		}
		f := &frames[n]
		f.VNet.Decode(mem[start-link.VNetHdrLen : start])
		f.Buf = mem[start:end:end]
		f.Loan, f.LoanOff = 0, 0
		bytes += uint64(len(f.Buf))
		n++
	}
	if n > 0 {
		l.rxFrames.Add(uint64(n))
		l.rxBytes.Add(bytes)
	}
	return n
}

// readCopies reads the next len(frames) queued TP_STATUS_COPY frames (the
// kernel queued each before it published its slot) with one recvmmsg, into
// pool buffers, lent (the reader), or into the pollers' buffers from the
// first-th on, and points the front of frames at those that arrived whole.
// It returns how many it filled; the others are counted as cut.
func (l *Link) readCopies(frames []link.Frame, first int, polled bool) int {
	r := &l.fr
	k := len(frames)
	if r.cmsgs == nil {
		r.cmsgs = make([]unix.Mmsghdr, rxSockBatch)
		r.ciovs = make([]unix.Iovec, rxSockBatch)
		r.cloans = make([]uint32, rxSockBatch)
		for i := range r.cmsgs {
			r.cmsgs[i].Hdr.Iov = &r.ciovs[i]
			r.cmsgs[i].Hdr.SetIovlen(1)
		}
	}
	if polled && r.pbufs == nil {
		r.pbufs = make([]byte, rxPollBatch*rxSlotSize)
	}
	for i := range k {
		var buf []byte
		r.cloans[i] = 0
		if polled {
			buf = r.pbufs[(first+i)*rxSlotSize : (first+i+1)*rxSlotSize]
		} else {
			j := l.rs.pool.free()
			r.copies = append(r.copies, j)
			buf = l.rs.pool.slots[j].buf
			r.cloans[i] = uint32(j + 1)
		}
		r.ciovs[i].Base = &buf[0]
		r.ciovs[i].SetLen(len(buf))
	}
	got := 0
	for {
		m, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(r.fd), uintptr(unsafe.Pointer(&r.cmsgs[0])), uintptr(k), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e == 0 {
			got = int(m)
		}
		break
	}
	n := 0
	for i := range got {
		msg := &r.cmsgs[i]
		size := int(msg.Len)
		if msg.Hdr.Flags&unix.MSG_TRUNC != 0 || size < link.VNetHdrLen+14 {
			continue
		}
		buf := unsafe.Slice(r.ciovs[i].Base, rxSlotSize)
		f := &frames[n]
		f.VNet.Decode(buf[:link.VNetHdrLen])
		f.Buf = buf[link.VNetHdrLen:size:size]
		f.Loan, f.LoanOff = r.cloans[i], 0
		if f.Loan != 0 {
			f.LoanOff = link.VNetHdrLen
		}
		n++
	}
	for i := range k {
		r.ciovs[i].Base = nil // the pool's buffers, not kept alive twice
	}
	if n < k {
		l.rxTrunc.Add(uint64(k - n))
	}
	return n
}

// giveBackSlots hands the slots in held back to the kernel, in ring order,
// and empties held.
func (r *frameRing) giveBackSlots(held *[]int) {
	for _, s := range *held {
		atomic.StoreUint32(r.status(s), 0)
	}
	*held = (*held)[:0]
}

// releaseBatch ends the reader's hold on its last batch: slots back to the
// kernel, copy buffers no longer assigned (those held by the stack stay
// out until released), then the turn.
func (l *Link) releaseBatch() {
	r := &l.fr
	if !r.holding {
		return
	}
	r.giveBackSlots(&r.held)
	for _, k := range r.copies {
		l.rs.pool.slots[k].assigned = false
	}
	r.copies = r.copies[:0]
	r.holding = false
	r.turn.Give() // a note left meanwhile was the reader's own
}

// frameReady is ReadBatch's RawConn.Read callback: with the receive turn
// it takes what the ring holds and keeps the turn if that is anything; it
// reports false (sleep until the socket is readable) when the ring is
// empty or a poller holds the turn, unless busy polling.
func (l *Link) frameReady(uintptr) bool {
	r := &l.fr
	r.rdN = 0
	if l.closed.Load() {
		return true
	}
	if !r.turn.TakeWoken() {
		return r.busy
	}
	r.holding = true
	for {
		walked := len(r.held)
		r.rdN = l.takeFrames(r.rdFrames, &r.held, false)
		if r.rdN > 0 {
			return true
		}
		if len(r.held) == walked {
			break // nothing handed over
		}
		// Only bad frames: give their slots back and look again.
		r.giveBackSlots(&r.held)
	}
	l.releaseBatch()
	return r.busy
}

// readFrameRing is ReadBatch for RxFrameRing; l.rxMu is held.
func (l *Link) readFrameRing(frames []link.Frame) (int, error) {
	r := &l.fr
	l.releaseBatch() // the caller is done with the last batch
	// Never more than the ring minus one slot: a batch must not wrap onto
	// its own first slot.
	r.rdFrames = frames[:min(len(frames), rxSockBatch, r.slots-1)]
	defer func() { r.rdFrames = nil }()
	w := l.pollWindow(r.flowing)
	for {
		r.busy = w.busy()
		if err := r.rc.Read(r.readCb); err != nil {
			if l.closed.Load() || errors.Is(err, os.ErrClosed) {
				return 0, link.ErrClosed
			}
			return 0, fmt.Errorf("afpacket: %w", err)
		}
		if l.closed.Load() {
			l.releaseBatch()
			return 0, link.ErrClosed
		}
		if r.rdN > 0 {
			r.flowing = w.flowing(r.flowing)
			return r.rdN, nil
		}
		if r.busy {
			l.busyPolls.Add(1)
			w.yield()
		}
	}
}

// pollFrameRing is PollBatch for RxFrameRing: the ring read with no system
// call; finding it empty, the poller gives the CPU up once and looks again.
func (l *Link) pollFrameRing(frames []link.Frame, fn func([]link.Frame)) (int, error) {
	r := &l.fr
	if !r.life.TryRLock() {
		return 0, link.ErrClosed // Close is under way
	}
	defer r.life.RUnlock()
	if l.closed.Load() || r.mem == nil {
		return 0, link.ErrClosed
	}
	if len(frames) == 0 {
		return 0, nil
	}
	frames = frames[:min(len(frames), rxPollBatch)]
	total := l.pollFrameRound(frames, fn)
	if total == 0 && r.empty.Add(1)%yieldEvery == 0 {
		// Let a peer on this CPU run (it may be the one that answers),
		// then look again at once: the ring costs nothing to read. Not
		// raw: see afxdp's PollBatch.
		unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
		total = l.pollFrameRound(frames, fn)
	}
	return total, nil
}

// yieldEvery is how many empty polls of the ring make one sched_yield.
// A yield is a system call (~0.5 us here) and a frame that lands during
// it waits for it to end, where a poll is a load; so pollers look a few
// times between yields, and a peer on the same CPU still gets the CPU
// within a microsecond or so. BenchmarkRR, 10 alternating runs each
// (07:22-07:25 UTC, load 7-13), every 4th against every empty poll, mean
// p50: across CPUs TCP 6.1 against 6.6 us, UDP 4.7 against 5.2; on one
// CPU TCP 11.0 against 11.2, UDP 10.1 against 9.3 (both bimodal there);
// p99 no worse. Every 16th starved a peer on the same CPU (TCP 12.6-18.2
// us in 3 runs).
const yieldEvery = 4

// pollFrameRound takes what the ring holds, in rounds of len(frames), and
// runs fn on each, if it gets the receive turn.
func (l *Link) pollFrameRound(frames []link.Frame, fn func([]link.Frame)) int {
	r := &l.fr
	total := 0
	for r.turn.TryTake() {
		for {
			walked := len(r.pheld)
			n := l.takeFrames(frames, &r.pheld, true)
			if n > 0 {
				fn(frames[:n])
				total += n
			}
			more := len(r.pheld)-walked == len(frames)
			r.giveBackSlots(&r.pheld)
			if !more {
				break
			}
		}
		if !r.turn.Give() {
			break
		}
	}
	return total
}
