// Copyright 2011 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in LICENSE-go beside this file (Go's LICENSE).
//
// castagnoliCLMUL is hash/crc32's ieeeCLMUL (Go 1.26, crc32_amd64.s) with
// the constants of the Castagnoli polynomial (computed as that file's
// are: see clmul_amd64.go) and, on AVX-512, four 64-byte accumulators
// folded 256 bytes a round instead of one folded 64 bytes a round (the
// carry-less multiplies of one accumulator wait for each other).

#include "textflag.h"

// Fold by 512 bits: x^(512+32) and x^(512-32) mod P, reflected, << 1.
// Splatted so that one VMOVDQU64 loads it for four lanes.
DATA r2r1<>+0(SB)/8, $0x740eef02
DATA r2r1<>+8(SB)/8, $0x09e4addf8
DATA r2r1<>+16(SB)/8, $0x740eef02
DATA r2r1<>+24(SB)/8, $0x09e4addf8
DATA r2r1<>+32(SB)/8, $0x740eef02
DATA r2r1<>+40(SB)/8, $0x09e4addf8
DATA r2r1<>+48(SB)/8, $0x740eef02
DATA r2r1<>+56(SB)/8, $0x09e4addf8

// Fold by 2048 bits (four accumulators of 512): x^(2048+32), x^(2048-32).
DATA r2048<>+0(SB)/8, $0x0dcb17aa4
DATA r2048<>+8(SB)/8, $0x0b9e02b86
DATA r2048<>+16(SB)/8, $0x0dcb17aa4
DATA r2048<>+24(SB)/8, $0x0b9e02b86
DATA r2048<>+32(SB)/8, $0x0dcb17aa4
DATA r2048<>+40(SB)/8, $0x0b9e02b86
DATA r2048<>+48(SB)/8, $0x0dcb17aa4
DATA r2048<>+56(SB)/8, $0x0b9e02b86

// Fold by 128 bits: x^(128+32), x^(128-32).
DATA r4r3<>+0(SB)/8, $0x0f20c0dfe
DATA r4r3<>+8(SB)/8, $0x14cd00bd6
// Barrett reduction: P reflected (33 bits) and floor(x^64 / P) reflected.
DATA rupoly<>+0(SB)/8, $0x105ec76f1
DATA rupoly<>+8(SB)/8, $0x0dea713f1
// x^64 mod P, reflected, << 1.
DATA r5<>+0(SB)/8, $0x0dd45aab8

GLOBL r2r1<>(SB), RODATA, $64
GLOBL r2048<>(SB), RODATA, $64
GLOBL r4r3<>(SB), RODATA, $16
GLOBL rupoly<>(SB), RODATA, $16
GLOBL r5<>(SB), RODATA, $8

// func castagnoliCLMUL(crc uint32, p []byte, avx512 bool) uint32
// len(p) must be at least 64 and a multiple of 16; crc is inverted (as
// the register holds it), and so is the result.
TEXT ·castagnoliCLMUL(SB), NOSPLIT, $0
	MOVL crc+0(FP), X0
	MOVQ p_base+8(FP), SI
	MOVQ p_len+16(FP), CX

	CMPB avx512+32(FP), $1
	JNE  useSSE
	CMPQ CX, $512
	JL   useSSE

	// AVX-512: the initial CRC into the low lane of the first 64 bytes.
	VPXORQ    Z10, Z10, Z10
	VMOVAPS   X0, X10
	VMOVDQU64 (SI), Z1
	VMOVDQU64 64(SI), Z2
	VMOVDQU64 128(SI), Z3
	VMOVDQU64 192(SI), Z4
	VPXORQ    Z10, Z1, Z1
	ADDQ      $256, SI
	SUBQ      $256, CX
	VMOVDQU64 r2048<>+0(SB), Z0

loop256:
	CMPQ       CX, $256
	JL         fold4
	VMOVDQU64  (SI), Z11
	VMOVDQU64  64(SI), Z12
	VMOVDQU64  128(SI), Z13
	VMOVDQU64  192(SI), Z14
	VPCLMULQDQ $0x11, Z0, Z1, Z5
	VPCLMULQDQ $0, Z0, Z1, Z1
	VPCLMULQDQ $0x11, Z0, Z2, Z6
	VPCLMULQDQ $0, Z0, Z2, Z2
	VPCLMULQDQ $0x11, Z0, Z3, Z7
	VPCLMULQDQ $0, Z0, Z3, Z3
	VPCLMULQDQ $0x11, Z0, Z4, Z8
	VPCLMULQDQ $0, Z0, Z4, Z4
	VPTERNLOGD $0x96, Z11, Z5, Z1
	VPTERNLOGD $0x96, Z12, Z6, Z2
	VPTERNLOGD $0x96, Z13, Z7, Z3
	VPTERNLOGD $0x96, Z14, Z8, Z4
	ADDQ       $256, SI
	SUBQ       $256, CX
	JMP        loop256

fold4:
	// Each accumulator into the next, 64 bytes on.
	VMOVDQU64  r2r1<>+0(SB), Z0
	VPCLMULQDQ $0x11, Z0, Z1, Z5
	VPCLMULQDQ $0, Z0, Z1, Z1
	VPTERNLOGD $0x96, Z2, Z5, Z1
	VPCLMULQDQ $0x11, Z0, Z1, Z5
	VPCLMULQDQ $0, Z0, Z1, Z1
	VPTERNLOGD $0x96, Z3, Z5, Z1
	VPCLMULQDQ $0x11, Z0, Z1, Z5
	VPCLMULQDQ $0, Z0, Z1, Z1
	VPTERNLOGD $0x96, Z4, Z5, Z1

loop64Avx512:
	CMPQ       CX, $64
	JL         unfold
	VMOVDQU64  (SI), Z11
	VPCLMULQDQ $0x11, Z0, Z1, Z5
	VPCLMULQDQ $0, Z0, Z1, Z1
	VPTERNLOGD $0x96, Z11, Z5, Z1
	ADDQ       $64, SI
	SUBQ       $64, CX
	JMP        loop64Avx512

unfold:
	// The four 128-bit lanes into X1-X4, as the SSE loop leaves them.
	VEXTRACTF32X4 $1, Z1, X2
	VEXTRACTF32X4 $2, Z1, X3
	VEXTRACTF32X4 $3, Z1, X4
	VZEROUPPER
	JMP           remain64

useSSE:
	MOVOU (SI), X1
	MOVOU 16(SI), X2
	MOVOU 32(SI), X3
	MOVOU 48(SI), X4
	PXOR  X0, X1
	ADDQ  $64, SI
	SUBQ  $64, CX
	CMPQ  CX, $64
	JB    remain64

	MOVOU r2r1<>+0(SB), X0

loop64:
	MOVOA X1, X5
	MOVOA X2, X6
	MOVOA X3, X7
	MOVOA X4, X8

	PCLMULQDQ $0, X0, X1
	PCLMULQDQ $0, X0, X2
	PCLMULQDQ $0, X0, X3
	PCLMULQDQ $0, X0, X4

	MOVOU (SI), X11
	MOVOU 16(SI), X12
	MOVOU 32(SI), X13
	MOVOU 48(SI), X14

	PCLMULQDQ $0x11, X0, X5
	PCLMULQDQ $0x11, X0, X6
	PCLMULQDQ $0x11, X0, X7
	PCLMULQDQ $0x11, X0, X8

	PXOR X5, X1
	PXOR X6, X2
	PXOR X7, X3
	PXOR X8, X4

	PXOR X11, X1
	PXOR X12, X2
	PXOR X13, X3
	PXOR X14, X4

	ADDQ $64, SI
	SUBQ $64, CX
	CMPQ CX, $64
	JGE  loop64

remain64:
	// X1-X4 into X1, 128 bits at a time.
	MOVOU r4r3<>+0(SB), X0

	MOVOA     X1, X5
	PCLMULQDQ $0, X0, X1
	PCLMULQDQ $0x11, X0, X5
	PXOR      X5, X1
	PXOR      X2, X1

	MOVOA     X1, X5
	PCLMULQDQ $0, X0, X1
	PCLMULQDQ $0x11, X0, X5
	PXOR      X5, X1
	PXOR      X3, X1

	MOVOA     X1, X5
	PCLMULQDQ $0, X0, X1
	PCLMULQDQ $0x11, X0, X5
	PXOR      X5, X1
	PXOR      X4, X1

	CMPQ CX, $16
	JB   finish

remain16:
	MOVOU     (SI), X10
	MOVOA     X1, X5
	PCLMULQDQ $0, X0, X1
	PCLMULQDQ $0x11, X0, X5
	PXOR      X5, X1
	PXOR      X10, X1
	SUBQ      $16, CX
	ADDQ      $16, SI
	CMPQ      CX, $16
	JGE       remain16

finish:
	// 128 bits to 64, then Barrett to 32.
	PCMPEQB   X3, X3
	PCLMULQDQ $1, X1, X0
	PSRLDQ    $8, X1
	PXOR      X0, X1

	MOVOA X1, X2
	MOVQ  r5<>+0(SB), X0

	PSRLQ $32, X3

	PSRLDQ    $4, X2
	PAND      X3, X1
	PCLMULQDQ $0, X0, X1
	PXOR      X2, X1

	MOVOU rupoly<>+0(SB), X0

	MOVOA     X1, X2
	PAND      X3, X1
	PCLMULQDQ $0x10, X0, X1
	PAND      X3, X1
	PCLMULQDQ $0, X0, X1
	PXOR      X2, X1

	PEXTRD $1, X1, AX
	MOVL   AX, ret+40(FP)
	RET

// func castagnoliSmall(crc uint32, p []byte) uint32
// The CRC32 instruction 8 bytes, then 1 byte, at a time: for headers and
// tails, where hash/crc32's dispatch costs more than the sum. crc is
// inverted, and so is the result.
TEXT ·castagnoliSmall(SB), NOSPLIT, $0
	MOVL crc+0(FP), AX
	MOVQ p_base+8(FP), SI
	MOVQ p_len+16(FP), CX

loop8:
	CMPQ   CX, $8
	JB     loop1
	CRC32Q (SI), AX
	ADDQ   $8, SI
	SUBQ   $8, CX
	JMP    loop8

loop1:
	TESTQ  CX, CX
	JZ     done
	CRC32B (SI), AX
	INCQ   SI
	DECQ   CX
	JMP    loop1

done:
	MOVL AX, ret+32(FP)
	RET
