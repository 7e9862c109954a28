package storage

import (
	"math/rand/v2"
	"testing"

	"github.com/netstation/netstation/internal/wire/diskproto"
)

// TestCallChecksum: the running checksum of a READ's destination equals
// the CRC-32C of its bytes however the datagrams arrive: in order, out of
// order, and when one overwrites bytes already summed (a broken or hostile
// disk), where a checksum of the first copy would pass bytes no longer there.
func TestCallChecksum(t *testing.T) {
	const length, per = 16000, 1400
	data := make([]byte, length)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	type piece struct{ off, n int }
	var inOrder []piece
	for off := 0; off < length; off += per {
		inOrder = append(inOrder, piece{off, min(per, length-off)})
	}
	swapped := append([]piece(nil), inOrder...)
	swapped[2], swapped[7] = swapped[7], swapped[2]
	overlap := append(append([]piece(nil), inOrder...), piece{300, 40})

	for name, pieces := range map[string][]piece{"in order": inOrder, "out of order": swapped, "overlapping": overlap} {
		cl := &call{dst: make([]byte, length)}
		for k, p := range pieces {
			src := data[p.off : p.off+p.n]
			if k >= len(inOrder) {
				src = make([]byte, p.n) // other bytes over summed ones
			}
			cl.placed(p.off, copy(cl.dst[p.off:], src))
		}
		if got, want := cl.checksum(), diskproto.Checksum(cl.dst); got != want {
			t.Errorf("%s: running checksum %08x, the destination's %08x", name, got, want)
		}
	}
}
