package checksum

// referencePartial is the textbook RFC 1071 sum: big-endian 16-bit words
// added into a 32-bit accumulator, an odd last byte padded with zero, the
// carries folded back in at the end. It shares no code with Partial.
func referencePartial(b []byte, initial uint16) uint16 {
	sum := uint32(initial)
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
		// Fold as we go so that no length can overflow the accumulator.
		if sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}
