package afxdp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	ebpflink "github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/afpacket"
)

// Errors returned by Open and WriteBatch. The frame and transmit errors are
// the link package's, shared with the other links.
var (
	ErrBadOptions    = errors.New("afxdp: bad options")
	ErrFrameTooLong  = link.ErrFrameTooLong
	ErrFrameTooShort = link.ErrFrameTooShort
	// ErrNoOffload: a frame asks for checksum offload or GSO, which an XSK
	// cannot transmit.
	ErrNoOffload = link.ErrNoOffload
	// ErrTxStalled: the kernel kept the transmit ring full for longer than
	// Options.TxRetryBudget.
	ErrTxStalled = link.ErrTxStalled
)

// RxMode selects the receive path.
type RxMode int

const (
	// RxAFPacket receives through an afpacket.Link (the mixed link). The
	// default: XSK transmit + AF_PACKET receive measured fastest here.
	RxAFPacket RxMode = iota
	// RxXSK receives through the XSK, fed by an XDP program in driver mode.
	RxXSK
)

func (m RxMode) String() string {
	switch m {
	case RxAFPacket:
		return "afpacket"
	case RxXSK:
		return "xsk"
	}
	return fmt.Sprintf("RxMode(%d)", int(m))
}

// Options shape a link. The zero value gives the defaults.
type Options struct {
	Rx RxMode
	// Queue is the interface queue the XSK binds to (veth: 0).
	Queue int
	// FrameSize is the UMEM chunk size: 2048 or 4096 (default 4096 with
	// RxXSK, 2048 otherwise).
	FrameSize int
	// TxFrames is the number of UMEM frames (and transmit/completion ring
	// entries) for transmission, a power of two (default 2048).
	TxFrames int
	// RxFrames is the number of UMEM frames (and fill/receive ring
	// entries) for reception with RxXSK, a power of two (default 2048).
	RxFrames int
	// TxRetryBudget bounds how long WriteBatch waits for room in the
	// transmit ring (default 1 s).
	TxRetryBudget time.Duration
	// AFPacket configures the receive half of the mixed link (its Tx is
	// forced to TxSendmmsg: that half never transmits, so it maps no
	// transmit ring).
	AFPacket afpacket.Options
}

func pow2(n int) bool { return n > 0 && n&(n-1) == 0 }

func (o *Options) fill() error {
	if o.FrameSize == 0 {
		o.FrameSize = 2048
		if o.Rx == RxXSK {
			o.FrameSize = 4096
		}
	}
	if o.TxFrames == 0 {
		o.TxFrames = 2048
	}
	if o.RxFrames == 0 {
		o.RxFrames = 2048
	}
	if o.TxRetryBudget == 0 {
		o.TxRetryBudget = time.Second
	}
	switch {
	case o.Rx != RxAFPacket && o.Rx != RxXSK:
		return fmt.Errorf("%w: Rx %v", ErrBadOptions, o.Rx)
	case o.FrameSize != 2048 && o.FrameSize != 4096:
		return fmt.Errorf("%w: FrameSize %d", ErrBadOptions, o.FrameSize)
	case !pow2(o.TxFrames) || o.TxFrames > 1<<16:
		return fmt.Errorf("%w: TxFrames %d", ErrBadOptions, o.TxFrames)
	case !pow2(o.RxFrames) || o.RxFrames > 1<<16:
		return fmt.Errorf("%w: RxFrames %d", ErrBadOptions, o.RxFrames)
	case o.Queue < 0 || o.TxRetryBudget < 0:
		return fmt.Errorf("%w: Queue %d TxRetryBudget %v", ErrBadOptions, o.Queue, o.TxRetryBudget)
	}
	return nil
}

// Stats are a link's counters since Open.
type Stats struct {
	RxFrames, RxBytes uint64
	TxFrames, TxBytes uint64
	// TxRetries counts waits for room in the transmit ring and send calls
	// the kernel refused (EBUSY/ENOBUFS).
	TxRetries uint64
	// RxOversize counts frames the mixed link's receive half dropped
	// because they exceed MaxFrame (GSO super-frames from a kernel peer).
	RxOversize uint64
	// XSK drop counters (XDP_STATISTICS).
	RxDropped, RxRingFull, RxFillEmpty, TxInvalid uint64
	// PolledFrames counts frames taken by PollBatch (RxXSK).
	PolledFrames uint64
	// AFPacket holds the mixed link's receive-half counters.
	AFPacket afpacket.Stats
}

// Link is a link.Link with XSK transmission and either XSK or AF_PACKET
// reception. ReadBatch must not be called concurrently; WriteBatch,
// PollBatch, Stats and Close may be called from any goroutine.
type Link struct {
	opts   Options
	x      *xsk
	ap     *afpacket.Link
	xsks   *ebpf.Map
	prog   *ebpf.Program
	attach ebpflink.Link
	mtu    int
	mac    net.HardwareAddr
	closed atomic.Bool

	txMu   sync.Mutex
	txFree []uint64 // UMEM addresses free for transmission

	// RxXSK. rxLife is read-held by ReadBatch and PollBatch while they
	// touch the rings, write-held by Close while it unmaps them. wait is
	// a duplicate of the XSK's descriptor registered with the Go
	// netpoller, where the blocked reader sleeps (so a reader costs no
	// thread and, with one P, does not hold the P in a blocking poll);
	// closing it wakes the reader.
	rxLife sync.RWMutex
	wait   *os.File
	waitRC syscall.RawConn
	// turn orders the blocked reader and pollers (link.Poller); holding
	// says the reader has it, from the frames it returned until its next
	// call. The fill ring is written only by the holder of the turn.
	turn     link.RxTurn
	holding  bool
	rxHeld   []uint64     // addresses delivered by the last ReadBatch
	rdFrames []link.Frame // the blocked reader's frames, for readReady
	rdN      int
	readCb   func(uintptr) bool // l.readReady as a func value, made once
	pollHeld []uint64           // addresses a poller is running fn on

	rxFrames, rxBytes, rxOversize atomic.Uint64
	txFrames, txBytes, txRetry    atomic.Uint64
	polled                        atomic.Uint64
}

var (
	_ link.Link   = (*Link)(nil)
	_ link.Poller = (*Link)(nil)
)

// Open opens a link on the interface ifname of the calling thread's network
// namespace.
func Open(ifname string, opts Options) (*Link, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("afxdp: %w", err)
	}
	if ifi.MTU+14 > opts.FrameSize {
		return nil, fmt.Errorf("%w: MTU %d does not fit FrameSize %d", ErrBadOptions, ifi.MTU, opts.FrameSize)
	}
	l := &Link{opts: opts, mtu: ifi.MTU, mac: append(net.HardwareAddr(nil), ifi.HardwareAddr...)}
	if err := l.open(ifi.Index, ifname); err != nil {
		l.release()
		return nil, fmt.Errorf("afxdp: open %s: %w", ifname, err)
	}
	return l, nil
}

func (l *Link) open(ifindex int, ifname string) error {
	o := &l.opts
	if o.Rx == RxAFPacket {
		// The XSK transmits: the AF_PACKET half needs no transmit ring.
		o.AFPacket.Tx = afpacket.TxSendmmsg
		ap, err := afpacket.Open(ifname, o.AFPacket)
		if err != nil {
			return err
		}
		l.ap = ap
	}
	frames, rxFrames := o.TxFrames, 0
	fillSize, rxSize := uint32(64), uint32(0) // a UMEM needs a fill ring even if unused
	if o.Rx == RxXSK {
		rxFrames = o.RxFrames
		frames += rxFrames
		fillSize, rxSize = uint32(rxFrames), uint32(rxFrames)
	}
	x, err := newXSK(ifindex, o.Queue, frames, o.FrameSize, fillSize, uint32(o.TxFrames), rxSize, uint32(o.TxFrames))
	if err != nil {
		return err
	}
	l.x = x
	l.txFree = make([]uint64, 0, o.TxFrames)
	for i := rxFrames; i < frames; i++ {
		l.txFree = append(l.txFree, uint64(i*o.FrameSize))
	}
	if o.Rx == RxXSK {
		for i := 0; i < rxFrames; i++ {
			*x.fill.addr(*x.fill.prod + uint32(i)) = uint64(i * o.FrameSize)
		}
		x.fill.publish(uint32(rxFrames))
		l.rxHeld = make([]uint64, 0, rxFrames)
		l.pollHeld = make([]uint64, 0, xskPollBatch)
		if err := l.attachXDP(ifindex); err != nil {
			return err
		}
		wfd, err := unix.FcntlInt(uintptr(x.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("dup XSK: %w", err)
		}
		// The XSK was made non-blocking: os.NewFile registers the
		// duplicate with the netpoller.
		l.wait = os.NewFile(uintptr(wfd), "xsk")
		if l.waitRC, err = l.wait.SyscallConn(); err != nil {
			return fmt.Errorf("XSK: %w", err)
		}
		l.readCb = l.readReady
	}
	return nil
}

func (l *Link) attachXDP(ifindex int) error {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: uint32(l.opts.Queue + 1)})
	if err != nil {
		return fmt.Errorf("create XSKMAP: %w", err)
	}
	l.xsks = m
	if err := m.Put(uint32(l.opts.Queue), uint32(l.x.fd)); err != nil {
		return fmt.Errorf("XSKMAP put: %w", err)
	}
	if l.prog, err = newRedirectProgram(m); err != nil {
		return err
	}
	l.attach, err = ebpflink.AttachXDP(ebpflink.XDPOptions{Program: l.prog, Interface: ifindex, Flags: ebpflink.XDPDriverMode})
	if err != nil {
		return fmt.Errorf("attach XDP (driver mode): %w", err)
	}
	return nil
}

func (l *Link) release() {
	if l.attach != nil {
		_ = l.attach.Close()
		l.attach = nil
	}
	if l.prog != nil {
		_ = l.prog.Close()
		l.prog = nil
	}
	if l.xsks != nil {
		_ = l.xsks.Close()
		l.xsks = nil
	}
	if l.x != nil {
		l.x.close()
		l.x = nil
	}
	if l.ap != nil {
		_ = l.ap.Close()
	}
	if l.wait != nil {
		_ = l.wait.Close()
		l.wait = nil
	}
}

// MTU is the interface's MTU at Open.
func (l *Link) MTU() int { return l.mtu }

// MaxFrame is MTU+14: the XSK transmit path has no GSO.
func (l *Link) MaxFrame() int { return l.mtu + 14 }

// HardwareAddr is the interface's MAC address at Open.
func (l *Link) HardwareAddr() net.HardwareAddr { return l.mac }

// Caps is 0: an XSK transmits neither partial checksums nor GSO frames.
func (l *Link) Caps() link.Caps { return 0 }

// Options returns the options the link runs with, defaults filled in.
func (l *Link) Options() Options { return l.opts }

// Stats returns the link's counters.
func (l *Link) Stats() Stats {
	s := Stats{
		RxFrames: l.rxFrames.Load(), RxBytes: l.rxBytes.Load(),
		TxFrames: l.txFrames.Load(), TxBytes: l.txBytes.Load(),
		TxRetries: l.txRetry.Load(), RxOversize: l.rxOversize.Load(),
	}
	s.PolledFrames = l.polled.Load()
	if l.ap != nil {
		s.AFPacket = l.ap.Stats()
		s.RxFrames += s.AFPacket.RxFrames
		s.RxBytes += s.AFPacket.RxBytes
	}
	l.txMu.Lock()
	if x := l.x; x != nil && !l.closed.Load() {
		var st unix.XDPStatistics
		n := uint32(unsafeSizeofStats)
		if getsockopt(x.fd, unix.XDP_STATISTICS, &st, &n) == nil {
			s.RxDropped, s.RxRingFull, s.RxFillEmpty, s.TxInvalid = st.Rx_dropped, st.Rx_ring_full, st.Rx_fill_ring_empty_descs, st.Tx_invalid_descs
		}
	}
	l.txMu.Unlock()
	return s
}

// Close wakes a pending ReadBatch, waits for it and any WriteBatch in
// progress, detaches the XDP program and releases everything.
func (l *Link) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	if l.ap != nil {
		_ = l.ap.Close() // wakes a ReadBatch sleeping in the afpacket half
	}
	if l.wait != nil {
		// Wakes a ReadBatch asleep in the netpoller; the XSK itself
		// stays open (the duplicate is only for waiting) until release.
		_ = l.wait.Close()
	}
	l.rxLife.Lock()
	l.txMu.Lock()
	l.release()
	l.txMu.Unlock()
	l.rxLife.Unlock()
	return nil
}

// WriteBatch copies frames into UMEM, queues them on the transmit ring and
// has the kernel send them; it returns once the kernel has taken them all.
// Safe for concurrent use.
func (l *Link) WriteBatch(frames []link.Frame) (int, error) {
	valid, verr := link.CheckFrames(frames, l.mtu, l.MaxFrame(), l.Caps())
	l.txMu.Lock()
	defer l.txMu.Unlock()
	if l.closed.Load() {
		return 0, link.ErrClosed
	}
	x := l.x
	done := 0
	bo := l.backoff()
	for done < valid {
		l.reclaim()
		k := min(valid-done, len(l.txFree), int(x.tx.free()))
		if k == 0 {
			if err := l.kick(); err != nil {
				return done, err
			}
			l.reclaim()
			if len(l.txFree) == 0 || x.tx.free() == 0 {
				if err := bo.Wait(); err != nil {
					return done, err
				}
			}
			continue
		}
		prod := *x.tx.prod
		var bytes uint64
		for i := 0; i < k; i++ {
			f := &frames[done+i]
			addr := l.txFree[len(l.txFree)-1]
			l.txFree = l.txFree[:len(l.txFree)-1]
			copy(x.umem[addr:addr+uint64(len(f.Buf))], f.Buf)
			d := x.tx.xdpDesc(prod + uint32(i))
			d.Addr, d.Len, d.Options = addr, uint32(len(f.Buf)), 0
			bytes += uint64(len(f.Buf))
		}
		x.tx.publish(uint32(k))
		if err := l.kick(); err != nil {
			return done, err
		}
		done += k
		l.txFrames.Add(uint64(k))
		l.txBytes.Add(bytes)
	}
	if verr != nil {
		return done, verr
	}
	return done, nil
}

// reclaim moves completed transmit frames back to the free list.
func (l *Link) reclaim() {
	c := &l.x.comp
	n := c.ready()
	cons := *c.cons
	for i := uint32(0); i < n; i++ {
		l.txFree = append(l.txFree, *c.addr(cons + i))
	}
	c.consume(n)
}

// kick asks the kernel to transmit until it has taken every queued
// descriptor. In copy mode each send call moves a limited budget.
func (l *Link) kick() error {
	x := l.x
	bo := l.backoff()
	for {
		queued := *x.tx.prod - atomic.LoadUint32(x.tx.cons)
		if queued == 0 {
			break
		}
		var e syscall.Errno
		if queued <= rawKickMax {
			// A few frames (a request, a reply): the call cannot block
			// (MSG_DONTWAIT) and is short, so the runtime's
			// entersyscall/exitsyscall (0.1-0.3 us here, on the
			// latency path of every send) is skipped.
			_, _, e = unix.RawSyscall6(unix.SYS_SENDTO, uintptr(x.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		} else {
			// A burst: the kernel may take long to move it; the
			// runtime may hand the P to another thread meanwhile.
			_, _, e = unix.Syscall6(unix.SYS_SENDTO, uintptr(x.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		}
		switch e {
		case 0, unix.EINTR, unix.EAGAIN:
			// EAGAIN: budget used up, more to send.
		case unix.EBUSY, unix.ENOBUFS:
			if err := bo.Wait(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("afxdp: sendto: %w", e)
		}
	}
	return nil
}

// rawKickMax is the most queued frames kick sends with a raw system call:
// in copy mode the sender's own call runs the peer's receive path (the
// veth's NAPI, the XDP program, the copy into the peer's UMEM), a
// microsecond or two per frame, so a small batch holds the thread for a
// few microseconds at most.
const rawKickMax = 16

// backoff returns the pacing of one transmit operation's retries.
func (l *Link) backoff() link.TxBackoff {
	return link.NewTxBackoff(l.opts.TxRetryBudget, &l.txRetry)
}

// ReadBatch blocks until at least one frame has arrived and fills
// frames[:n]. Frames point into UMEM (or the mixed link's AF_PACKET
// buffers) and stay valid until the next ReadBatch or Close; with RxXSK
// the caller holds the link's receive turn until then (link.Poller).
func (l *Link) ReadBatch(frames []link.Frame) (int, error) {
	if len(frames) == 0 {
		return 0, nil
	}
	if l.ap != nil {
		return l.readAFPacket(frames)
	}
	l.rxLife.RLock()
	defer l.rxLife.RUnlock()
	if l.closed.Load() {
		return 0, link.ErrClosed
	}
	if l.holding {
		// The caller is done with the last batch: its frames go back
		// to the fill ring before the turn does.
		l.refill(&l.rxHeld)
		l.holding = false
		l.turn.Give() // a note left meanwhile was the reader's own
	}
	l.rdFrames, l.rdN = frames, 0
	for {
		err := l.waitRC.Read(l.readCb)
		if err != nil || l.closed.Load() {
			if l.closed.Load() || errors.Is(err, os.ErrClosed) {
				return 0, link.ErrClosed
			}
			return 0, fmt.Errorf("afxdp: %w", err)
		}
		if l.rdN > 0 {
			l.rdFrames = nil
			return l.rdN, nil
		}
	}
}

// readReady is ReadBatch's RawConn.Read callback: with the receive turn,
// it takes what the receive ring holds and keeps the turn if that is
// anything; it reports false (sleep until the XSK is readable) when the
// ring is empty or a poller holds the turn (the poller takes the frames).
func (l *Link) readReady(uintptr) bool {
	if l.closed.Load() {
		return true
	}
	if !l.turn.TakeWoken() {
		return false
	}
	if l.rdN = l.takeRx(l.rdFrames, &l.rxHeld); l.rdN == 0 {
		l.turn.Give()
		return false
	}
	l.holding = true
	return true
}

// takeRx points frames at what the receive ring holds, up to len(frames),
// consumes those entries and appends their UMEM chunks to held. The caller
// holds the receive turn.
func (l *Link) takeRx(frames []link.Frame, held *[]uint64) int {
	x := l.x
	n := int(min(x.rx.ready(), uint32(len(frames))))
	if n == 0 {
		return 0
	}
	cons := *x.rx.cons
	var bytes uint64
	for i := 0; i < n; i++ {
		d := x.rx.xdpDesc(cons + uint32(i))
		// Copy mode: addresses are chunk-aligned, the frame sits at
		// Addr (which includes the headroom).
		f := &frames[i]
		f.Buf = x.umem[d.Addr : d.Addr+uint64(d.Len) : d.Addr+uint64(d.Len)]
		f.VNet = link.VNetHdr{}
		f.Loan, f.LoanOff = 0, 0
		*held = append(*held, d.Addr&^uint64(l.opts.FrameSize-1))
		bytes += uint64(d.Len)
	}
	x.rx.consume(uint32(n))
	l.rxFrames.Add(uint64(n))
	l.rxBytes.Add(bytes)
	return n
}

// refill gives the chunks in held back to the fill ring and empties held.
// The fill ring always has room: it and the receive ring share RxFrames
// chunks. The caller holds the receive turn.
func (l *Link) refill(held *[]uint64) {
	n := len(*held)
	if n == 0 {
		return
	}
	x := l.x
	prod := *x.fill.prod
	for i, a := range *held {
		*x.fill.addr(prod + uint32(i)) = a
	}
	x.fill.publish(uint32(n))
	*held = (*held)[:0]
}

// xskPollBatch is the most frames one PollBatch round takes: a poller
// waits for a reply or two, not for bulk.
const xskPollBatch = 8

// PollBatch implements link.Poller. With RxXSK it reads the receive ring,
// memory shared with the kernel, with no system call; finding it empty, it
// gives the CPU up (sched_yield). The mixed link polls its AF_PACKET half.
func (l *Link) PollBatch(frames []link.Frame, fn func([]link.Frame)) (int, error) {
	if l.ap != nil {
		return l.ap.PollBatch(frames, func(fs []link.Frame) {
			if k := l.dropOversize(fs); k > 0 {
				fn(fs[:k])
			}
		})
	}
	if !l.rxLife.TryRLock() {
		return 0, link.ErrClosed // Close is under way
	}
	defer l.rxLife.RUnlock()
	if l.closed.Load() {
		return 0, link.ErrClosed
	}
	if len(frames) == 0 {
		return 0, nil
	}
	frames = frames[:min(len(frames), xskPollBatch)]
	total := l.pollRing(frames, fn)
	if total == 0 {
		// Let a peer on this CPU run (it may be the one that answers),
		// then look again at once: the ring costs nothing to read, and
		// what the peer sent meanwhile is taken without another round
		// of the caller's loop.
		// Not a raw system call, though that would halve its cost
		// (~0.3 vs ~0.6 us here): a yielder may be off the CPU for long
		// (a peer, or another process, runs), and only in a system call
		// the runtime knows of can another thread take the processor
		// meanwhile. Raw, p99 across CPUs rose from 0.1-0.4 ms to
		// 0.7-3 ms on BenchmarkRR (3 alternating rounds, loaded machine).
		unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
		total = l.pollRing(frames, fn)
	}
	l.polled.Add(uint64(total))
	return total, nil
}

// pollRing takes what the receive ring holds, in rounds of len(frames),
// and runs fn on each round, if it gets the receive turn; it returns how
// many frames fn saw.
func (l *Link) pollRing(frames []link.Frame, fn func([]link.Frame)) int {
	total := 0
	for l.turn.TryTake() {
		for {
			n := l.takeRx(frames, &l.pollHeld)
			if n > 0 {
				fn(frames[:n])
				total += n
				l.refill(&l.pollHeld)
			}
			if n < len(frames) {
				break
			}
		}
		if !l.turn.Give() {
			break
		}
	}
	return total
}

// dropOversize drops, counted, frames above MaxFrame (GSO super-frames
// from a kernel peer: this link promises MaxFrame = MTU+14) and returns
// how many remain at the front of frames.
func (l *Link) dropOversize(frames []link.Frame) int {
	k := 0
	for i := range frames {
		if len(frames[i].Buf) > l.mtu+14 {
			l.rxOversize.Add(1)
			continue
		}
		frames[k] = frames[i]
		k++
	}
	return k
}

func (l *Link) readAFPacket(frames []link.Frame) (int, error) {
	for {
		n, err := l.ap.ReadBatch(frames)
		if err != nil {
			return 0, err
		}
		if k := l.dropOversize(frames[:n]); k > 0 {
			return k, nil
		}
	}
}
