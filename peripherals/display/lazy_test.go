package display

import (
	"bytes"
	"image/png"
	"testing"
)

// TestBuffersWaitForTheFirstTile: a display that was never sent a tile
// holds no framebuffer, and still shows (Snapshot, PNG) an opaque black
// screen of its size.
func TestBuffersWaitForTheFirstTile(t *testing.T) {
	d, err := New(Config{Width: 64, Height: 48})
	if err != nil {
		t.Fatal(err)
	}
	if d.back != nil || d.front != nil {
		t.Fatal("framebuffers allocated before any tile")
	}
	im, n := d.Snapshot()
	if n != 0 || im.Rect.Dx() != 64 || im.Rect.Dy() != 48 {
		t.Fatalf("snapshot %v after %d frames", im.Rect, n)
	}
	for i := 0; i < len(im.Pix); i += 4 {
		if !bytes.Equal(im.Pix[i:i+4], []byte{0, 0, 0, 0xff}) {
			t.Fatalf("pixel %d is %v, want opaque black", i/4, im.Pix[i:i+4])
		}
	}
	b, _, err := d.PNG()
	if err != nil {
		t.Fatal(err)
	}
	p, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if r, g, bl, a := p.At(10, 10).RGBA(); p.Bounds() != im.Rect || r|g|bl != 0 || a != 0xffff {
		t.Fatalf("PNG %v, pixel %v %v %v %v", p.Bounds(), r, g, bl, a)
	}
	if d.back != nil || d.front != nil {
		t.Fatal("reading the screen allocated the framebuffers")
	}
}
