package diskproto

import (
	"fmt"
	"net/netip"
	"time"
)

// TransferOrderSize is the size of a TRANSFER request's payload.
const TransferOrderSize = 32

// TransferResultSize is the size of a successful TRANSFER reply's payload.
const TransferResultSize = 24

// TransferOrder is a TRANSFER request's payload: where the source range
// (the request's offset and length) goes and how it is cut into frames
// and tiles of the display protocol (docs/protocols/display.md). The
// range holds whole frames, each Width*Height*bytes-per-pixel bytes, row
// by row; it is sent Repeat times, frame numbers counting up from Frame.
type TransferOrder struct {
	Dest   netip.AddrPort // the display (IPv4)
	Notify netip.AddrPort // told by the display when each frame is on screen; zero: nobody
	Width  uint16         // frame size in pixels
	Height uint16
	Format uint8 // tileproto.Format of the stored pixels
	Flags  uint8 // 0
	TileW  uint16
	TileH  uint16
	Repeat uint16 // times the range is sent; 0 means 1
	Stream uint32 // the display protocol's stream id; 0: the disk picks one
	Frame  uint32 // number of the first frame sent
}

// Marshal returns o's wire form.
func (o *TransferOrder) Marshal() [TransferOrderSize]byte {
	var b [TransferOrderSize]byte
	putAddrPort := func(p []byte, ap netip.AddrPort) {
		if ap.Addr().Is4() {
			a := ap.Addr().As4()
			copy(p[0:4], a[:])
			be.PutUint16(p[4:], ap.Port())
		}
	}
	putAddrPort(b[0:6], o.Dest)
	putAddrPort(b[6:12], o.Notify)
	be.PutUint16(b[12:], o.Width)
	be.PutUint16(b[14:], o.Height)
	b[16], b[17] = o.Format, o.Flags
	be.PutUint16(b[18:], o.TileW)
	be.PutUint16(b[20:], o.TileH)
	be.PutUint16(b[22:], o.Repeat)
	be.PutUint32(b[24:], o.Stream)
	be.PutUint32(b[28:], o.Frame)
	return b
}

// ParseTransferOrder decodes a TRANSFER payload. It checks the fields a
// parser can check (a destination, non-zero sizes, no flags); the disk
// checks the rest against the request and the tile protocol's limits.
func ParseTransferOrder(b []byte) (TransferOrder, error) {
	if len(b) != TransferOrderSize {
		return TransferOrder{}, fmt.Errorf("%w: transfer order of %d bytes", ErrLength, len(b))
	}
	ap := func(p []byte) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[0:4])), be.Uint16(p[4:]))
	}
	o := TransferOrder{
		Dest: ap(b[0:6]), Notify: ap(b[6:12]),
		Width: be.Uint16(b[12:]), Height: be.Uint16(b[14:]),
		Format: b[16], Flags: b[17],
		TileW: be.Uint16(b[18:]), TileH: be.Uint16(b[20:]),
		Repeat: be.Uint16(b[22:]), Stream: be.Uint32(b[24:]), Frame: be.Uint32(b[28:]),
	}
	if o.Notify.Addr().IsUnspecified() && o.Notify.Port() == 0 {
		o.Notify = netip.AddrPort{}
	}
	switch {
	case o.Dest.Addr().IsUnspecified() || o.Dest.Port() == 0:
		return o, fmt.Errorf("%w: transfer destination %v", ErrFlags, o.Dest)
	case o.Notify.IsValid() && (o.Notify.Addr().IsUnspecified() || o.Notify.Port() == 0):
		return o, fmt.Errorf("%w: notify address %v", ErrFlags, o.Notify)
	case o.Width == 0 || o.Height == 0 || o.TileW == 0 || o.TileH == 0:
		return o, fmt.Errorf("%w: frame %dx%d, tile %dx%d", ErrFlags, o.Width, o.Height, o.TileW, o.TileH)
	case o.Flags != 0:
		return o, fmt.Errorf("%w: transfer flags %#x", ErrFlags, o.Flags)
	}
	return o, nil
}

// TransferDestination returns the destination of a TRANSFER payload, the
// address a transfer capability is bound to (capability.TransferKey).
func TransferDestination(b []byte) (netip.AddrPort, bool) {
	o, err := ParseTransferOrder(b)
	return o.Dest, err == nil
}

// TransferResult is a successful TRANSFER reply's payload.
type TransferResult struct {
	Frames  uint32        // frames the display confirmed presented
	Tiles   uint32        // tile datagrams sent, retransmissions included
	Resent  uint32        // of Tiles, retransmissions of tiles the display reported missing
	Elapsed time.Duration // from the order's arrival to the last frame's confirmation
	Windows uint32        // flow-control checkpoints the display answered
}

// Marshal returns r's wire form.
func (r *TransferResult) Marshal() []byte {
	b := make([]byte, TransferResultSize)
	be.PutUint32(b[0:], r.Frames)
	be.PutUint32(b[4:], r.Tiles)
	be.PutUint32(b[8:], r.Resent)
	be.PutUint32(b[12:], r.Windows)
	be.PutUint64(b[16:], uint64(r.Elapsed))
	return b
}

// ParseTransferResult decodes a TRANSFER reply's payload.
func ParseTransferResult(b []byte) (TransferResult, error) {
	if len(b) != TransferResultSize {
		return TransferResult{}, fmt.Errorf("%w: transfer result of %d bytes", ErrLength, len(b))
	}
	return TransferResult{Frames: be.Uint32(b[0:]), Tiles: be.Uint32(b[4:]), Resent: be.Uint32(b[8:]),
		Windows: be.Uint32(b[12:]), Elapsed: time.Duration(be.Uint64(b[16:]))}, nil
}
