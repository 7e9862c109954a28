package crc

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// TestCLMULMatchesTable checks the folding code, with and without
// AVX-512, against hash/crc32 over lengths around every boundary the
// code has (64, 256, 512 bytes, the 16-byte tail), every alignment of
// the start, and initial values.
func TestCLMULMatchesTable(t *testing.T) {
	if !hasCLMUL {
		t.Skip("no PCLMULQDQ on this CPU: update is hash/crc32's")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20+64)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	lengths := []int{64, 80, 128, 240, 256, 272, 496, 512, 528, 768, 1008, 1024, 1040, 1440, 4096, 32 << 10, 1 << 20}
	for range 200 {
		lengths = append(lengths, 64+16*rng.IntN(8192))
	}
	paths := []bool{false}
	if hasAVX512 {
		paths = append(paths, true)
	}
	for _, avx := range paths {
		for _, n := range lengths {
			for _, align := range []int{0, 1, 7, 16, 33} {
				p := buf[align : align+n]
				init := rng.Uint32()
				want := crc32.Update(init, castagnoli, p)
				if got := ^castagnoliCLMUL(^init, p, avx); got != want {
					t.Fatalf("avx512=%v, %d bytes at alignment %d, initial %#x: %#x, want %#x", avx, n, align, init, got, want)
				}
			}
		}
	}
}

// TestUpdateEveryLength checks Update, the path callers take (folded
// bulk, table tail), against hash/crc32 at every length to 2 KiB.
func TestUpdateEveryLength(t *testing.T) {
	buf := make([]byte, 2048+3)
	for i := range buf {
		buf[i] = byte(i*131 + 7)
	}
	for n := range 2048 {
		p := buf[3 : 3+n]
		if got, want := Update(0x12345678, p), crc32.Update(0x12345678, castagnoli, p); got != want {
			t.Fatalf("%d bytes: %#x, want %#x", n, got, want)
		}
	}
}

func FuzzUpdate(f *testing.F) {
	f.Add(uint32(0), make([]byte, 300))
	f.Add(uint32(0xffffffff), make([]byte, 1024))
	f.Add(uint32(7), []byte("short"))
	f.Fuzz(func(t *testing.T, init uint32, p []byte) {
		if got, want := Update(init, p), crc32.Update(init, castagnoli, p); got != want {
			t.Fatalf("%d bytes from %#x: %#x, want %#x", len(p), init, got, want)
		}
	})
}

// BenchmarkUpdate compares hash/crc32 (SSE4.2) with the folding code at
// the sizes the storage protocol sums: a datagram's share, a run, a
// request.
func BenchmarkUpdate(b *testing.B) {
	for _, n := range []int{64, 128, 256, 1440, 4096, 32 << 10, 256 << 10} {
		p := make([]byte, n)
		for _, impl := range []struct {
			name string
			fn   func(uint32, []byte) uint32
		}{{"table", tableUpdate}, {"update", update}} {
			b.Run(impl.name+"-"+itoa(n), func(b *testing.B) {
				b.SetBytes(int64(n))
				var c uint32
				for b.Loop() {
					c = impl.fn(c, p)
				}
			})
		}
	}
}

func itoa(n int) string {
	if n >= 1<<10 && n%(1<<10) == 0 {
		return itoa(n>>10) + "K"
	}
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}
