package disk

import "unsafe"

// A WRITE's data is copied into the mapped backing file with
// non-temporal (streaming) stores where the CPU has them: the lines go to
// memory without being read first (an ordinary store to a line not in
// cache reads it in, "read for ownership") and without evicting the
// receive buffers the data comes from. The disk does not read what it
// wrote soon after; the page cache keeps it for a later READ, from
// memory instead of cache. Under fio's 1 MiB NBD WRITEs, copying into the
// mapping was 38 % of disk0's CPU time with Go's copy (an AVX loop of
// ordinary stores for pieces below 1 MiB); BenchmarkStreamCopy has the
// two side by side (docs/ARCHITECTURE.md, "NBD WRITEs beside nbdkit").
const (
	// streamMin is the smallest copy worth streaming: below a page the
	// head and tail around the aligned body are most of it.
	streamMin = 4096
	// streamChunk bounds one call of the assembly loop, which cannot be
	// preempted: 256 KiB take some tens of microseconds.
	streamChunk = 256 << 10
)

// streamCopy copies min(len(dst), len(src)) bytes of src to dst, as copy
// does, streaming the part of dst from its first 64-byte boundary on in
// 128-byte blocks when the CPU can (haveStream); the stores are fenced
// before it returns. dst and src must not overlap.
func streamCopy(dst, src []byte) int {
	n := min(len(dst), len(src))
	if !haveStream || n < streamMin {
		return copy(dst, src)
	}
	i := int(-uintptr(unsafe.Pointer(&dst[0])) & 63)
	copy(dst[:i], src[:i])
	for {
		k := min(n-i, streamChunk) &^ 127
		if k == 0 {
			copy(dst[i:n], src[i:n])
			return n
		}
		streamBlocks(&dst[i], &src[i], k)
		i += k
	}
}
