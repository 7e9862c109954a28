package diskproto_test

import (
	"math/rand/v2"
	"testing"

	"github.com/netstation/netstation/internal/wire/diskproto"
)

// TestRunningChecksum: the running checksum equals the CRC-32C of the
// placed bytes however the pieces arrive: in order, out of order, and when
// one overwrites bytes already summed (a broken or hostile peer), where a
// checksum of the first copy would vouch for bytes no longer there. The
// disk's WRITE assembly and the client's READ destination both use it.
func TestRunningChecksum(t *testing.T) {
	for _, length := range []int{16000, 5*diskproto.SumRun + 777} {
		testRunningChecksum(t, length)
	}
}

func testRunningChecksum(t *testing.T, length int) {
	const per = 1400
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
	// Over bytes placed but not yet summed (the run not full yet), and
	// over the tail of the data, summed or not.
	overPending := append(append([]piece(nil), inOrder[:4]...), piece{per + 10, 50})
	overPending = append(overPending, inOrder[4:]...)
	overTail := append(append([]piece(nil), inOrder...), piece{length - 60, 50})
	shuffled := append([]piece(nil), inOrder...)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })

	for name, pieces := range map[string][]piece{"in order": inOrder, "out of order": swapped, "overlapping": overlap,
		"over pending": overPending, "over the tail": overTail, "shuffled": shuffled} {
		buf := make([]byte, length)
		var r diskproto.RunningChecksum
		for k, p := range pieces {
			src := data[p.off : p.off+p.n]
			if k > 0 && p.off < pieces[k-1].off && name != "shuffled" && name != "out of order" {
				src = make([]byte, p.n) // other bytes over placed ones
			}
			r.Placed(buf, p.off, copy(buf[p.off:], src))
		}
		if got, want := r.Sum(buf), diskproto.Checksum(buf); got != want {
			t.Errorf("%d bytes, %s: running checksum %08x, the placed bytes' %08x", length, name, got, want)
		}
		r.Reset()
		if got, want := r.Sum(data), diskproto.Checksum(data); got != want {
			t.Errorf("%s: after Reset %08x, want %08x", name, got, want)
		}
	}
}
