package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HeaderLen is the size of the header at the start of every bench
// datagram; it is also the smallest datagram size a test can use.
const HeaderLen = 32

// MaxSize is the largest UDP payload over IPv4.
const MaxSize = 65507

// MaxStreams bounds --parallel: stream ids index a table.
const MaxStreams = 128

// DefaultBatch is how many datagrams a sender writes and a receiver
// reads per batch call by default; MaxBatch is the most a caller may ask
// (a kernel sender at its best writes whole UDP_SEGMENT super-datagrams:
// 2 x 44 datagrams of 1472 B, see dgram.GSOBatch).
const (
	DefaultBatch = 64
	MaxBatch     = 128
)

const headerMagic = 0x6e736231 // "nsb1"

// kind says what a datagram is for.
type kind uint8

const (
	kindData   kind = 1 // a measured datagram
	kindFIN    kind = 2 // end of a stream; Seq holds the datagrams sent
	kindFINAck kind = 3 // the receiver saw a FIN; Seq holds those received
	kindPing   kind = 4 // RTT request
	kindPong   kind = 5 // RTT answer: the ping with its kind changed
	// kindCredit carries a receiver's reading progress back to a sender
	// that asked for it (data with Credit set): Seq is the stream's next
	// expected sequence number, so every datagram below it was read by
	// the receiving application or is lost. A sender held back by its
	// window sends one too, with Seq = the datagrams it sent: the receiver
	// reads it after every datagram sent before it (one flow keeps its
	// order) and answers with the same Seq.
	kindCredit kind = 6
)

// header is the fixed prefix of every bench datagram, big-endian:
//
//	0  magic   uint32
//	4  kind    uint8
//	5  attempt uint8   RTT retransmission count
//	6  stream  uint16
//	8  streams uint16  streams in the test
//	10 credit  uint16  data: report progress every credit datagrams (0: never)
//	12 test    uint32  random id of one run
//	16 seq     uint64
//	24 sent    int64   sender's clock, unix nanoseconds
type header struct {
	Kind    kind
	Attempt uint8
	Stream  uint16
	Streams uint16
	Credit  uint16
	Test    uint32
	Seq     uint64
	Sent    int64
}

// The header's field offsets (above): encode, parseHeader and the
// receiver's in-place count of a run's data datagrams (dataRun) use them.
const (
	offMagic   = 0
	offKind    = 4
	offAttempt = 5
	offStream  = 6
	offStreams = 8
	offCredit  = 10
	offTest    = 12
	offSeq     = 16
	offSent    = 24
)

// errBadHeader is wrapped by parseHeader's errors.
var errBadHeader = errors.New("bench: not a bench datagram")

func (h *header) encode(b []byte) {
	_ = b[HeaderLen-1]
	binary.BigEndian.PutUint32(b[offMagic:], headerMagic)
	b[offKind] = byte(h.Kind)
	b[offAttempt] = h.Attempt
	binary.BigEndian.PutUint16(b[offStream:], h.Stream)
	binary.BigEndian.PutUint16(b[offStreams:], h.Streams)
	binary.BigEndian.PutUint16(b[offCredit:], h.Credit)
	binary.BigEndian.PutUint32(b[offTest:], h.Test)
	binary.BigEndian.PutUint64(b[offSeq:], h.Seq)
	binary.BigEndian.PutUint64(b[offSent:], uint64(h.Sent))
}

// parseHeader decodes b's header. Datagrams that are too short, carry
// another magic or an unknown kind are rejected.
func parseHeader(b []byte, h *header) error {
	if len(b) < HeaderLen {
		return fmt.Errorf("%w: %d bytes", errBadHeader, len(b))
	}
	if binary.BigEndian.Uint32(b[offMagic:]) != headerMagic {
		return fmt.Errorf("%w: bad magic", errBadHeader)
	}
	k := kind(b[offKind])
	if k < kindData || k > kindCredit {
		return fmt.Errorf("%w: kind %d", errBadHeader, k)
	}
	*h = header{
		Kind:    k,
		Attempt: b[offAttempt],
		Stream:  binary.BigEndian.Uint16(b[offStream:]),
		Streams: binary.BigEndian.Uint16(b[offStreams:]),
		Credit:  binary.BigEndian.Uint16(b[offCredit:]),
		Test:    binary.BigEndian.Uint32(b[offTest:]),
		Seq:     binary.BigEndian.Uint64(b[offSeq:]),
		Sent:    int64(binary.BigEndian.Uint64(b[offSent:])),
	}
	return nil
}
