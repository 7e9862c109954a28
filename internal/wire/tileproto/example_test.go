package tileproto_test

import (
	"fmt"

	"github.com/netstation/netstation/internal/wire/tileproto"
)

func Example() {
	// One 2x1 tile of red and blue, then the frame's PRESENT.
	tile := tileproto.Append(nil, &tileproto.Header{Type: tileproto.TypeTile, X: 10, Y: 20, W: 2, H: 1, Frame: 1, Tiles: 1},
		[]byte{255, 0, 0, 255, 0, 0, 255, 255})
	present := tileproto.Append(nil, &tileproto.Header{Type: tileproto.TypePresent, Frame: 1, Tiles: 1}, nil)

	h, payload, err := tileproto.Parse(tile)
	pix, _ := tileproto.DecodePixels(make([]byte, 8), &h, payload)
	fmt.Println(len(tile), h.X, h.Y, h.W, h.H, pix[:4], err)
	h, _, err = tileproto.Parse(present)
	fmt.Println(len(present), h.Type == tileproto.TypePresent, h.Tiles, err)
	// Output:
	// 40 10 20 2 1 [255 0 0 255] <nil>
	// 32 true 1 <nil>
}
