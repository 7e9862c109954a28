package tileproto

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func tile(w, h int, enc Encoding, pix []byte) []byte {
	hd := Header{Type: TypeTile, Encoding: enc, X: 40, Y: 36, W: uint16(w), H: uint16(h), Stream: 9, Frame: 3, Tiles: 7}
	return Append(nil, &hd, pix)
}

func TestRoundTripRaw(t *testing.T) {
	pix := make([]byte, 20*18*4)
	for i := range pix {
		pix[i] = byte(i * 7)
	}
	b := tile(20, 18, EncodingRaw, pix)
	if len(b) != 1472 {
		t.Fatalf("a raw 20x18 RGBA tile is %d bytes, want 1472 (one unfragmented datagram)", len(b))
	}
	h, payload, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Header{Type: TypeTile, X: 40, Y: 36, W: 20, H: 18, Stream: 9, Frame: 3, Tiles: 7}
	if h != want {
		t.Fatalf("header %+v, want %+v", h, want)
	}
	got, err := DecodePixels(make([]byte, MaxTileBytes), &h, payload)
	if err != nil || !bytes.Equal(got, pix) {
		t.Fatalf("pixels differ (%v)", err)
	}
}

func TestRLERoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cases := map[string][]byte{}
	flat := bytes.Repeat([]byte{1, 2, 3, 255}, 1000)
	cases["flat"] = flat
	noise := make([]byte, 4*777)
	for i := range noise {
		noise[i] = byte(r.IntN(256))
	}
	cases["noise"] = noise
	mixed := make([]byte, 0, 4*2000)
	for len(mixed) < 4*2000 {
		px := []byte{byte(r.IntN(3)), 0, 0, 255}
		for k := r.IntN(200); k >= 0 && len(mixed) < 4*2000; k-- {
			mixed = append(mixed, px...)
		}
	}
	cases["mixed"] = mixed
	cases["one"] = []byte{9, 9, 9, 9}
	for name, pix := range cases {
		for _, bpp := range []int{3, 4} {
			p := pix[:len(pix)/bpp*bpp]
			enc := AppendRLE(nil, p, bpp)
			n := len(p) / bpp
			if max := len(p) + (n+127)/128; len(enc) > max {
				t.Errorf("%s/%d: RLE of %d bytes is %d, over the bound %d", name, bpp, len(p), len(enc), max)
			}
			got := make([]byte, len(p))
			if err := decodeRLE(got, enc, bpp); err != nil || !bytes.Equal(got, p) {
				t.Errorf("%s/%d: round trip failed: %v", name, bpp, err)
			}
		}
	}
	if enc := AppendRLE(nil, flat, 4); len(enc) >= len(flat)/20 {
		t.Errorf("a flat tile compresses to %d of %d bytes", len(enc), len(flat))
	}
}

func TestParseRejects(t *testing.T) {
	good := tile(2, 2, EncodingRaw, make([]byte, 16))
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"short", good[:HeaderSize-1], ErrShort},
		{"magic", mut(func(b []byte) []byte { b[0] = 'X'; return b }), ErrMagic},
		{"version", mut(func(b []byte) []byte { b[2] = 2; return b }), ErrVersion},
		{"crc", mut(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrChecksum},
		{"type", Append(nil, &Header{Type: 9}, nil), ErrUnsupported},
		{"format", Append(nil, &Header{Type: TypeTile, Format: 7, W: 1, H: 1}, make([]byte, 4)), ErrUnsupported},
		{"encoding", Append(nil, &Header{Type: TypeTile, Encoding: 5, W: 1, H: 1}, make([]byte, 4)), ErrUnsupported},
		{"empty rect", Append(nil, &Header{Type: TypeTile, W: 0, H: 4}, nil), ErrMalformed},
		{"huge tile", Append(nil, &Header{Type: TypeTile, W: 1000, H: 1000, Encoding: EncodingRLE}, []byte{255, 1, 2, 3, 4}), ErrMalformed},
		{"present payload", Append(nil, &Header{Type: TypePresent}, []byte{1}), ErrMalformed},
		{"present rect", Append(nil, &Header{Type: TypePresent, W: 3}, nil), ErrMalformed},
	}
	for _, c := range cases {
		if _, _, err := Parse(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
	}
}

func TestDecodePixelsRejects(t *testing.T) {
	buf := make([]byte, MaxTileBytes)
	cases := map[string]struct {
		h       Header
		payload []byte
	}{
		"raw short":      {Header{Type: TypeTile, W: 2, H: 2}, make([]byte, 15)},
		"raw long":       {Header{Type: TypeTile, W: 2, H: 2}, make([]byte, 17)},
		"rle short":      {Header{Type: TypeTile, W: 2, H: 2, Encoding: EncodingRLE}, []byte{129, 1, 2, 3, 4}},
		"rle overrun":    {Header{Type: TypeTile, W: 2, H: 2, Encoding: EncodingRLE}, []byte{255, 1, 2, 3, 4}},
		"rle literal":    {Header{Type: TypeTile, W: 2, H: 2, Encoding: EncodingRLE}, []byte{3, 1, 2, 3}},
		"rle no pixel":   {Header{Type: TypeTile, W: 2, H: 2, Encoding: EncodingRLE}, []byte{130}},
		"rle extra data": {Header{Type: TypeTile, W: 1, H: 2, Encoding: EncodingRLE}, []byte{128, 1, 2, 3, 4, 0, 1, 1, 1, 1}},
	}
	for name, c := range cases {
		if _, err := DecodePixels(buf, &c.h, c.payload); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v, want ErrMalformed", name, err)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, f := range []Format{FormatRGBA, FormatBGRA, FormatRGB} {
		if g, err := ParseFormat(f.String()); err != nil || g != f {
			t.Errorf("%v: %v %v", f, g, err)
		}
	}
	if _, err := ParseFormat("yuv"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("yuv accepted: %v", err)
	}
}
