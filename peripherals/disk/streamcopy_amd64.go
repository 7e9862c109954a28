package disk

import "golang.org/x/sys/cpu"

// haveStream reports whether streamBlocks may be called (AVX2).
var haveStream = cpu.X86.HasAVX2

// streamBlocks copies n bytes (a positive multiple of 128) from src to
// dst, which is 32-byte aligned, with non-temporal stores, then fences
// them (SFENCE), so they are ordered before any later store.
//
//go:noescape
func streamBlocks(dst, src *byte, n int)
