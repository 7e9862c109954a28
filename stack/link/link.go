package link

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by ReadBatch and WriteBatch once the link is closed.
var ErrClosed = fmt.Errorf("link: closed: %w", net.ErrClosed)

// Virtio-net header flags (include/uapi/linux/virtio_net.h).
const (
	VNetNeedsCsum uint8 = 1 // checksum is partial: fill it from CsumStart, store at CsumStart+CsumOffset
	VNetDataValid uint8 = 2 // checksum already verified (by the sender's kernel or hardware)
)

// Virtio-net GSO types.
const (
	GSONone  uint8 = 0
	GSOTCPv4 uint8 = 1
	GSOUDP   uint8 = 3 // UFO, IP fragmentation; not used by us
	GSOTCPv6 uint8 = 4
	GSOUDPL4 uint8 = 5 // UDP segmentation offload: one datagram per GSOSize bytes of payload
	GSOECN   uint8 = 0x80
)

// VNetHdrLen is the size of struct virtio_net_hdr on the wire of an
// AF_PACKET socket with PACKET_VNET_HDR.
const VNetHdrLen = 10

// VNetHdr is the metadata the kernel carries beside a frame when a socket
// uses PACKET_VNET_HDR: checksum state and GSO segmentation instructions.
// The zero value means "complete frame, checksums present, not verified".
type VNetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16 // Ethernet+IP+L4 header length for GSO frames
	GSOSize    uint16 // payload bytes per segment
	CsumStart  uint16 // offset from the Ethernet header where checksumming starts
	CsumOffset uint16 // offset from CsumStart where the checksum is stored
}

// Decode fills h from b, which holds at least VNetHdrLen bytes in the
// host's byte order (little-endian on every platform we run on).
func (h *VNetHdr) Decode(b []byte) {
	_ = b[9]
	h.Flags = b[0]
	h.GSOType = b[1]
	h.HdrLen = uint16(b[2]) | uint16(b[3])<<8
	h.GSOSize = uint16(b[4]) | uint16(b[5])<<8
	h.CsumStart = uint16(b[6]) | uint16(b[7])<<8
	h.CsumOffset = uint16(b[8]) | uint16(b[9])<<8
}

// Encode writes h into b[:VNetHdrLen].
func (h *VNetHdr) Encode(b []byte) {
	_ = b[9]
	b[0] = h.Flags
	b[1] = h.GSOType
	b[2], b[3] = byte(h.HdrLen), byte(h.HdrLen>>8)
	b[4], b[5] = byte(h.GSOSize), byte(h.GSOSize>>8)
	b[6], b[7] = byte(h.CsumStart), byte(h.CsumStart>>8)
	b[8], b[9] = byte(h.CsumOffset), byte(h.CsumOffset>>8)
}

// Frame is one Ethernet frame (destination MAC first, no FCS) and its
// offload metadata.
type Frame struct {
	Buf  []byte
	VNet VNetHdr
	// Loan, when not zero, names the link buffer Buf lies in, which a
	// caller may keep past the next ReadBatch through the link's Lender
	// (Buf starts at LoanOff in Lender.LoanBuf(Loan)). Zero: Buf is valid
	// only until the next ReadBatch, as usual.
	Loan    uint32
	LoanOff uint32
}

// Caps are the offloads a link offers.
type Caps uint32

const (
	// CapVNetHdr: frames carry a meaningful VNetHdr both ways. Received
	// frames may be NEEDS_CSUM (partial checksum) or DATA_VALID; transmitted
	// frames may ask the kernel to finish their checksum.
	CapVNetHdr Caps = 1 << iota
	// CapGSO: the link accepts and may deliver GSO super-frames (up to
	// MaxFrame bytes) with GSOTCPv4 or GSOUDPL4.
	CapGSO
)

// Link moves Ethernet frames in batches.
//
// Contracts:
//   - ReadBatch blocks until at least one frame is available, the link is
//     closed (ErrClosed) or it fails. It fills frames[:n] and returns n >= 1.
//     frames[i].Buf points into memory the link owns (e.g. a mapped ring);
//     it stays valid only until the next ReadBatch call on the same link,
//     so the caller copies whatever it keeps. Only one goroutine may call
//     ReadBatch at a time.
//   - WriteBatch transmits frames[:n] in order and returns how many were
//     handed to the medium. The short-write rule: n < len(frames) only with
//     a non-nil error, which says why frames[n] did not leave; a link
//     retries its own transient refusals (a full ring, ENOBUFS) within its
//     retry budget before it gives up, so a caller never loops on a short
//     count. The link does not retain any frames[i].Buf after it returns:
//     the caller may reuse the buffers at once. WriteBatch is safe for
//     concurrent use. A frame longer than MaxFrame is an error for that
//     frame and all after it.
//   - Close unblocks a pending ReadBatch and makes further calls return
//     ErrClosed.
type Link interface {
	ReadBatch(frames []Frame) (n int, err error)
	WriteBatch(frames []Frame) (n int, err error)
	// MTU is the largest IP packet (without Ethernet header) one
	// non-GSO frame may carry.
	MTU() int
	// MaxFrame is the largest frame, Ethernet header included, that
	// ReadBatch may deliver and WriteBatch accepts (above MTU+14 only with
	// CapGSO).
	MaxFrame() int
	// HardwareAddr is the link's own MAC address.
	HardwareAddr() net.HardwareAddr
	Caps() Caps
	Close() error
}

// GatherWriter is implemented by links that can send one frame given as
// pieces, gathered by the copy the kernel makes anyway: a GSO super-frame's
// headers followed by its datagrams' payloads, never assembled in user
// memory. pieces[0] holds at least the Ethernet header. The same checks as
// WriteBatch apply to the frame the pieces make; the link keeps no piece
// after it returns. Safe for concurrent use with WriteBatch.
type GatherWriter interface {
	WriteGather(vnet VNetHdr, pieces [][]byte) error
}

// ErrNoGather is WriteGather's answer when the link cannot gather this
// frame now (a wrapper whose impairments need the frame whole): nothing
// was sent, and the caller assembles the frame and uses WriteBatch.
var ErrNoGather = errors.New("link: cannot gather this frame")

// Lender is implemented by links that can lend the buffers frames arrive
// in: a receiver keeps a frame's payload where the kernel wrote it
// (queued on a socket for its reader) instead of copying it out before
// the next ReadBatch, and gives the buffer back when the reader is done.
// The link reads into other buffers meanwhile.
type Lender interface {
	// Hold takes n holds on the buffer of a frame with Frame.Loan == loan.
	// Only the goroutine that got the frame calls it, before its next
	// ReadBatch. False means the link has no buffer to spare for the
	// loan now (too many are out): the caller copies instead.
	Hold(loan uint32, n int) bool
	// Release gives back n holds; the buffer is reused once all its holds
	// are back. Safe for concurrent use.
	Release(loan uint32, n int)
	// LoanBuf is the buffer loan names, the same slice for the link's
	// lifetime: a holder finds its bytes at the offsets it was given.
	LoanBuf(loan uint32) []byte
}

// ErrNoPoll is returned by PollBatch when the link, as configured, cannot
// be polled (e.g. a receive ring read only by its blocked reader).
var ErrNoPoll = fmt.Errorf("link: receive path cannot be polled")

// Poller is implemented by links whose receive path any goroutine may
// drive without blocking, beside the goroutine blocked in ReadBatch: a
// reader with nothing queued polls the link itself for a bounded time
// instead of sleeping until the receive goroutine wakes it (run to
// completion, no hand-off between goroutines on the latency path).
//
// Frames are taken from the medium only by the holder of the link's
// receive turn (RxTurn), and they are processed before the turn is given
// back: ReadBatch takes the turn with the frames it returns and keeps it
// until its caller's next ReadBatch; PollBatch takes it, runs fn on the
// frames and gives it back. So frames reach the caller in arrival order,
// one goroutine at a time, whichever goroutine reads them.
type Poller interface {
	// PollBatch takes up to len(frames) waiting frames without blocking
	// and runs fn on them while it holds the turn; it repeats while full
	// batches keep coming, and returns how many frames fn saw. It returns
	// 0, nil at once when nothing is waiting or another goroutine holds
	// the turn (that goroutine takes the frames), and then gives the CPU
	// up briefly (on every such call, or every few where a poll costs no
	// system call), so a poller sharing a CPU with its peer lets it run.
	// frames[i].Buf is valid only inside fn. Safe for concurrent use.
	PollBatch(frames []Frame, fn func([]Frame)) (int, error)
}

// BusyPoller is implemented by links whose blocked reader (ReadBatch) can
// keep polling the medium for a while instead of sleeping as soon as it
// finds nothing: while traffic flows, the process then pays no sleep and
// no wake-up per batch (on a VM an idle CPU halts and each wake-up is an
// inter-processor interrupt, on both sides of it). It is adaptive: a
// reader polls only after a batch whose frames came within the budget of
// asking for them, so sparse traffic (gossip, a lone request) never makes
// it spin, and it stops polling a budget after the last frame.
type BusyPoller interface {
	// SetBusyPoll sets that budget; 0 turns polling off. Safe for
	// concurrent use; it takes effect from the next ReadBatch.
	SetBusyPoll(d time.Duration)
}

// RxTurn is the receive turn of a Poller: a lock that the goroutine
// woken for readable frames (the one blocked in ReadBatch) and pollers
// take before they take frames off the medium, plus the note that makes
// sure frames the woken goroutine left to a poller are not stranded. The
// zero value is ready.
type RxTurn struct {
	mu     sync.Mutex
	missed atomic.Bool
}

// TakeWoken is for the goroutine that sleeps until the medium is readable:
// it takes the turn or, when a poller holds it, leaves a note for that
// poller, which then takes what woke the sleeper before it goes (see
// Give). After false the caller may sleep again.
func (t *RxTurn) TakeWoken() bool {
	t.missed.Store(true) // before the attempt: the holder's Give sees it
	if !t.mu.TryLock() {
		return false
	}
	t.missed.Store(false)
	return true
}

// TryTake is for pollers: it takes the turn if it is free. The taker reads
// the medium until it finds it empty before giving the turn back.
func (t *RxTurn) TryTake() bool {
	if !t.mu.TryLock() {
		return false
	}
	t.missed.Store(false)
	return true
}

// Give gives the turn back. True means a sleeper was woken while the turn
// was held: the caller must TryTake again and read the medium once more,
// or frames could wait for the next arrival.
func (t *RxTurn) Give() bool {
	t.mu.Unlock()
	return t.missed.Load()
}
