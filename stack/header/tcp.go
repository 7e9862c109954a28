package header

import (
	"encoding/binary"
	"errors"

	"github.com/netstation/netstation/stack/checksum"
)

// TCP header sizes.
const (
	TCPMinimumSize = 20
	TCPMaximumSize = 60
)

// TCP flags (the low byte of the flags word; NS is not used).
const (
	TCPFlagFIN uint8 = 1 << iota
	TCPFlagSYN
	TCPFlagRST
	TCPFlagPSH
	TCPFlagACK
	TCPFlagURG
	TCPFlagECE
	TCPFlagCWR
)

// TCP option kinds (RFC 9293, 7323, 2018).
const (
	TCPOptEOL           uint8 = 0
	TCPOptNOP           uint8 = 1
	TCPOptMSS           uint8 = 2
	TCPOptWindowScale   uint8 = 3
	TCPOptSACKPermitted uint8 = 4
	TCPOptSACK          uint8 = 5
	TCPOptTimestamps    uint8 = 8
)

// TCPMaxSACKBlocks is how many SACK blocks ParseTCPOptions keeps; with
// timestamps only three fit in the 40 option bytes anyway.
const TCPMaxSACKBlocks = 4

// TCPMaxWindowScale is the largest shift RFC 7323 allows.
const TCPMaxWindowScale = 14

// ErrTCPOptions is returned by ParseTCPOptions for a malformed option list.
var ErrTCPOptions = errors.New("header: malformed TCP options")

// TCP is a TCP header view; it may extend over the payload.
type TCP []byte

// SrcPort returns the source port.
func (b TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(b[0:]) }

// DstPort returns the destination port.
func (b TCP) DstPort() uint16 { return binary.BigEndian.Uint16(b[2:]) }

// Seq returns the sequence number.
func (b TCP) Seq() uint32 { return binary.BigEndian.Uint32(b[4:]) }

// Ack returns the acknowledgment number.
func (b TCP) Ack() uint32 { return binary.BigEndian.Uint32(b[8:]) }

// DataOffset returns the header length in bytes, options included.
func (b TCP) DataOffset() int { return int(b[12]>>4) * 4 }

// Flags returns the flag bits.
func (b TCP) Flags() uint8 { return b[13] }

// Window returns the (unscaled) window field.
func (b TCP) Window() uint16 { return binary.BigEndian.Uint16(b[14:]) }

// Checksum returns the checksum field.
func (b TCP) Checksum() uint16 { return binary.BigEndian.Uint16(b[16:]) }

// UrgentPointer returns the urgent pointer field.
func (b TCP) UrgentPointer() uint16 { return binary.BigEndian.Uint16(b[18:]) }

// Options returns the option bytes.
func (b TCP) Options() []byte { return b[TCPMinimumSize:b.DataOffset()] }

// Payload returns what follows the header.
func (b TCP) Payload() []byte { return b[b.DataOffset():] }

// SetChecksum sets the checksum field.
func (b TCP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[16:], c) }

// IsValid reports whether b is long enough for its own data offset.
func (b TCP) IsValid() bool {
	return len(b) >= TCPMinimumSize && b.DataOffset() >= TCPMinimumSize && b.DataOffset() <= len(b)
}

// SACKBlock is one SACK block: the sequence range [Start, End).
type SACKBlock struct{ Start, End uint32 }

// TCPOptions are the options the stack understands. The zero value means
// none present.
type TCPOptions struct {
	MSS           uint16 // 0 = absent
	HasWS         bool
	WS            uint8 // window shift, clamped to TCPMaxWindowScale
	SACKPermitted bool
	HasTS         bool
	TSVal, TSEcr  uint32
	NumSACK       int
	SACK          [TCPMaxSACKBlocks]SACKBlock
}

// TCPFields are the fields Encode writes. The options are encoded from
// Opts in a fixed order (MSS, SACK-permitted, timestamps, window scale,
// SACK blocks) padded with NOPs to a multiple of four bytes.
type TCPFields struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8
	Window           uint16
	Checksum         uint16
	Opts             TCPOptions
}

// TCPOptionsSize returns the encoded size of o (a multiple of four).
func TCPOptionsSize(o *TCPOptions) int {
	n := 0
	if o.MSS != 0 {
		n += 4
	}
	if o.SACKPermitted && o.HasTS {
		n += 12 // SACK-permitted (2) and timestamps (10) share one aligned run
	} else {
		if o.SACKPermitted {
			n += 4
		}
		if o.HasTS {
			n += 12
		}
	}
	if o.HasWS {
		n += 4
	}
	if o.NumSACK > 0 {
		n += 4 + 8*o.NumSACK // NOP NOP kind len, blocks
	}
	return n
}

// Encode writes f into b (which must hold 20 bytes plus the options) and
// returns the header length.
func (b TCP) Encode(f *TCPFields) int {
	o := &f.Opts
	hl := TCPMinimumSize + TCPOptionsSize(o)
	binary.BigEndian.PutUint16(b[0:], f.SrcPort)
	binary.BigEndian.PutUint16(b[2:], f.DstPort)
	binary.BigEndian.PutUint32(b[4:], f.Seq)
	binary.BigEndian.PutUint32(b[8:], f.Ack)
	b[12] = byte(hl/4) << 4
	b[13] = f.Flags
	binary.BigEndian.PutUint16(b[14:], f.Window)
	binary.BigEndian.PutUint16(b[16:], f.Checksum)
	b[18], b[19] = 0, 0
	p := b[TCPMinimumSize:hl]
	if o.MSS != 0 {
		p[0], p[1] = TCPOptMSS, 4
		binary.BigEndian.PutUint16(p[2:], o.MSS)
		p = p[4:]
	}
	switch {
	case o.SACKPermitted && o.HasTS:
		p[0], p[1] = TCPOptSACKPermitted, 2
		p[2], p[3] = TCPOptTimestamps, 10
		binary.BigEndian.PutUint32(p[4:], o.TSVal)
		binary.BigEndian.PutUint32(p[8:], o.TSEcr)
		p = p[12:]
	case o.SACKPermitted:
		p[0], p[1], p[2], p[3] = TCPOptNOP, TCPOptNOP, TCPOptSACKPermitted, 2
		p = p[4:]
	case o.HasTS:
		p[0], p[1], p[2], p[3] = TCPOptNOP, TCPOptNOP, TCPOptTimestamps, 10
		binary.BigEndian.PutUint32(p[4:], o.TSVal)
		binary.BigEndian.PutUint32(p[8:], o.TSEcr)
		p = p[12:]
	}
	if o.HasWS {
		p[0], p[1], p[2], p[3] = TCPOptNOP, TCPOptWindowScale, 3, o.WS
		p = p[4:]
	}
	if o.NumSACK > 0 {
		p[0], p[1], p[2], p[3] = TCPOptNOP, TCPOptNOP, TCPOptSACK, byte(2+8*o.NumSACK)
		p = p[4:]
		for i := range o.NumSACK {
			binary.BigEndian.PutUint32(p[0:], o.SACK[i].Start)
			binary.BigEndian.PutUint32(p[4:], o.SACK[i].End)
			p = p[8:]
		}
	}
	return hl
}

// ParseTCPOptions decodes the option bytes opts into o. Unknown options
// are skipped; a length that runs past the end, or a known option of the
// wrong length, is ErrTCPOptions. SACK blocks beyond TCPMaxSACKBlocks are
// ignored.
func ParseTCPOptions(opts []byte, o *TCPOptions) error {
	*o = TCPOptions{}
	for len(opts) > 0 {
		kind := opts[0]
		switch kind {
		case TCPOptEOL:
			return nil
		case TCPOptNOP:
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 {
			return ErrTCPOptions
		}
		l := int(opts[1])
		if l < 2 || l > len(opts) {
			return ErrTCPOptions
		}
		body := opts[2:l]
		switch kind {
		case TCPOptMSS:
			if l != 4 {
				return ErrTCPOptions
			}
			o.MSS = binary.BigEndian.Uint16(body)
		case TCPOptWindowScale:
			if l != 3 {
				return ErrTCPOptions
			}
			o.HasWS = true
			o.WS = min(body[0], TCPMaxWindowScale)
		case TCPOptSACKPermitted:
			if l != 2 {
				return ErrTCPOptions
			}
			o.SACKPermitted = true
		case TCPOptTimestamps:
			if l != 10 {
				return ErrTCPOptions
			}
			o.HasTS = true
			o.TSVal = binary.BigEndian.Uint32(body)
			o.TSEcr = binary.BigEndian.Uint32(body[4:])
		case TCPOptSACK:
			if (l-2)%8 != 0 || l == 2 {
				return ErrTCPOptions
			}
			for i := 0; i+8 <= len(body) && o.NumSACK < TCPMaxSACKBlocks; i += 8 {
				o.SACK[o.NumSACK] = SACKBlock{binary.BigEndian.Uint32(body[i:]), binary.BigEndian.Uint32(body[i+4:])}
				o.NumSACK++
			}
		}
		opts = opts[l:]
	}
	return nil
}

// TCPChecksum returns the checksum to store in the TCP segment b (header
// with a zero checksum field plus payload) between src and dst.
func TCPChecksum(src, dst [4]byte, b []byte) uint16 {
	return checksum.Checksum(b, checksum.PseudoHeader(src, dst, ProtocolTCP, uint16(len(b))))
}
