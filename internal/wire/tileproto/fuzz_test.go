package tileproto

import (
	"bytes"
	"net/netip"
	"testing"
)

// FuzzParse feeds arbitrary datagrams to the parser and pixel decoder: no
// panic, no output beyond the tile's own pixels, and whatever is accepted
// re-encodes to something that parses the same.
func FuzzParse(f *testing.F) {
	f.Add(Append(nil, &Header{Type: TypeTile, W: 2, H: 2, Frame: 1, Tiles: 1}, make([]byte, 16)))
	f.Add(Append(nil, &Header{Type: TypeTile, W: 20, H: 18, Encoding: EncodingRLE}, AppendRLE(nil, make([]byte, 20*18*4), 4)))
	f.Add(Append(nil, &Header{Type: TypeTile, W: 3, H: 1, Format: FormatRGB}, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}))
	f.Add(Append(nil, &Header{Type: TypePresent, Frame: 5, Tiles: 2560}, nil))
	f.Add(AppendPresent(nil, &Header{Frame: 5, Tiles: 2560, Index: 3}, PresentOptions{Flags: PresentAck | PresentComplete,
		Notify: netip.MustParseAddrPort("10.0.0.1:999")}))
	f.Add(AppendReport(nil, &Header{Frame: 5, Tiles: 12, Index: 3}, &Report{Received: 10, Missing: []byte{1, 8}}))
	f.Add(Append(nil, &Header{Type: TypeTile, W: 2, H: 2, Frame: 1, Tiles: 4, Index: 4}, make([]byte, 16)))
	f.Add([]byte("NT"))
	buf := make([]byte, MaxTileBytes)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := Parse(b)
		if err == nil && h.Type == TypeReport {
			// An accepted REPORT re-encodes to itself.
			r, err := ParseReport(&h, payload)
			if err != nil {
				t.Fatalf("Parse accepted a REPORT ParseReport refuses: %v", err)
			}
			if again := AppendReport(nil, &h, &r); !bytes.Equal(again, b) {
				t.Fatalf("REPORT re-encodes differently")
			}
			return
		}
		if err != nil || h.Type != TypeTile {
			return
		}
		pix, err := DecodePixels(buf, &h, payload)
		if err != nil {
			return
		}
		if len(pix) != int(h.W)*int(h.H)*h.Format.BytesPerPixel() {
			t.Fatalf("%d bytes of pixels for %dx%d %v", len(pix), h.W, h.H, h.Format)
		}
		again := Append(nil, &Header{Type: TypeTile, Format: h.Format, X: h.X, Y: h.Y, W: h.W, H: h.H, Stream: h.Stream, Frame: h.Frame, Tiles: h.Tiles, Index: h.Index}, pix)
		h2, p2, err := Parse(again)
		if err != nil || h2.W != h.W || h2.H != h.H || !bytes.Equal(p2, pix) {
			t.Fatalf("raw re-encoding does not parse back: %v", err)
		}
	})
}

// FuzzRLE round-trips arbitrary pixels through the RLE encoding.
func FuzzRLE(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8}, uint8(4))
	f.Add(bytes.Repeat([]byte{7}, 3000), uint8(3))
	f.Fuzz(func(t *testing.T, pix []byte, bpp uint8) {
		n := int(bpp%2) + 3
		pix = pix[:len(pix)/n*n]
		enc := AppendRLE(nil, pix, n)
		got := make([]byte, len(pix))
		if err := decodeRLE(got, enc, n); err != nil || !bytes.Equal(got, pix) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzTileFields gets past the checksum: arbitrary header fields and
// payload, sealed with a correct CRC, through Parse and DecodePixels.
func FuzzTileFields(f *testing.F) {
	f.Add(uint8(1), uint8(1), uint8(0), uint16(2), uint16(2), []byte{129, 1, 2, 3, 4, 1, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add(uint8(1), uint8(0), uint8(2), uint16(1), uint16(1), []byte{1, 2, 3})
	f.Add(uint8(2), uint8(0), uint8(0), uint16(0), uint16(0), []byte{})
	buf := make([]byte, MaxTileBytes)
	f.Fuzz(func(t *testing.T, typ, enc, format uint8, w, h uint16, payload []byte) {
		b := Append(nil, &Header{Type: Type(typ), Encoding: Encoding(enc), Format: Format(format), W: w, H: h}, payload)
		hd, p, err := Parse(b)
		if err != nil || hd.Type != TypeTile {
			return
		}
		pix, err := DecodePixels(buf, &hd, p)
		if err == nil && len(pix) != int(w)*int(h)*hd.Format.BytesPerPixel() {
			t.Fatalf("%d bytes of pixels for %dx%d", len(pix), w, h)
		}
	})
}
