package checksum

import "encoding/binary"

// Partial returns the one's-complement sum of b (as big-endian 16-bit
// words, an odd final byte padded with zero) added to initial.
func Partial(b []byte, initial uint16) uint16 {
	var acc uint64 = uint64(initial)
	for len(b) >= 8 {
		v := binary.BigEndian.Uint64(b)
		acc += v >> 32
		acc += v & 0xffffffff
		b = b[8:]
	}
	for len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return fold(acc)
}

func fold(acc uint64) uint16 {
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	return uint16(acc)
}

// Combine adds two partial sums.
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
func Update(hc, old, new uint16) uint16 {
	s := uint32(^hc) + uint32(^old) + uint32(new)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return ^uint16(s)
}
