package disk

import (
	"bytes"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestStreamCopy checks streamCopy against copy for lengths around the
// streaming threshold, the 128-byte blocks and the chunk, at every
// alignment of dst and src within a cache line, and that nothing past the
// copied bytes is touched.
func TestStreamCopy(t *testing.T) {
	if !haveStream {
		t.Log("no non-temporal copy on this CPU: streamCopy is copy")
	}
	src := make([]byte, 2*streamChunk+4096)
	for i := range src {
		src[i] = byte(i*7 + i>>8)
	}
	lengths := []int{0, 1, 127, streamMin - 1, streamMin, streamMin + 1, streamMin + 63, 8191,
		64 << 10, 64<<10 + 77, streamChunk - 1, streamChunk, streamChunk + 129, 2*streamChunk + 1000}
	dst := make([]byte, len(src)+256)
	for _, n := range lengths {
		for _, da := range []int{0, 1, 8, 31, 32, 63} {
			for _, sa := range []int{0, 3, 32} {
				for i := range dst {
					dst[i] = 0xAA
				}
				d, s := dst[da:da+n+64], src[sa:sa+n]
				if got := streamCopy(d, s); got != n {
					t.Fatalf("n=%d dst+%d src+%d: copied %d", n, da, sa, got)
				}
				if !bytes.Equal(d[:n], s) {
					t.Fatalf("n=%d dst+%d src+%d: data differs", n, da, sa)
				}
				for i, b := range dst[:da] {
					if b != 0xAA {
						t.Fatalf("n=%d dst+%d src+%d: byte %d before dst written", n, da, sa, i)
					}
				}
				for i, b := range dst[da+n:] {
					if b != 0xAA {
						t.Fatalf("n=%d dst+%d src+%d: byte %d past the copy written", n, da, sa, i)
					}
				}
			}
		}
	}
	// A short dst bounds the copy, as copy's does.
	if got := streamCopy(dst[:5000], src); got != 5000 || !bytes.Equal(dst[:5000], src[:5000]) {
		t.Fatalf("short dst: copied %d", got)
	}
}

// BenchmarkStreamCopy copies 64 KiB pieces (a GSO super-frame's payload)
// from a 16 MiB source (a link's receive buffers) into a 256 MiB file on
// tmpfs mapped MAP_SHARED, as an NBD WRITE does, with Go's copy and with
// streamCopy.
func BenchmarkStreamCopy(b *testing.B) {
	const region, piece = 256 << 20, 64 << 10
	f, err := os.CreateTemp("/dev/shm", "streamcopy")
	if err != nil {
		b.Fatal(err)
	}
	os.Remove(f.Name())
	defer f.Close()
	if err := f.Truncate(region); err != nil {
		b.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, region, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(m)
	for i := 0; i < region; i += 4096 {
		m[i] = 1 // every page allocated and mapped: the steady state
	}
	src := make([]byte, 16<<20)
	for i := range src {
		src[i] = byte(i)
	}
	for _, bc := range []struct {
		name string
		fn   func(d, s []byte) int
	}{{"copy", func(d, s []byte) int { return copy(d, s) }}, {"stream", streamCopy}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(piece)
			off, so := 0, 0
			for b.Loop() {
				bc.fn(m[off:off+piece], src[so:so+piece])
				off = (off + piece) % region
				so = (so + piece) % len(src)
			}
		})
	}
}
