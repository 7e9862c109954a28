// Package checksum computes the Internet checksum (RFC 1071) with 64-bit
// accumulation, updates it incrementally (RFC 1624, with erratum 4782), and
// builds IPv4 pseudo-header sums.
//
// Sums here are "partial": the 16-bit one's-complement sum, not yet
// complemented. The checksum stored in a header is the complement of the
// final partial sum (Checksum does both).
package checksum
