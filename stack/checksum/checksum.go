package checksum

import (
	"encoding/binary"
	"math/bits"
)

// Partial returns the one's-complement sum of b (as big-endian 16-bit
// words, an odd final byte padded with zero) added to initial.
//
// The result is 0x0000 only when initial and every byte of b are zero; any
// other sum that is zero in one's-complement arithmetic comes out as 0xffff.
// That is what a receiver expects: the partial sum over a packet whose
// checksum is right is 0xffff.
func Partial(b []byte, initial uint16) uint16 {
	// The one's-complement sum does not depend on byte order (RFC 1071
	// section 2(B)): sum the data as little-endian words, which is a plain
	// load on the machines we run on, and swap the folded result back.
	acc := sumLE(b, uint64(bits.ReverseBytes16(initial)))
	return bits.ReverseBytes16(fold(acc))
}

// sumLE adds b, read as little-endian words, to acc with end-around carry
// and returns a 64-bit value that folds to the 16-bit sum.
//
// The hot loop is one chain of 64-bit add-with-carry instructions (eight per
// 64 bytes); the carry out of each chain is counted in a second register so
// the chain never waits on anything but the carry flag. Every chunk starts at
// an even offset from the start of b, so the 16-bit word boundaries stay
// where RFC 1071 puts them whatever the length or alignment of b.
func sumLE(b []byte, acc uint64) uint64 {
	var carries, c uint64
	for len(b) >= 64 {
		w := b[:64:64]
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(w[0:8]), 0)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(w[8:16]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(w[16:24]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(w[24:32]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(w[32:40]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(w[40:48]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(w[48:56]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(w[56:64]), c)
		carries += c
		b = b[64:]
	}
	if len(b) >= 32 {
		w := b[:32:32]
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(w[0:8]), 0)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(w[8:16]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(w[16:24]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(w[24:32]), c)
		carries += c
		b = b[32:]
	}
	if len(b) >= 16 {
		w := b[:16:16]
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(w[0:8]), 0)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(w[8:16]), c)
		carries += c
		b = b[16:]
	}
	if len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b), 0)
		carries += c
		b = b[8:]
	}
	// At most 7 bytes are left; each piece fits in 32 bits, so plain adds
	// into a fresh tail cannot overflow.
	var tail uint64
	if len(b) >= 4 {
		tail = uint64(binary.LittleEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		tail += uint64(binary.LittleEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		// Big-endian padding puts the odd byte high; little-endian, low.
		tail += uint64(b[0])
	}
	acc, c = bits.Add64(acc, tail, 0)
	carries += c
	acc, c = bits.Add64(acc, carries, 0)
	// If that carried, acc is below carries, which is small: no overflow.
	return acc + c
}

// fold reduces a 64-bit end-around sum to 16 bits. Adding a value to
// itself rotated by half its width puts the end-around sum of its two
// halves in the upper half: the carry out of the lower half is exactly the
// end-around carry. A non-zero input never folds to zero.
func fold(acc uint64) uint16 {
	s32 := uint32((acc + bits.RotateLeft64(acc, 32)) >> 32)
	return uint16((s32 + bits.RotateLeft32(s32, 16)) >> 16)
}

// Combine adds two partial sums. The sum of a chunk that starts at an even
// offset combines directly; one that starts at an odd offset must be byte
// swapped first (bits.ReverseBytes16).
func Combine(a, b uint16) uint16 {
	s := uint32(a) + uint32(b)
	return uint16(s + s>>16)
}

// Checksum returns the value to store in a header: the complement of the
// partial sum of b added to initial.
func Checksum(b []byte, initial uint16) uint16 {
	return ^Partial(b, initial)
}

// PseudoHeader returns the partial sum of the IPv4 pseudo-header used by
// UDP and TCP: source, destination, zero, protocol, L4 length.
func PseudoHeader(src, dst [4]byte, proto uint8, length uint16) uint16 {
	acc := uint64(binary.BigEndian.Uint16(src[0:])) + uint64(binary.BigEndian.Uint16(src[2:])) +
		uint64(binary.BigEndian.Uint16(dst[0:])) + uint64(binary.BigEndian.Uint16(dst[2:])) +
		uint64(proto) + uint64(length)
	return fold(acc)
}

// Update returns the header checksum hc after a 16-bit field changed from
// old to new: HC' = ~(~HC + ~m + m') (RFC 1624 eqn. 3, which avoids the
// -0 trap of eqn. 2 that erratum 4782 discusses).
//
// The result equals a recomputation over the changed data in every case but
// one: when the changed data (checksum field aside) is all zeros,
// recomputation gives 0xffff and Update gives 0x0000. No arithmetic on
// (hc, old, new) alone can tell that case from non-zero data summing to
// 0xffff, whose checksum must be 0x0000. A real IPv4, UDP or TCP header is
// never all zeros.
func Update(hc, old, new uint16) uint16 {
	s := uint32(^hc) + uint32(^old) + uint32(new)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return ^uint16(s)
}
