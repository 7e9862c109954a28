package checksum

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

var benchSizes = []int{20, 64, 1500, 9000, 65536}

// sinkSum keeps the compiler from dropping the benchmarked call.
var sinkSum uint16

// BenchmarkPartial measures Partial on buffers that start on an 8-byte
// boundary and, in the "odd" variants, one byte past it.
func BenchmarkPartial(b *testing.B) {
	for _, size := range benchSizes {
		for _, offset := range []int{0, 1} {
			name := fmt.Sprintf("%d", size)
			if offset != 0 {
				name += "/odd"
			}
			b.Run(name, func(b *testing.B) {
				buf := make([]byte, size+offset)
				rng := rand.New(rand.NewPCG(1, uint64(size)))
				for i := range buf {
					buf[i] = byte(rng.Uint32())
				}
				data := buf[offset:]
				b.SetBytes(int64(size))
				for b.Loop() {
					sinkSum = Partial(data, 0)
				}
			})
		}
	}
}

// BenchmarkReference measures the naive 16-bit loop the tests compare
// with, so a run shows what the unrolled 64-bit code buys.
func BenchmarkReference(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%d", size), func(b *testing.B) {
			buf := make([]byte, size)
			b.SetBytes(int64(size))
			for b.Loop() {
				sinkSum = referencePartial(buf, 0)
			}
		})
	}
}
