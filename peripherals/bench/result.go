package bench

import (
	"net/netip"
	"os"
	"time"
)

var errDeadline = os.ErrDeadlineExceeded

// Role says which side of a test a Result describes.
type Role string

// The roles.
const (
	RoleSender   Role = "sender"
	RoleReceiver Role = "receiver"
)

// Totals are the figures of one stream, or of all streams, over a span of
// a test. Start and End are offsets from Result.Started.
type Totals struct {
	Stream  int // stream id; -1 in a sum
	Start   time.Duration
	End     time.Duration
	Bytes   uint64 // payload bytes sent or received
	Packets uint64 // datagrams sent or received (a receiver's duplicates included)
	// Receiver only.
	Lost       uint64        // datagrams missing by sequence number (and the FIN's count)
	OutOfOrder uint64        // datagrams that arrived after a later one
	Jitter     time.Duration // RFC 3550 interarrival jitter (a sum: mean of the streams)
}

// Seconds is the span's length in seconds.
func (t Totals) Seconds() float64 { return (t.End - t.Start).Seconds() }

// BitsPerSecond is the payload throughput over the span; zero for an
// empty span.
func (t Totals) BitsPerSecond() float64 {
	if s := t.Seconds(); s > 0 {
		return float64(t.Bytes) * 8 / s
	}
	return 0
}

// PacketsPerSecond is the datagram rate over the span.
func (t Totals) PacketsPerSecond() float64 {
	if s := t.Seconds(); s > 0 {
		return float64(t.Packets) / s
	}
	return 0
}

// Expected is the datagrams the sender sent as far as the receiver can
// tell: received plus lost. iperf3 calls it the total datagrams.
func (t Totals) Expected() uint64 { return t.Packets + t.Lost }

// LostPercent is Lost as a percentage of Expected.
func (t Totals) LostPercent() float64 {
	if e := t.Expected(); e > 0 {
		return 100 * float64(t.Lost) / float64(e)
	}
	return 0
}

// Interval is one reporting period: every stream and their sum.
type Interval struct {
	Streams []Totals
	Sum     Totals
}

// Result is what one side measured.
type Result struct {
	Role     Role
	Stack    string // label of the stack measured, e.g. "user" or "kernel"
	Local    netip.AddrPort
	Remote   netip.AddrPort // the peer (the sender's address for a receiver)
	Test     uint32         // id shared by both sides of one run
	Started  time.Time      // first datagram sent or received
	Size     int            // datagram payload size (a receiver: the largest seen)
	Parallel int            // streams
	Duration time.Duration  // asked for (sender); zero for a receiver
	Rate     float64        // target bits/s, 0 = unlimited (sender)
	Window   int            // credit window in datagrams per stream, 0 = none (sender)

	Streams   []Totals
	Intervals []Interval
	Sum       Totals

	// WriteErrors counts failed writes a sender retried (for example
	// ENOBUFS from a full queue); they are not in the totals.
	WriteErrors uint64
	// CreditWaits counts the times a sender's window held a stream back
	// until the receiver reported progress, CreditProbes the credits it
	// asked for after waiting creditProbeAfter.
	CreditWaits, CreditProbes uint64
	// Reached reports that the receiver answered the sender's probe
	// before the test started.
	Reached bool
	// FINAcked reports that the receiver acknowledged every stream's end.
	FINAcked bool
	// Ignored counts datagrams a receiver discarded: not ours, another
	// test's, or a stream id out of range.
	Ignored uint64

	// Filled in by whoever owns the socket (the engine cannot see them):
	// Overflow is what the receiving side itself dropped during the run
	// (its socket's queue and, for the user-level stack, its link's ring
	// were full), as opposed to loss on the way.
	Overflow Overflow
	// Offload is what a kernel socket's batches became (nil for the
	// user-level stack).
	Offload *Offload
	// CPU is what the side's whole process spent during the run
	// (ProcessCPU before and after; zero when not measured).
	CPU CPUTime
}

// Overflow counts datagrams (socket) and frames (ring) the receiving end
// dropped because it could not keep up.
type Overflow struct {
	Socket uint64 // datagrams: the receiving socket's queue (kernel: SO_RXQ_OVFL)
	Ring   uint64 // frames: the user-level stack's AF_PACKET ring (tp_drops)
	// RingDatagrams estimates the datagrams those frames held (a GSO
	// super-frame holds many): Ring x the datagrams per frame received.
	RingDatagrams uint64
}

// Datagrams is the receiver's own drops in datagrams.
func (o Overflow) Datagrams() uint64 { return o.Socket + o.RingDatagrams }

// Offload is a kernel socket's batches during a run: a sender's messages
// and how many carried UDP_SEGMENT, a receiver's buffers and how many
// were UDP_GRO super-frames.
type Offload struct {
	Mode      string // "kernel" (UDP_SEGMENT + UDP_GRO) or "kernel-plain"
	Messages  uint64 // sent messages or received buffers
	Segmented uint64 // of which several datagrams each (GSO sends, GRO buffers)
	Datagrams uint64
}

// sumOf adds up stream totals; jitter is their mean, as iperf3 does.
func sumOf(streams []Totals, start, end time.Duration) Totals {
	s := Totals{Stream: -1, Start: start, End: end}
	var jit time.Duration
	for _, t := range streams {
		s.Bytes += t.Bytes
		s.Packets += t.Packets
		s.Lost += t.Lost
		s.OutOfOrder += t.OutOfOrder
		jit += t.Jitter
	}
	if len(streams) > 0 {
		s.Jitter = jit / time.Duration(len(streams))
	}
	return s
}
