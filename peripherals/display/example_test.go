package display_test

import (
	"fmt"

	"github.com/netstation/netstation/internal/wire/tileproto"
	"github.com/netstation/netstation/peripherals/display"
)

// A 2x1 red tile, then PRESENT: the snapshot shows it; a tile outside the
// framebuffer is counted and dropped.
func Example() {
	d, _ := display.New(display.Config{Width: 4, Height: 4})
	red := []byte{255, 0, 0, 255, 255, 0, 0, 255}
	d.Apply(tileproto.Append(nil, &tileproto.Header{Type: tileproto.TypeTile, X: 1, Y: 2, W: 2, H: 1, Stream: 7, Frame: 1, Tiles: 1}, red))
	d.Apply(tileproto.Append(nil, &tileproto.Header{Type: tileproto.TypePresent, Stream: 7, Frame: 1, Tiles: 1}, nil))
	err := d.Apply(tileproto.Append(nil, &tileproto.Header{Type: tileproto.TypeTile, X: 3, Y: 0, W: 2, H: 1, Stream: 7, Frame: 2, Tiles: 1}, red))

	snap, frames := d.Snapshot()
	fmt.Println(frames, snap.RGBAAt(1, 2), snap.RGBAAt(0, 0))
	fmt.Println(err)
	fmt.Println(d.Stats().Drops)
	// Output:
	// 1 {255 0 0 255} {0 0 0 255}
	// display: tile outside the framebuffer: 2x1 at (3,0)
	// map[outside_framebuffer:1]
}
