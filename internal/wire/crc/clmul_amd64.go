package crc

import "golang.org/x/sys/cpu"

// hash/crc32 sums Castagnoli on amd64 with the SSE4.2 CRC32 instruction,
// three streams at a time: about 8 bytes a cycle at best, and on data that
// comes from memory rather than cache (a disk's blocks, a caller's
// buffer) the storage benchmark's profiles measured 3 GB/s. Carry-less
// multiplication folds 64 bytes per instruction pair (AVX-512 VPCLMULQDQ,
// four accumulators) and reads the data in one sequential stream, as the
// copy beside it does. The fold constants are those of hash/crc32's IEEE
// code computed for Castagnoli's polynomial 0x1EDC6F41: x^(n+-32) mod P,
// bit-reflected and shifted left once, and for the Barrett step P and
// floor(x^64 / P) reflected (the same computation gives hash/crc32's IEEE
// constants). TestCLMULMatchesTable holds both paths to hash/crc32 at
// every length, alignment and initial value it tries; FuzzUpdate too.

// clmulMin is the least length folded; shorter pieces (headers, a
// datagram's share) go to hash/crc32, whose set-up costs less.
const clmulMin = 128

var (
	hasCLMUL  = cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSE41
	hasAVX512 = hasCLMUL && cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512VPCLMULQDQ
)

//go:noescape
func castagnoliCLMUL(crc uint32, p []byte, avx512 bool) uint32

// update continues crc over p: the bulk of a long p folded, the rest (and
// a short p) by hash/crc32.
func update(crc uint32, p []byte) uint32 {
	if hasCLMUL && len(p) >= clmulMin {
		n := len(p) &^ 15
		crc = ^castagnoliCLMUL(^crc, p[:n], hasAVX512)
		p = p[n:]
	}
	return tableUpdate(crc, p)
}
