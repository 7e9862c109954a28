package tcp

// The send and receive buffers are rings whose length is a power of two,
// indexed by sequence number: byte seq s lives at ring[(s-base)&mask],
// where base is the first data sequence number of the direction. Out-of-
// order data lands in place, retransmissions read in place, and nothing
// tracks a ring head.

// ringWrite copies p into ring at the position of seq and returns len(p).
// The caller ensures len(p) <= len(ring).
func ringWrite(ring []byte, base, seq uint32, p []byte) int {
	mask := uint32(len(ring) - 1)
	off := int((seq - base) & mask)
	n := copy(ring[off:], p)
	if n < len(p) {
		n += copy(ring, p[n:])
	}
	return n
}

// ringRead copies len(p) bytes starting at seq out of ring.
func ringRead(ring []byte, base, seq uint32, p []byte) int {
	mask := uint32(len(ring) - 1)
	off := int((seq - base) & mask)
	n := copy(p, ring[off:])
	if n < len(p) {
		n += copy(p[n:], ring)
	}
	return n
}

// ringViews returns the n bytes starting at seq in place: a, then b when
// they wrap around the ring's end. The caller ensures n <= len(ring).
func ringViews(ring []byte, base, seq uint32, n int) (a, b []byte) {
	off := int((seq - base) & uint32(len(ring)-1))
	if off+n <= len(ring) {
		return ring[off : off+n], nil
	}
	return ring[off:], ring[:n-(len(ring)-off)]
}

// ringCopy moves n bytes starting at seq from ring old to ring nw (of a
// different size, same base).
func ringCopy(nw, old []byte, base, seq uint32, n int) {
	if len(old) == 0 || n <= 0 {
		return
	}
	mask := uint32(len(old) - 1)
	off := int((seq - base) & mask)
	first := min(n, len(old)-off)
	ringWrite(nw, base, seq, old[off:off+first])
	if first < n {
		ringWrite(nw, base, seq+uint32(first), old[:n-first])
	}
}
