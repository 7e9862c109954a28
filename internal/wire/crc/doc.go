// Package crc is the CRC-32C (Castagnoli, hardware-accelerated on amd64
// and arm64) that netstation's wire formats seal their headers and
// payloads with, and the one way to checksum a header whose checksum
// field lies inside the bytes it covers. On amd64 a piece of 128 bytes or
// more is folded by carry-less multiplication (AVX-512 VPCLMULQDQ where
// the CPU has it), 3-4 times as fast as hash/crc32's CRC32 instruction
// from 4 KiB up (clmul_amd64.go); shorter pieces and the tail go to
// hash/crc32.
package crc
