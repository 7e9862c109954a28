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
	hasSSE42  = cpu.X86.HasSSE42
	hasCLMUL  = hasSSE42 && cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSE41
	hasAVX512 = hasCLMUL && cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512VPCLMULQDQ
)

//go:noescape
func castagnoliCLMUL(crc uint32, p []byte, avx512 bool) uint32

//go:noescape
func castagnoliSmall(crc uint32, p []byte) uint32

// update continues crc over p: the bulk of a long p folded, the rest (and
// a short p: a header, two parts of it when crc.Skipping leaves out its
// field) by the CRC32 instruction directly: hash/crc32's Update goes
// through a table check, a sync.Once and a function variable first (CPU
// time per call here: 16 bytes 4.7 against 10.8 ns, 64 bytes 12 against
// 18), and every data segment's header is checked and sealed in two
// calls.
func update(crc uint32, p []byte) uint32 {
	if !hasSSE42 {
		return tableUpdate(crc, p)
	}
	crc = ^crc
	if hasCLMUL && len(p) >= clmulMin {
		n := len(p) &^ 15
		crc = castagnoliCLMUL(crc, p[:n], hasAVX512)
		p = p[n:]
	}
	if len(p) > 0 {
		crc = castagnoliSmall(crc, p)
	}
	return ^crc
}
