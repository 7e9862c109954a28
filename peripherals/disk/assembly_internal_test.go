package disk

import (
	"math/rand/v2"
	"testing"

	"github.com/netstation/netstation/internal/wire/diskproto"
)

// TestAssemblyChecksum: the running checksum of a WRITE's assembly equals
// the CRC-32C of the assembled bytes however the datagrams arrive: in
// order, out of order, and when one overwrites bytes already summed (a
// hostile or broken client), where a checksum of the first copy would
// pass data that is no longer there.
func TestAssemblyChecksum(t *testing.T) {
	const length, per = 16000, 1400
	data := make([]byte, length)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	type piece struct{ off, n int }
	var inOrder []piece
	for off := 0; off < length; off += per {
		inOrder = append(inOrder, piece{off, min(per, length-off)})
	}
	swapped := append([]piece(nil), inOrder...)
	swapped[3], swapped[5] = swapped[5], swapped[3]
	overlap := append(append([]piece(nil), inOrder...), piece{100, 50})

	for name, pieces := range map[string][]piece{"in order": inOrder, "out of order": swapped, "overlapping": overlap} {
		buf := make([]byte, length)
		a := &assembly{buf: &buf}
		for k, p := range pieces {
			src := data[p.off : p.off+p.n]
			if k >= len(inOrder) {
				src = make([]byte, p.n) // other bytes over summed ones
			}
			a.placed(p.off, copy(buf[p.off:], src))
		}
		if got, want := a.checksum(buf), diskproto.Checksum(buf); got != want {
			t.Errorf("%s: running checksum %08x, the assembled bytes' %08x", name, got, want)
		}
	}
}
