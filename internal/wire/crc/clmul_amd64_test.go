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

// BenchmarkSkipping is a data segment's header check (32 bytes, the field
// at 12) and a request's (136 bytes, the field at 60).
func BenchmarkSkipping(b *testing.B) {
	for _, h := range []struct{ size, field int }{{32, 12}, {136, 60}} {
		p := make([]byte, h.size)
		b.Run(itoa(h.size), func(b *testing.B) {
			var c uint32
			for b.Loop() {
				c += Skipping(p, h.field)
			}
			_ = c
		})
		b.Run("table-"+itoa(h.size), func(b *testing.B) {
			var c uint32
			for b.Loop() {
				c += tableUpdate(tableUpdate(0, p[:h.field]), p[h.field+FieldSize:])
			}
			_ = c
		})
	}
}

// TestSmallMatchesTable checks the CRC32-instruction loop for short
// pieces against hash/crc32 at every length to 300 and every alignment.
func TestSmallMatchesTable(t *testing.T) {
	if !hasSSE42 {
		t.Skip("no SSE4.2 on this CPU: update is hash/crc32's")
	}
	buf := make([]byte, 320)
	for i := range buf {
		buf[i] = byte(i*37 + 11)
	}
	for n := range 300 {
		for align := range 8 {
			p := buf[align : align+n]
			if got, want := ^castagnoliSmall(^uint32(n), p), crc32.Update(uint32(n), castagnoli, p); got != want {
				t.Fatalf("%d bytes at alignment %d: %#x, want %#x", n, align, got, want)
			}
		}
	}
}
