package engine

import (
	"encoding/binary"
	"errors"

	"github.com/netstation/netstation/stack/checksum"
	"github.com/netstation/netstation/stack/link"
)

// ErrBadOffload is returned by FinishChecksum for a virtio-net header whose
// checksum offsets lie outside the frame.
var ErrBadOffload = errors.New("engine: checksum offsets outside the frame")

// FinishChecksum completes a NEEDS_CSUM frame in software, as a device
// would: the one's-complement sum from CsumStart to the end, whose field at
// CsumStart+CsumOffset already holds the pseudo-header sum, is stored
// complemented there and the flag is cleared. Frames without the flag are
// left alone. Use it before a partial-checksum frame travels on to a
// medium that cannot finish it.
func FinishChecksum(frame []byte, v *link.VNetHdr) error {
	if v.Flags&link.VNetNeedsCsum == 0 {
		return nil
	}
	start, off := int(v.CsumStart), int(v.CsumStart)+int(v.CsumOffset)
	if start > len(frame) || off+2 > len(frame) || off < start {
		return ErrBadOffload
	}
	c := checksum.Checksum(frame[start:], 0)
	if c == 0 && v.CsumOffset == 6 { // UDP: zero means "no checksum"
		c = 0xffff
	}
	binary.BigEndian.PutUint16(frame[off:], c)
	v.Flags &^= link.VNetNeedsCsum
	return nil
}

// SetL4Checksum fills the checksum of the transport segment at
// frame[l4:] (its checksum field at l4+fieldOff, currently zero).
// With offload, only the pseudo-header sum goes into the field and v asks
// the link to finish the job (NEEDS_CSUM); otherwise the checksum is
// computed here. pseudo is checksum.PseudoHeader of the segment.
func SetL4Checksum(frame []byte, l4, fieldOff int, pseudo uint16, offload bool, v *link.VNetHdr) {
	if offload {
		binary.BigEndian.PutUint16(frame[l4+fieldOff:], pseudo)
		v.Flags |= link.VNetNeedsCsum
		v.CsumStart = uint16(l4)
		v.CsumOffset = uint16(fieldOff)
		return
	}
	c := checksum.Checksum(frame[l4:], pseudo)
	if c == 0 && fieldOff == 6 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(frame[l4+fieldOff:], c)
}
