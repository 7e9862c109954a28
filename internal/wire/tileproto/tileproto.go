package tileproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/netstation/netstation/internal/wire/crc"
)

// Port is the UDP port a display serves the protocol on: VNC's 5900 plus
// 10, so that it never collides with a real VNC server.
const Port = 5910

// Wire constants.
const (
	Magic      = 0x4E54 // "NT"
	Version    = 1
	HeaderSize = 32
	// MaxDatagram is the largest datagram a display accepts (and the
	// largest UDP payload IPv4 can carry).
	MaxDatagram = 65507
	// MaxPayloadUnfragmented is the pixel payload that keeps a tile in one
	// 1500-byte Ethernet frame: 1472 bytes of UDP payload minus the header.
	MaxPayloadUnfragmented = 1472 - HeaderSize
	// MaxTileBytes bounds a tile's unpacked pixels (w*h*bytes per pixel),
	// so that a display decodes any tile into one fixed buffer.
	MaxTileBytes = 1 << 18
)

// Type says what a datagram is.
type Type uint8

// Message types.
const (
	TypeTile    Type = 1
	TypePresent Type = 2
	// TypeReport goes the other way, display to sender: what the display
	// holds of a frame (report.go). A display drops REPORTs it receives.
	TypeReport Type = 3
)

// Encoding says how a tile's pixels are packed.
type Encoding uint8

// Encodings.
const (
	// EncodingRaw: w*h pixels, row by row, no padding.
	EncodingRaw Encoding = 0
	// EncodingRLE: PackBits over pixels (see AppendRLE).
	EncodingRLE Encoding = 1
)

// Format is the pixel layout of a tile's payload.
type Format uint8

// Pixel formats: 8 bits per channel.
const (
	FormatRGBA Format = 0
	FormatBGRA Format = 1
	FormatRGB  Format = 2
)

// BytesPerPixel is the size of one pixel in format f, 0 if f is unknown.
func (f Format) BytesPerPixel() int {
	switch f {
	case FormatRGBA, FormatBGRA:
		return 4
	case FormatRGB:
		return 3
	}
	return 0
}

// String names the format as the topology file does.
func (f Format) String() string {
	switch f {
	case FormatRGBA:
		return "rgba"
	case FormatBGRA:
		return "bgra"
	case FormatRGB:
		return "rgb"
	}
	return fmt.Sprintf("format(%d)", uint8(f))
}

// ParseFormat reads a topology's format name ("" means rgba).
func ParseFormat(s string) (Format, error) {
	switch s {
	case "", "rgba":
		return FormatRGBA, nil
	case "bgra":
		return FormatBGRA, nil
	case "rgb":
		return FormatRGB, nil
	}
	return 0, fmt.Errorf("%w: pixel format %q", ErrUnsupported, s)
}

// Errors a decoder reports; each is one drop reason at the display.
var (
	ErrShort       = errors.New("tileproto: datagram shorter than its header")
	ErrMagic       = errors.New("tileproto: bad magic")
	ErrVersion     = errors.New("tileproto: unsupported version")
	ErrChecksum    = errors.New("tileproto: checksum mismatch")
	ErrUnsupported = errors.New("tileproto: unsupported type, encoding or format")
	ErrMalformed   = errors.New("tileproto: malformed tile")
)

// Header is the fixed 32-byte header of every datagram.
//
// For a PRESENT, X, Y, W, H, Encoding and Format are zero and the payload
// is empty or PresentOptions; Tiles is the number of tiles the sender sent
// for the frame.
type Header struct {
	Type     Type
	Encoding Encoding
	Format   Format
	X, Y     uint16
	W, H     uint16
	// Index: TILE: the tile's number in its frame, 1 to Tiles, or 0 for
	// an unnumbered tile. Numbered tiles let a display tell a sender which
	// ones are missing. PRESENT: a token the REPORT it asks for echoes.
	Index  uint16
	Stream uint32 // chosen at random by a sender; a new value restarts sequencing
	Frame  uint32 // frame sequence number, serial-number arithmetic
	Tiles  uint32 // tiles in this frame, as the sender plans to send them
}

// crcField is the offset of the checksum, which covers the whole datagram
// but itself (crc.Skipping).
const crcField = 28

// Append appends h and payload as one datagram to dst.
func Append(dst []byte, h *Header, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, HeaderSize)...)
	b := dst[start:]
	binary.BigEndian.PutUint16(b[0:], Magic)
	b[2] = Version
	b[3] = byte(h.Type)
	b[4] = byte(h.Encoding)
	b[5] = byte(h.Format)
	binary.BigEndian.PutUint16(b[6:], h.X)
	binary.BigEndian.PutUint16(b[8:], h.Y)
	binary.BigEndian.PutUint16(b[10:], h.W)
	binary.BigEndian.PutUint16(b[12:], h.H)
	binary.BigEndian.PutUint16(b[14:], h.Index)
	binary.BigEndian.PutUint32(b[16:], h.Stream)
	binary.BigEndian.PutUint32(b[20:], h.Frame)
	binary.BigEndian.PutUint32(b[24:], h.Tiles)
	dst = append(dst, payload...)
	b = dst[start:]
	crc.Seal(b, crcField)
	return dst
}

// Seal recomputes the CRC of a datagram built in place — Append with no
// payload, the payload then appended to it — and returns b. It saves
// senders a copy of every tile's pixels.
func Seal(b []byte) []byte {
	if len(b) < HeaderSize {
		return b
	}
	crc.Seal(b, crcField)
	return b
}

// Parse checks a datagram and returns its header and payload (a sub-slice
// of b). It checks the header and checksum only; DecodePixels checks that
// the payload matches the rectangle.
func Parse(b []byte) (Header, []byte, error) {
	var h Header
	if len(b) < HeaderSize {
		return h, nil, ErrShort
	}
	if binary.BigEndian.Uint16(b) != Magic {
		return h, nil, ErrMagic
	}
	if b[2] != Version {
		return h, nil, ErrVersion
	}
	if !crc.Valid(b, crcField) {
		return h, nil, ErrChecksum
	}
	h = Header{
		Type: Type(b[3]), Encoding: Encoding(b[4]), Format: Format(b[5]),
		X: binary.BigEndian.Uint16(b[6:]), Y: binary.BigEndian.Uint16(b[8:]),
		W: binary.BigEndian.Uint16(b[10:]), H: binary.BigEndian.Uint16(b[12:]),
		Stream: binary.BigEndian.Uint32(b[16:]), Frame: binary.BigEndian.Uint32(b[20:]),
		Tiles: binary.BigEndian.Uint32(b[24:]), Index: binary.BigEndian.Uint16(b[14:]),
	}
	payload := b[HeaderSize:]
	switch h.Type {
	case TypeTile:
		if h.W == 0 || h.H == 0 {
			return h, nil, fmt.Errorf("%w: empty rectangle", ErrMalformed)
		}
		if h.Format.BytesPerPixel() == 0 || h.Encoding > EncodingRLE {
			return h, nil, ErrUnsupported
		}
		if int(h.W)*int(h.H)*h.Format.BytesPerPixel() > MaxTileBytes {
			return h, nil, fmt.Errorf("%w: %dx%d tile exceeds %d bytes of pixels", ErrMalformed, h.W, h.H, MaxTileBytes)
		}
		if uint32(h.Index) > h.Tiles {
			return h, nil, fmt.Errorf("%w: tile number %d of %d", ErrMalformed, h.Index, h.Tiles)
		}
	case TypePresent:
		if h.W != 0 || h.H != 0 || h.X != 0 || h.Y != 0 || h.Encoding != 0 || h.Format != 0 {
			return h, nil, fmt.Errorf("%w: PRESENT with a rectangle", ErrMalformed)
		}
		if _, err := ParsePresentOptions(payload); err != nil {
			return h, nil, err
		}
	case TypeReport:
		if h.W != 0 || h.H != 0 || h.X != 0 || h.Y != 0 || h.Encoding != 0 || h.Format != 0 {
			return h, nil, fmt.Errorf("%w: REPORT with a rectangle", ErrMalformed)
		}
		if _, err := ParseReport(&h, payload); err != nil {
			return h, nil, err
		}
	default:
		return h, nil, ErrUnsupported
	}
	return h, payload, nil
}

// DecodePixels unpacks a tile's payload into dst as w*h pixels in the
// tile's format, row by row, and returns dst[:w*h*bpp]. dst must have room
// for them. A payload that does not unpack to exactly that many pixels is
// ErrMalformed.
func DecodePixels(dst []byte, h *Header, payload []byte) ([]byte, error) {
	bpp := h.Format.BytesPerPixel()
	n := int(h.W) * int(h.H) * bpp
	if bpp == 0 {
		return nil, ErrUnsupported
	}
	if len(dst) < n {
		return nil, fmt.Errorf("%w: %d-byte buffer for %d bytes of pixels", ErrMalformed, len(dst), n)
	}
	dst = dst[:n]
	switch h.Encoding {
	case EncodingRaw:
		if len(payload) != n {
			return nil, fmt.Errorf("%w: raw payload %d bytes, want %d", ErrMalformed, len(payload), n)
		}
		copy(dst, payload)
		return dst, nil
	case EncodingRLE:
		if err := decodeRLE(dst, payload, bpp); err != nil {
			return nil, err
		}
		return dst, nil
	}
	return nil, ErrUnsupported
}
