package diskproto

import (
	"fmt"
	"math/bits"

	"github.com/netstation/netstation/internal/wire/crc"
)

// Segmented messages. A WRITE request or READ reply whose data does not
// fit its header's datagram carries the first part there and the rest in
// data segments: datagrams of a SegmentHeaderSize header and a run of data.
// A sender cuts every datagram of a message to the same size (the last may
// be shorter), so the user-level stack hands a run of them to the link as
// one GSO super-frame, which crosses veth and bridge unsegmented: one
// frame per 64 KiB instead of one per 1.5 KiB, and no IP fragments. The
// header's Length and PayloadCRC cover all of the data, so the receiver
// checks the assembled whole end to end. docs/protocols/disk.md tables the
// layout.
const (
	// SegmentHeaderSize is the size of a data segment's header.
	SegmentHeaderSize = 32
	// MinSegmentData is the least data a segment other than a message's
	// last may carry. It bounds a message's segment count, and so the
	// receiver's tables, whatever a sender does.
	MinSegmentData = 256
	// MinDatagram is the smallest datagram size a sender may cut messages
	// to.
	MinDatagram = RequestHeaderSize + MinSegmentData
	// DefaultDatagram fits one datagram in a 1500-byte Ethernet MTU.
	DefaultDatagram = 1500 - 20 - 8
)

// SegmentFlags mark a data segment.
type SegmentFlags uint8

// FlagLast marks the last datagram of a burst: the whole message or the
// resent part of it. A receiver that then lacks datagrams of the message
// reports which it holds (a SACK for WRITE data, a READ with FlagHave for
// READ data) at once, instead of waiting for the sender's timer.
const FlagLast SegmentFlags = 1 << 0

// Segment is a decoded data segment. Data aliases the parsed datagram.
type Segment struct {
	Reply   bool // READ reply data; otherwise WRITE request data
	Flags   SegmentFlags
	Round   uint8  // the burst it was sent in: the low byte of its transmission's tag
	Index   uint16 // 1 for the first segment after the header's datagram
	Offset  uint32 // of Data within the message's data
	Session uint64
	ReqID   uint64
	Data    []byte
}

// IsSegment reports whether the datagram b claims to be a data segment (it
// may still fail ParseSegment).
func IsSegment(b []byte) bool { return len(b) > 3 && b[3]&segmentBit != 0 }

// MaxSegments is the most segments a message of length data bytes can
// have; an Index above it is refused.
func MaxSegments(length uint32) int { return int(length/MinSegmentData) + 1 }

// PutSegmentHeader writes a segment header into b[:SegmentHeaderSize]
// with no flags and round 0 (SetSegmentRound sets them).
func PutSegmentHeader(b []byte, reply bool, index uint16, offset uint32, session, reqID uint64) {
	PutSegmentHeaderRound(b, reply, index, offset, session, reqID, 0, 0)
}

// PutSegmentHeaderRound is PutSegmentHeader with the flags and round of
// the burst it goes in: one seal, where PutSegmentHeader and then
// SetSegmentRound seal twice.
func PutSegmentHeaderRound(b []byte, reply bool, index uint16, offset uint32, session, reqID uint64, flags SegmentFlags, round uint8) {
	PutSegmentFields(b, reply, index, offset, session, reqID)
	b[6], b[7] = byte(flags), round
	crc.Seal(b[:SegmentHeaderSize], segmentCRCField)
}

// PutSegmentFields writes a segment header's fields but its flags, round
// and CRC, which SetSegmentRound writes and seals before the segment is
// sent: a sender that stamps every burst with its round (the storage
// client) seals each header once per send, not once more when it lays the
// message out.
func PutSegmentFields(b []byte, reply bool, index uint16, offset uint32, session, reqID uint64) {
	be.PutUint16(b[0:], Magic)
	b[2] = Version
	b[3] = segmentBit
	if reply {
		b[3] |= replyBit
	}
	be.PutUint16(b[4:], index)
	be.PutUint32(b[8:], offset)
	be.PutUint64(b[16:], session)
	be.PutUint64(b[24:], reqID)
}

// SetSegmentRound sets the flags and round of a segment header written by
// PutSegmentHeader and re-seals it: what a resend changes.
func SetSegmentRound(b []byte, flags SegmentFlags, round uint8) {
	b[6], b[7] = byte(flags), round
	crc.Seal(b[:SegmentHeaderSize], segmentCRCField)
}

// ParseSegment decodes and validates a data segment's header.
func ParseSegment(b []byte) (Segment, error) {
	switch {
	case len(b) <= SegmentHeaderSize:
		return Segment{}, ErrShort
	case be.Uint16(b[0:]) != Magic:
		return Segment{}, ErrMagic
	case b[2] != Version:
		return Segment{}, ErrVersion
	case !crc.Valid(b[:SegmentHeaderSize], segmentCRCField):
		return Segment{}, ErrHeaderChecksum
	case b[3]&^replyBit != segmentBit, b[6]&^byte(FlagLast) != 0, be.Uint16(b[4:]) == 0:
		return Segment{}, fmt.Errorf("%w: type %#x, flags %#x, index %d", ErrSegment, b[3], b[6], be.Uint16(b[4:]))
	}
	return Segment{
		Reply:   b[3]&replyBit != 0,
		Flags:   SegmentFlags(b[6]),
		Round:   b[7],
		Index:   be.Uint16(b[4:]),
		Offset:  be.Uint32(b[8:]),
		Session: be.Uint64(b[16:]),
		ReqID:   be.Uint64(b[24:]),
		Data:    b[SegmentHeaderSize:],
	}, nil
}

// Layout places a message — a header of Header bytes followed by Length
// data bytes — in one buffer as datagrams of Datagram bytes each (the last
// may be shorter): the header's datagram carries the first data, every
// further one a segment header and the next run of data. Sending
// buffer[Span(i)] for each i in order sends the message.
type Layout struct {
	Header   int // RequestHeaderSize or ReplyHeaderSize
	Length   int // data bytes
	Datagram int // at least MinDatagram
}

// First is the data carried in the header's datagram.
func (l Layout) First() int { return min(l.Length, l.Datagram-l.Header) }

// PerSegment is the data carried by each segment but perhaps the last.
func (l Layout) PerSegment() int { return l.Datagram - SegmentHeaderSize }

// Count is the number of datagrams.
func (l Layout) Count() int {
	rest := l.Length - l.First()
	return 1 + (rest+l.PerSegment()-1)/l.PerSegment()
}

// Size is the length of the laid-out buffer.
func (l Layout) Size() int { return l.Header + l.Length + (l.Count()-1)*SegmentHeaderSize }

// Span returns datagram i's bytes in the buffer.
func (l Layout) Span(i int) (start, end int) {
	if i == 0 {
		return 0, l.Header + l.First()
	}
	start = l.Header + l.First() + (i-1)*l.Datagram
	return start, min(start+l.Datagram, l.Size())
}

// Data returns where datagram i's data sits in the buffer, and its offset
// within the message's data.
func (l Layout) Data(i int) (start, end, offset int) {
	if i == 0 {
		return l.Header, l.Header + l.First(), 0
	}
	s, e := l.Span(i)
	return s + SegmentHeaderSize, e, l.First() + (i-1)*l.PerSegment()
}

// Valid reports whether the layout can be sent: a known header, a
// datagram size from MinDatagram to MaxDatagram and data within
// MaxIOLimit.
func (l Layout) Valid() bool {
	return (l.Header == RequestHeaderSize || l.Header == ReplyHeaderSize) &&
		l.Datagram >= MinDatagram && l.Datagram <= MaxDatagram && l.Length >= 0 && l.Length <= MaxIOLimit
}

// Assembly tracks which datagrams of one segmented message have arrived,
// so duplicates are not counted twice and completion is exact. The zero
// value is ready for Reset.
type Assembly struct {
	have   []uint64 // bit i: datagram i (0: the header's) arrived
	got    int      // data bytes arrived
	end    int      // the furthest data byte placed, plus one
	length int
}

// Reset prepares a for a message of length data bytes, reusing its memory.
func (a *Assembly) Reset(length uint32) {
	words := (MaxSegments(length) + 1 + 63) / 64
	if cap(a.have) < words {
		a.have = make([]uint64, words)
	}
	a.have = a.have[:words]
	clear(a.have)
	a.got, a.end, a.length = 0, 0, int(length)
}

// SetLength fixes the length of a message whose segments arrived before
// its header (the assembly was Reset with an upper bound): it fails,
// changing nothing, when what arrived does not fit length.
func (a *Assembly) SetLength(length uint32) error {
	top := -1
	for w := len(a.have) - 1; w >= 0 && top < 0; w-- {
		if a.have[w] != 0 {
			top = w*64 + 63 - bits.LeadingZeros64(a.have[w])
		}
	}
	if uint64(a.end) > uint64(length) || top > MaxSegments(length) {
		return fmt.Errorf("%w: %d bytes up to datagram %d arrived for a %d-byte message", ErrSegment, a.end, top, length)
	}
	a.length = int(length)
	return nil
}

// Add records that datagram index (0 for the header's) brought n data
// bytes at offset. It reports whether the datagram is new; an index or
// range the message cannot have is an error, and nothing is recorded.
func (a *Assembly) Add(index int, offset uint32, n int) (bool, error) {
	if index < 0 || index > MaxSegments(uint32(a.length)) || index/64 >= len(a.have) ||
		uint64(offset)+uint64(n) > uint64(a.length) || (index == 0) != (offset == 0) {
		return false, fmt.Errorf("%w: datagram %d with %d bytes at %d of a %d-byte message",
			ErrSegment, index, n, offset, a.length)
	}
	w, bit := index/64, uint64(1)<<(index%64)
	if a.have[w]&bit != 0 {
		return false, nil
	}
	a.have[w] |= bit
	a.got += n
	a.end = max(a.end, int(offset)+n)
	return true, nil
}

// Any reports whether any datagram has arrived.
func (a *Assembly) Any() bool {
	for _, w := range a.have {
		if w != 0 {
			return true
		}
	}
	return false
}

// Has reports whether datagram index has arrived.
func (a *Assembly) Has(index int) bool {
	return index >= 0 && index/64 < len(a.have) && a.have[index/64]&(1<<(index%64)) != 0
}

// Held appends to dst the bitmap of the datagrams that have arrived, in
// the wire layout (HeldBitmap), up to the highest one, and returns it.
func (a *Assembly) Held(dst []byte) []byte {
	top := -1
	for w := len(a.have) - 1; w >= 0 && top < 0; w-- {
		if a.have[w] != 0 {
			top = w*64 + 63 - bits.LeadingZeros64(a.have[w])
		}
	}
	for i := 0; i <= top; i += 8 {
		dst = append(dst, byte(a.have[i/64]>>(i%64)))
	}
	return dst
}

// HasHeader reports whether the header's datagram arrived.
func (a *Assembly) HasHeader() bool { return len(a.have) > 0 && a.have[0]&1 != 0 }

// Complete reports whether every byte and the header have arrived.
func (a *Assembly) Complete() bool { return a.HasHeader() && a.got >= a.length }

// Bitmaps of held datagrams. Bit i of a bitmap (byte i/8, bit i%8 counted
// from the least significant) says that datagram i of a message (0: the
// header's) has arrived; datagrams past the bitmap's end have not.

// BitmapSize is the bytes of a bitmap covering count datagrams.
func BitmapSize(count int) int { return (count + 7) / 8 }

// BitmapHas reports whether bitmap bm says datagram i has arrived.
func BitmapHas(bm []byte, i int) bool { return i >= 0 && i/8 < len(bm) && bm[i/8]&(1<<(i%8)) != 0 }

// SACK (selective acknowledgement): the server's report on a WRITE whose
// data is still arriving, sent when a datagram marked FlagLast or a header
// with FlagReport arrives and the message is incomplete. The client
// resends only the datagrams the bitmap lacks.
const (
	// SACKHeaderSize is the size of a SACK's header; the bitmap follows.
	SACKHeaderSize = 40
	// MaxSACKBitmap is the largest bitmap: every datagram of a MaxIOLimit
	// message cut to MinDatagram.
	MaxSACKBitmap = (MaxIOLimit/MinSegmentData + 2 + 7) / 8
	sackType      = replyBit | segmentBit | 0x20
)

// SACK is a decoded selective acknowledgement. Bitmap aliases the parsed
// datagram.
type SACK struct {
	Round   uint8  // the round of the datagram that asked for it (0: a header's FlagReport)
	Tag     uint32 // the tag of the header that asked for it (0: a segment asked)
	Length  uint32 // the WRITE's data length, as the server knows it (0: nothing held)
	Session uint64
	ReqID   uint64
	Bitmap  []byte // HeldBitmap layout; empty: the server holds nothing of the WRITE
}

// IsSACK reports whether the datagram b claims to be a SACK.
func IsSACK(b []byte) bool { return len(b) > 3 && b[3] == sackType }

// Marshal writes s into b and returns the datagram's length.
func (s *SACK) Marshal(b []byte) (int, error) {
	if len(s.Bitmap) > MaxSACKBitmap {
		return 0, ErrPayloadSize
	}
	n := SACKHeaderSize + len(s.Bitmap)
	if len(b) < n {
		return 0, ErrBuffer
	}
	be.PutUint16(b[0:], Magic)
	b[2] = Version
	b[3] = sackType
	be.PutUint16(b[4:], uint16(len(s.Bitmap)))
	b[6], b[7] = 0, s.Round
	be.PutUint32(b[8:], s.Tag)
	be.PutUint64(b[16:], s.Session)
	be.PutUint64(b[24:], s.ReqID)
	be.PutUint32(b[32:], s.Length)
	be.PutUint32(b[36:], 0)
	copy(b[SACKHeaderSize:], s.Bitmap)
	crc.Seal(b[:n], sackCRCField) // every byte of the SACK but its CRC field
	return n, nil
}

// ParseSACK decodes and validates a SACK datagram.
func ParseSACK(b []byte) (SACK, error) {
	switch {
	case len(b) < SACKHeaderSize:
		return SACK{}, ErrShort
	case be.Uint16(b[0:]) != Magic:
		return SACK{}, ErrMagic
	case b[2] != Version:
		return SACK{}, ErrVersion
	case b[3] != sackType:
		return SACK{}, ErrNotReply
	case !crc.Valid(b, sackCRCField):
		return SACK{}, ErrHeaderChecksum
	case b[6] != 0 || be.Uint32(b[36:]) != 0:
		return SACK{}, ErrFlags
	case int(be.Uint16(b[4:])) != len(b)-SACKHeaderSize || len(b)-SACKHeaderSize > MaxSACKBitmap:
		return SACK{}, ErrLength
	}
	return SACK{
		Round:   b[7],
		Tag:     be.Uint32(b[8:]),
		Session: be.Uint64(b[16:]),
		ReqID:   be.Uint64(b[24:]),
		Length:  be.Uint32(b[32:]),
		Bitmap:  b[SACKHeaderSize:],
	}, nil
}
