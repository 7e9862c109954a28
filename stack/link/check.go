package link

import (
	"errors"
	"fmt"
)

// Errors a link's WriteBatch returns for a frame it refuses, shared by the
// implementations so that callers can test for them with errors.Is whatever
// link they hold.
var (
	// ErrFrameTooShort: a frame is shorter than an Ethernet header.
	ErrFrameTooShort = errors.New("link: frame shorter than 14 bytes")
	// ErrFrameTooLong: a frame exceeds MaxFrame.
	ErrFrameTooLong = errors.New("link: frame longer than MaxFrame")
	// ErrNotGSO: a frame longer than MTU+14 lacks a GSO type in its VNetHdr.
	ErrNotGSO = errors.New("link: frame longer than MTU+14 without GSO")
	// ErrNoOffload: a frame asks for checksum offload or GSO from a link
	// without CapVNetHdr.
	ErrNoOffload = errors.New("link: frame needs a virtio-net header the link cannot carry")
)

// CheckFrames validates frames against a link's limits before WriteBatch
// sends any of them, and returns how many leading frames are valid and
// (wrapped, naming the frame) why the next one is not. Every frame must
// hold at least an Ethernet header and at most maxFrame bytes. With
// CapGSO, a frame longer than mtu+14 must carry a GSO type; without
// CapVNetHdr, a frame must not ask for a partial checksum or GSO.
func CheckFrames(frames []Frame, mtu, maxFrame int, caps Caps) (int, error) {
	for i := range frames {
		f := &frames[i]
		switch n := len(f.Buf); {
		case n < 14:
			return i, fmt.Errorf("frame %d: %w", i, ErrFrameTooShort)
		case n > maxFrame:
			return i, fmt.Errorf("frame %d (%d bytes): %w", i, n, ErrFrameTooLong)
		case caps&CapGSO != 0 && n > mtu+14 && f.VNet.GSOType&^GSOECN == GSONone:
			return i, fmt.Errorf("frame %d (%d bytes, MTU %d): %w", i, n, mtu, ErrNotGSO)
		case caps&CapVNetHdr == 0 && (f.VNet.Flags&VNetNeedsCsum != 0 || f.VNet.GSOType != GSONone):
			return i, fmt.Errorf("frame %d: %w", i, ErrNoOffload)
		}
	}
	return len(frames), nil
}
