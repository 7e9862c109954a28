package afpacket

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/stack/link"
)

// Errors returned by Open and WriteBatch. The frame and transmit errors are
// the link package's, shared with the other links.
var (
	// ErrBadOptions: an Options field is out of range.
	ErrBadOptions = errors.New("afpacket: bad options")
	// ErrFrameTooLong: a frame exceeds MaxFrame.
	ErrFrameTooLong = link.ErrFrameTooLong
	// ErrFrameTooShort: a frame is shorter than an Ethernet header.
	ErrFrameTooShort = link.ErrFrameTooShort
	// ErrNotGSO: a frame longer than MTU+14 lacks a GSO type in its VNetHdr.
	ErrNotGSO = link.ErrNotGSO
	// ErrTxStalled: the kernel kept refusing frames (ENOBUFS/EAGAIN) for
	// longer than Options.TxRetryBudget.
	ErrTxStalled = link.ErrTxStalled
)

// TxMode selects how WriteBatch hands frames to the kernel.
type TxMode int

const (
	// TxRing copies frames into a TPACKET_V3 transmit ring mapped beside
	// the receive ring (256 x 2 KiB slots by default) and flushes it with
	// one send call per batch. Frames that do not fit a slot (GSO
	// super-frames) go out by sendmsg on a second, ring-less socket. The
	// default: it measured faster than sendmmsg here (about 490k vs 250k
	// pps at 60 B, 460k vs 230k at 1514 B, same run, shared machine).
	// A frame the kernel rejects (a virtio-net header it finds invalid) is
	// skipped without an error; TxSendmmsg reports it.
	TxRing TxMode = iota
	// TxSendmmsg sends each batch with one sendmmsg call (one message per
	// frame: virtio-net header + frame) and maps no transmit ring.
	TxSendmmsg
)

func (m TxMode) String() string {
	switch m {
	case TxSendmmsg:
		return "sendmmsg"
	case TxRing:
		return "ring"
	}
	return fmt.Sprintf("TxMode(%d)", int(m))
}

// RxMode selects how ReadBatch takes frames from the kernel.
type RxMode int

const (
	// RxRecvmmsg reads a ring-less packet socket with recvmmsg, up to 64
	// frames per call, each into a buffer of its own sized for a 64 KiB GSO
	// frame (pages the kernel never wrote stay untouched), and waits in the
	// Go netpoller. Every frame is delivered as soon as the kernel queued
	// it, complete: the socket queue hands over whole skbs, so no reading
	// can race the kernel's copy. The default: correct by construction,
	// immediate (60-byte round trip p50 about 20-30 us here), at the price
	// of one more copy than the ring.
	RxRecvmmsg RxMode = iota
	// RxRing maps a TPACKET_V3 receive ring and reads only blocks the
	// kernel has retired (TP_STATUS_USER on the block, which the kernel
	// publishes after a write barrier): the only packets the ABI
	// guarantees complete. A block is retired when full or after
	// BlockTimeout, so a lone frame waits up to BlockTimeout (1 ms by
	// default) unless BusyPoll catches the retirement. For bulk receive.
	RxRing
	// RxFrameRing maps a TPACKET_V2 receive ring of RingFrames 2 KiB
	// slots, each with a status of its own that the kernel stores after
	// the frame, behind a full barrier: a frame is readable, complete, as
	// soon as it is written, with no block and no retire timer. A reader
	// polling it (link.Poller) reads ring memory, with no system call per
	// round: the lowest-latency receive path here (a 64-byte frame is in
	// the peer's ring when the sender's sendto returns, about 1.3 us
	// across CPUs against about 2.8 for an XSK's; see doc.go). Frames
	// point into the ring until the next ReadBatch; frames longer than a
	// slot (GSO super-frames) are queued whole by the kernel
	// (PACKET_COPY_THRESH) and read into lendable buffers, in order.
	RxFrameRing
)

func (m RxMode) String() string {
	switch m {
	case RxRecvmmsg:
		return "recvmmsg"
	case RxRing:
		return "ring"
	case RxFrameRing:
		return "framering"
	}
	return fmt.Sprintf("RxMode(%d)", int(m))
}

// Defaults of Options. A link's receive ring costs BlockSize*Blocks bytes of
// locked kernel memory, so the default is modest (4 MiB): a host runs about
// 100 links.
const (
	DefaultBlockSize     = 256 << 10
	DefaultBlocks        = 16
	DefaultBlockTimeout  = time.Millisecond
	DefaultTxRingFrames  = 256
	DefaultTxBatch       = 64
	DefaultTxRetryBudget = time.Second
	// DefaultReceiveBuffer rides out a reader descheduled for tens of
	// milliseconds at line rate on a shared machine (4 MiB lost frames
	// beside a kernel socket with 64 MiB); the kernel charges only what
	// is queued.
	DefaultReceiveBuffer = 32 << 20
)

// Options shape a link. The zero value gives the defaults.
type Options struct {
	// Rx picks the receive path (default RxRecvmmsg).
	Rx RxMode
	// BlockSize is the size of one receive-ring block: a power of two, at
	// least 128 KiB so a 64 KiB GSO frame fits one block.
	BlockSize int
	// ReceiveBuffer is the RxRecvmmsg socket's receive buffer
	// (SO_RCVBUFFORCE), default DefaultReceiveBuffer: a bound on what the
	// kernel queues while the reader is away, not memory taken up front.
	ReceiveBuffer int
	// Blocks is the number of receive-ring blocks (>= 2).
	Blocks int
	// RingFrames is the number of 2 KiB slots of the RxFrameRing ring, a
	// multiple of 32 (default DefaultRingFrames).
	RingFrames int
	// BlockTimeout is the kernel's retire timer for a partly filled block,
	// rounded up to whole milliseconds. It bounds how long a sleeping
	// ReadBatch waits for a frame that has already arrived.
	BlockTimeout time.Duration
	// BusyPoll, if positive, makes ReadBatch poll the socket (RxRecvmmsg)
	// or the ring (RxRing) without sleeping for this long before it
	// sleeps. It buys latency with CPU time. Off by default: a host runs
	// many links on few cores. With RxRing it catches only retired blocks.
	BusyPoll time.Duration
	// Tx picks the transmit path (default TxRing).
	Tx TxMode
	// TxRingFrames is the number of 2 KiB slots of the TxRing transmit ring
	// (rounded up to a multiple of 32).
	TxRingFrames int
	// NoQdiscBypass keeps the interface's qdisc on the transmit path
	// (PACKET_QDISC_BYPASS is set by default).
	NoQdiscBypass bool
	// TxRetryBudget is how long WriteBatch keeps retrying a frame the
	// kernel refuses with ENOBUFS/EAGAIN before giving up with ErrTxStalled.
	TxRetryBudget time.Duration
	// Accept, when valid, attaches a classic BPF filter to the sockets so
	// the kernel hands over only ARP asking for Accept's address and IPv4
	// to that address or a broadcast (limited, or Accept's subnet's): the
	// first step of the fast path, done where the frame already is. Frames
	// for other addresses on the same veth (a kernel stack sharing it, as
	// the kernel baselines do) then cost the user-level stack nothing.
	Accept netip.Prefix
}

func (o *Options) fill() error {
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.Blocks == 0 {
		o.Blocks = DefaultBlocks
	}
	if o.BlockTimeout == 0 {
		o.BlockTimeout = DefaultBlockTimeout
	}
	if o.TxRingFrames == 0 {
		o.TxRingFrames = DefaultTxRingFrames
	}
	if o.TxRetryBudget == 0 {
		o.TxRetryBudget = DefaultTxRetryBudget
	}
	if o.ReceiveBuffer == 0 {
		o.ReceiveBuffer = DefaultReceiveBuffer
	}
	if o.RingFrames == 0 {
		o.RingFrames = DefaultRingFrames
	}
	switch {
	case o.BlockSize < 128<<10 || o.BlockSize&(o.BlockSize-1) != 0 || o.BlockSize > 1<<30:
		return fmt.Errorf("%w: BlockSize %d is not a power of two in [128 KiB, 1 GiB]", ErrBadOptions, o.BlockSize)
	case o.Blocks < 2 || o.Blocks > 1<<16:
		return fmt.Errorf("%w: Blocks %d", ErrBadOptions, o.Blocks)
	case o.BlockTimeout < 0 || o.BlockTimeout > time.Minute:
		return fmt.Errorf("%w: BlockTimeout %v", ErrBadOptions, o.BlockTimeout)
	case o.BusyPoll < 0:
		return fmt.Errorf("%w: BusyPoll %v", ErrBadOptions, o.BusyPoll)
	case o.Rx != RxRecvmmsg && o.Rx != RxRing && o.Rx != RxFrameRing:
		return fmt.Errorf("%w: Rx %v", ErrBadOptions, o.Rx)
	case o.Tx != TxSendmmsg && o.Tx != TxRing:
		return fmt.Errorf("%w: Tx %v", ErrBadOptions, o.Tx)
	case o.ReceiveBuffer < 0 || o.ReceiveBuffer > 1<<30:
		return fmt.Errorf("%w: ReceiveBuffer %d not in [0, 1 GiB]", ErrBadOptions, o.ReceiveBuffer)
	case o.RingFrames < 32 || o.RingFrames > 1<<16 || o.RingFrames%(frameBlockSize/frameSlotSize) != 0:
		return fmt.Errorf("%w: RingFrames %d is not a multiple of 32 in [32, 65536]", ErrBadOptions, o.RingFrames)
	case o.TxRingFrames < 0 || o.TxRingFrames > 1<<16:
		return fmt.Errorf("%w: TxRingFrames %d", ErrBadOptions, o.TxRingFrames)
	}
	o.TxRingFrames = (o.TxRingFrames + txFramesPerBlock - 1) &^ (txFramesPerBlock - 1)
	return nil
}

// Stats are a link's counters since Open.
type Stats struct {
	RxFrames, RxBytes uint64
	TxFrames, TxBytes uint64
	// TxRetries counts transmit attempts the kernel refused with
	// ENOBUFS/EAGAIN and that were retried after a back-off.
	TxRetries uint64
	// RingDrops counts frames the kernel dropped because the receive ring
	// (RxRing) or the receive buffer (RxRecvmmsg) was full
	// (PACKET_STATISTICS tp_drops).
	RingDrops uint64
	// RxTruncated counts received frames not delivered because they were
	// cut short (did not fit a ring block or a receive buffer) or their
	// ring header was inconsistent.
	RxTruncated uint64
	// RxResyncs counts times the RxRing reader found the ring readable
	// but its next block still the kernel's, and skipped ahead to the
	// first retired block (a lost position; expected to stay 0).
	RxResyncs uint64
	// BusyPolls counts the reads that found nothing while ReadBatch was
	// busy-polling (Options.BusyPoll, SetBusyPoll) instead of sleeping.
	BusyPolls uint64
}

// maxFrameGSO is the largest GSO frame: a 64 KiB IP packet plus Ethernet
// header (same bound as the mem link).
const maxFrameGSO = 65550

// Link is a link.Link on one interface. ReadBatch must not be called
// concurrently; WriteBatch, Stats and Close may be called from any
// goroutine.
type Link struct {
	fd     int // RxRing: receive (and TxRing) socket; RxRecvmmsg: TxRing socket or -1
	sendFd int // socket for sendmmsg: fd, or with TxRing a ring-less one
	evfd   int // RxRing: eventfd that wakes a sleeping ReadBatch on Close
	rs     rxSock
	fr     frameRing // RxFrameRing
	mmap   []byte
	mtu    int
	mac    net.HardwareAddr
	ifidx  int
	opts   Options
	closed atomic.Bool
	// busyPoll is SetBusyPoll's budget in nanoseconds (RxRecvmmsg).
	busyPoll atomic.Int64
	// lastTx is when a frame last left, as time since epoch (0: never),
	// kept only while busyPoll is on.
	lastTx atomic.Int64
	epoch  time.Time

	rxMu sync.Mutex
	rx   rxRing

	txMu sync.Mutex
	tx   txState

	rxFrames, rxBytes, rxTrunc atomic.Uint64
	rxResync                   atomic.Uint64
	busyPolls                  atomic.Uint64
	txFrames, txBytes, txRetry atomic.Uint64

	statMu    sync.Mutex
	ringDrops uint64
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
		return nil, fmt.Errorf("afpacket: %w", err)
	}
	l := &Link{fd: -1, sendFd: -1, evfd: -1, rs: rxSock{fd: -1}, fr: frameRing{fd: -1}, mtu: ifi.MTU, mac: append(net.HardwareAddr(nil), ifi.HardwareAddr...), ifidx: ifi.Index, opts: opts, epoch: time.Now()}
	if err := l.open(); err != nil {
		l.release()
		return nil, fmt.Errorf("afpacket: open %s: %w", ifname, err)
	}
	return l, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (l *Link) open() error {
	ringRx, ringTx := l.opts.Rx == RxRing, l.opts.Tx == TxRing
	if ringRx || ringTx {
		if err := l.openRings(ringRx, ringTx); err != nil {
			return err
		}
	}
	if ringTx || !ringRx {
		// With a transmit ring, every send on the ring socket transmits the
		// ring: frames too big for a slot need a socket of their own. With
		// RxRecvmmsg the receive socket is non-blocking and stays out of
		// the transmit path.
		if err := l.openSender(); err != nil {
			return err
		}
	} else {
		l.sendFd = l.fd
	}
	if ringRx {
		evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return fmt.Errorf("eventfd: %w", err)
		}
		l.evfd = evfd
	} else if l.opts.Rx == RxFrameRing {
		if err := l.openFrameRing(); err != nil {
			return err
		}
	} else if err := l.rs.open(l.ifidx, l.opts); err != nil {
		return err
	}
	l.tx.init(DefaultTxBatch)
	return nil
}

// openRings opens the TPACKET_V3 socket l.fd with a receive ring (RxRing),
// a transmit ring (TxRing) or both, and maps them. Without a receive ring
// it binds to no protocol, so it receives nothing.
func (l *Link) openRings(ringRx, ringTx bool) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	l.fd = fd
	set := func(name string, opt, v int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, opt, v); err != nil {
			return fmt.Errorf("setsockopt %s: %w", name, err)
		}
		return nil
	}
	if err := set("PACKET_VERSION", unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return err
	}
	if err := set("PACKET_VNET_HDR", unix.PACKET_VNET_HDR, 1); err != nil {
		return err
	}
	if err := set("PACKET_IGNORE_OUTGOING", unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return err
	}
	if !l.opts.NoQdiscBypass {
		if err := set("PACKET_QDISC_BYPASS", unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return err
		}
	}
	if ringTx {
		// Without PACKET_LOSS a transmit slot the kernel rejects (e.g. a
		// bad virtio-net header) stays TP_STATUS_WRONG_FORMAT and stops the
		// kernel's walk of the ring for good; with it, the kernel skips the
		// slot. Must be set before any ring exists.
		if err := set("PACKET_LOSS", unix.PACKET_LOSS, 1); err != nil {
			return err
		}
	}
	size := 0
	if ringRx {
		tov := uint32((l.opts.BlockTimeout + time.Millisecond - 1) / time.Millisecond)
		rreq := unix.TpacketReq3{
			Block_size:     uint32(l.opts.BlockSize),
			Block_nr:       uint32(l.opts.Blocks),
			Frame_size:     rxFrameSize,
			Frame_nr:       uint32(l.opts.BlockSize / rxFrameSize * l.opts.Blocks),
			Retire_blk_tov: tov,
		}
		if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &rreq); err != nil {
			return fmt.Errorf("PACKET_RX_RING: %w", err)
		}
		size = l.opts.BlockSize * l.opts.Blocks
	}
	rxSize := size
	if ringTx {
		blocks := l.opts.TxRingFrames / txFramesPerBlock
		treq := unix.TpacketReq3{
			Block_size: txBlockSize,
			Block_nr:   uint32(blocks),
			Frame_size: txFrameSize,
			Frame_nr:   uint32(l.opts.TxRingFrames),
		}
		if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &treq); err != nil {
			return fmt.Errorf("PACKET_TX_RING: %w", err)
		}
		size += blocks * txBlockSize
	}
	m, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	l.mmap = m
	if ringTx {
		l.tx.ring = m[rxSize:]
		l.tx.ringFrames = l.opts.TxRingFrames
	}
	sa := &unix.SockaddrLinklayer{Ifindex: l.ifidx}
	if ringRx {
		l.rx.init(m[:rxSize], l.opts.BlockSize, l.opts.Blocks)
		if l.opts.Accept.IsValid() {
			if err := attachFilter(fd, acceptFilter(l.opts.Accept, 0x40000)); err != nil {
				return fmt.Errorf("accept filter: %w", err)
			}
		}
		sa.Protocol = htons(unix.ETH_P_ALL)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	return nil
}

// openSender opens a ring-less socket that only transmits (bound with
// protocol 0, it receives nothing).
func (l *Link) openSender() error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sender socket: %w", err)
	}
	l.sendFd = fd
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fmt.Errorf("sender PACKET_VNET_HDR: %w", err)
	}
	if !l.opts.NoQdiscBypass {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return fmt.Errorf("sender PACKET_QDISC_BYPASS: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: l.ifidx}); err != nil {
		return fmt.Errorf("sender bind: %w", err)
	}
	return nil
}

func (l *Link) release() {
	if l.sendFd >= 0 && l.sendFd != l.fd {
		_ = unix.Close(l.sendFd)
	}
	l.sendFd = -1
	if l.mmap != nil {
		_ = unix.Munmap(l.mmap)
		l.mmap = nil
	}
	if l.fd >= 0 {
		_ = unix.Close(l.fd)
		l.fd = -1
	}
	l.rs.close()
	l.fr.close()
	l.fr.unmap()
	if l.evfd >= 0 {
		_ = unix.Close(l.evfd)
		l.evfd = -1
	}
}

// MTU is the interface's MTU at Open.
func (l *Link) MTU() int { return l.mtu }

// MaxFrame is 65550: GSO super-frames up to a 64 KiB IP packet are accepted
// and delivered.
func (l *Link) MaxFrame() int { return maxFrameGSO }

// HardwareAddr is the interface's MAC address at Open.
func (l *Link) HardwareAddr() net.HardwareAddr { return l.mac }

// Caps reports the virtio-net header and GSO.
func (l *Link) Caps() link.Caps { return link.CapVNetHdr | link.CapGSO }

// Options returns the options the link runs with, defaults filled in.
func (l *Link) Options() Options { return l.opts }

// Stats returns the link's counters.
func (l *Link) Stats() Stats {
	l.statMu.Lock()
	if !l.closed.Load() {
		l.pollDrops()
	}
	drops := l.ringDrops
	l.statMu.Unlock()
	return Stats{
		RxFrames: l.rxFrames.Load(), RxBytes: l.rxBytes.Load(),
		TxFrames: l.txFrames.Load(), TxBytes: l.txBytes.Load(),
		TxRetries: l.txRetry.Load(), RingDrops: drops, RxTruncated: l.rxTrunc.Load(),
		RxResyncs: l.rxResync.Load(), BusyPolls: l.busyPolls.Load(),
	}
}

// pollDrops adds the kernel's drop counter (reset by each read) to
// l.ringDrops. statMu must be held.
func (l *Link) pollDrops() {
	fd := l.fd
	switch l.opts.Rx {
	case RxRecvmmsg:
		fd = l.rs.fd
	case RxFrameRing:
		fd = l.fr.fd
	}
	if fd < 0 {
		return
	}
	// Without a ring the kernel copies a struct tpacket_stats, a prefix
	// of tpacket_stats_v3.
	st, err := unix.GetsockoptTpacketStatsV3(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err == nil {
		l.ringDrops += uint64(st.Drops)
	}
}

// Close wakes a pending ReadBatch, waits for it and for any WriteBatch in
// progress to return, and releases the socket and the rings. Frames a
// previous ReadBatch returned are invalid afterwards.
func (l *Link) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	if l.evfd >= 0 {
		var one = [8]byte{1}
		_, _ = unix.Write(l.evfd, one[:])
	}
	// The frame ring's pollers read its memory and its descriptor: they
	// finish first, and none starts after (TryRLock fails). Not under
	// txMu: a poller's fn may be transmitting.
	l.fr.life.Lock()
	// Closing the receive socket's os.File wakes a ReadBatch waiting in
	// the netpoller (and waits for it to leave the socket).
	l.statMu.Lock()
	l.pollDrops()
	l.rs.close()
	l.fr.close()
	l.statMu.Unlock()
	l.rxMu.Lock()
	l.fr.unmapLocked()
	l.fr.life.Unlock()
	l.txMu.Lock()
	l.statMu.Lock()
	l.pollDrops()
	l.release()
	l.statMu.Unlock()
	l.txMu.Unlock()
	l.rxMu.Unlock()
	return nil
}

func attachFilter(fd int, prog []unix.SockFilter) error {
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
}

// acceptFilter is a classic BPF program keeping (snap bytes of) ARP whose
// target is p's address and IPv4 to p's address, 255.255.255.255 or p's
// subnet broadcast; it drops everything else.
func acceptFilter(p netip.Prefix, snap uint32) []unix.SockFilter {
	a := p.Addr().As4()
	ip := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	bcast := ip | (1<<(32-p.Bits()) - 1)
	if p.Bits() == 32 {
		bcast = 0xffffffff
	}
	const (
		ldh = unix.BPF_LD | unix.BPF_H | unix.BPF_ABS
		ldw = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
	)
	return []unix.SockFilter{
		/* 0 */ {Code: ldh, K: 12}, // EtherType
		/* 1 */ {Code: jeq, K: 0x0806, Jt: 0, Jf: 2}, // ARP -> 2, else -> 4
		/* 2 */ {Code: ldw, K: 14 + 24}, // ARP target protocol address
		/* 3 */ {Code: jeq, K: ip, Jt: 6, Jf: 5}, // -> 10 accept / 9 drop
		/* 4 */ {Code: jeq, K: 0x0800, Jt: 0, Jf: 4}, // IPv4 -> 5, else -> 9 drop
		/* 5 */ {Code: ldw, K: 14 + 16}, // IPv4 destination
		/* 6 */ {Code: jeq, K: ip, Jt: 3, Jf: 0},
		/* 7 */ {Code: jeq, K: 0xffffffff, Jt: 2, Jf: 0},
		/* 8 */ {Code: jeq, K: bcast, Jt: 1, Jf: 0},
		/* 9 */ {Code: ret, K: 0},
		/* 10 */ {Code: ret, K: snap},
	}
}
