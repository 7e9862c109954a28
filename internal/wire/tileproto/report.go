package tileproto

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// PresentFlags ask a display for more than a plain present.
type PresentFlags uint16

// The PRESENT flags.
const (
	// PresentAck: answer with a REPORT to the PRESENT's source address.
	// A PRESENT with Ack for a frame already presented is answered again
	// (the first REPORT may have been lost).
	PresentAck PresentFlags = 1 << 0
	// PresentHold: do not present; only report (a sender's flow-control
	// checkpoint: the display answers once it has drained everything
	// sent before).
	PresentHold PresentFlags = 1 << 1
	// PresentComplete: present only if every numbered tile of the frame
	// (1 to Tiles) has arrived; otherwise keep the frame open and report
	// the missing ones. A lost tile then never shows as a stale
	// rectangle: the frame waits for its retransmission.
	PresentComplete PresentFlags = 1 << 2

	presentFlagsAll = PresentAck | PresentHold | PresentComplete
)

// PresentOptionsSize is the size of a PRESENT's optional payload.
const PresentOptionsSize = 8

// PresentOptions is a PRESENT's optional payload.
type PresentOptions struct {
	Flags PresentFlags
	// Notify, when valid, is told with a REPORT (no missing-tile list)
	// when the frame is presented: how a third party learns that a
	// transfer it ordered has reached the screen.
	Notify netip.AddrPort
}

// AppendPresent appends a PRESENT carrying o (no payload for the zero o).
func AppendPresent(dst []byte, h *Header, o PresentOptions) []byte {
	h.Type = TypePresent
	if o == (PresentOptions{}) {
		return Append(dst, h, nil)
	}
	var p [PresentOptionsSize]byte
	binary.BigEndian.PutUint16(p[0:], uint16(o.Flags))
	if o.Notify.IsValid() && o.Notify.Addr().Is4() {
		binary.BigEndian.PutUint16(p[2:], o.Notify.Port())
		a := o.Notify.Addr().As4()
		copy(p[4:], a[:])
	}
	return Append(dst, h, p[:])
}

// ParsePresentOptions decodes a PRESENT's payload: empty, or 8 bytes of
// known flags and an IPv4 notify address (all zero: none; a zero port
// with a non-zero address, or the reverse, is malformed).
func ParsePresentOptions(p []byte) (PresentOptions, error) {
	var o PresentOptions
	switch len(p) {
	case 0:
		return o, nil
	case PresentOptionsSize:
	default:
		return o, fmt.Errorf("%w: PRESENT payload of %d bytes", ErrMalformed, len(p))
	}
	o.Flags = PresentFlags(binary.BigEndian.Uint16(p[0:]))
	if o.Flags&^presentFlagsAll != 0 {
		return PresentOptions{}, fmt.Errorf("%w: PRESENT flags %#x", ErrMalformed, uint16(o.Flags))
	}
	port := binary.BigEndian.Uint16(p[2:])
	addr := netip.AddrFrom4([4]byte(p[4:8]))
	switch {
	case port == 0 && addr.IsUnspecified():
	case port == 0 || addr.IsUnspecified():
		return PresentOptions{}, fmt.Errorf("%w: PRESENT notify address %v port %d", ErrMalformed, addr, port)
	default:
		o.Notify = netip.AddrPortFrom(addr, port)
	}
	return o, nil
}

// ReportFlags describe the frame a REPORT is about.
type ReportFlags uint32

// ReportPresented: the frame is on screen.
const ReportPresented ReportFlags = 1 << 0

// ReportFixedSize is a REPORT payload's size before its missing-tile map.
const ReportFixedSize = 8

// Report is a REPORT's payload. Its header carries the stream, the frame,
// the frame's tile count (Tiles) and the PRESENT's token (Index).
type Report struct {
	Flags ReportFlags
	// Received counts the distinct numbered tiles of the frame the display
	// holds.
	Received uint32
	// Missing, when not empty, is a bitmap of ceil(Tiles/8) bytes: bit
	// i%8 (least significant first) of byte i/8 is set when tile i+1 is
	// missing. Sent to the PRESENT's source only, when the frame was not
	// presented.
	Missing []byte
}

// MissingTile reports whether tile index (1 to Tiles) is missing per r.
func (r *Report) MissingTile(index int) bool {
	i := index - 1
	return i >= 0 && i/8 < len(r.Missing) && r.Missing[i/8]&(1<<(i%8)) != 0
}

// AppendReport appends a REPORT about h's stream and frame.
func AppendReport(dst []byte, h *Header, r *Report) []byte {
	h.Type = TypeReport
	start := len(dst)
	dst = Append(dst, h, nil)
	var p [ReportFixedSize]byte
	binary.BigEndian.PutUint32(p[0:], uint32(r.Flags))
	binary.BigEndian.PutUint32(p[4:], r.Received)
	dst = append(dst, p[:]...)
	dst = append(dst, r.Missing...)
	Seal(dst[start:])
	return dst
}

// ParseReport decodes a REPORT's payload against its header: the received
// count cannot exceed the frame's tiles, and a missing-tile map, when
// present, is exactly ceil(Tiles/8) bytes with no bits past Tiles.
// Missing aliases p.
func ParseReport(h *Header, p []byte) (Report, error) {
	if len(p) < ReportFixedSize {
		return Report{}, fmt.Errorf("%w: REPORT payload of %d bytes", ErrMalformed, len(p))
	}
	r := Report{Flags: ReportFlags(binary.BigEndian.Uint32(p[0:])), Received: binary.BigEndian.Uint32(p[4:])}
	if r.Flags&^ReportPresented != 0 || r.Received > h.Tiles {
		return Report{}, fmt.Errorf("%w: REPORT flags %#x, %d of %d tiles", ErrMalformed, uint32(r.Flags), r.Received, h.Tiles)
	}
	if m := p[ReportFixedSize:]; len(m) > 0 {
		if uint64(len(m)) != (uint64(h.Tiles)+7)/8 {
			return Report{}, fmt.Errorf("%w: missing-tile map of %d bytes for %d tiles", ErrMalformed, len(m), h.Tiles)
		}
		if rem := h.Tiles % 8; rem != 0 && m[len(m)-1]>>rem != 0 {
			return Report{}, fmt.Errorf("%w: missing-tile map marks tiles past %d", ErrMalformed, h.Tiles)
		}
		r.Missing = m
	}
	return r, nil
}
