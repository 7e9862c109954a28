// Package checksum computes the Internet checksum (RFC 1071) with 64-bit
// accumulation, updates it incrementally (RFC 1624, with erratum 4782), and
// builds IPv4 pseudo-header sums.
//
// Sums here are "partial": the 16-bit one's-complement sum, not yet
// complemented. The checksum stored in a header is the complement of the
// final partial sum (Checksum does both).
//
// Partial is pure Go: it reads the data as little-endian 64-bit words, adds
// them in one add-with-carry chain unrolled over 64 bytes, and swaps the
// folded sum back, which the byte-order independence of the sum allows
// (RFC 1071 section 2(B)). Any length and any alignment is handled; the
// benchmarks in this package measure it against a naive 16-bit loop.
package checksum
