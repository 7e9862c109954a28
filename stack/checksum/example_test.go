package checksum_test

import (
	"encoding/binary"
	"fmt"

	"github.com/netstation/netstation/stack/checksum"
)

// An IPv4 header's checksum covers the header with the checksum field set
// to zero; a receiver sums the whole header and expects 0xffff.
func ExampleChecksum() {
	hdr := []byte{
		0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
		0x00, 0x00, // checksum, zero while computing
		0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
	}
	sum := checksum.Checksum(hdr, 0)
	binary.BigEndian.PutUint16(hdr[10:], sum)
	fmt.Printf("checksum %#04x, verifies: %v\n", sum, checksum.Partial(hdr, 0) == 0xffff)
	// Output: checksum 0xb861, verifies: true
}

// A router decrements the TTL: the TTL/protocol word changes and the
// header checksum follows without summing the header again (RFC 1624).
func ExampleUpdate() {
	hdr := []byte{
		0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
		0xb8, 0x61, // checksum
		0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
	}
	old := binary.BigEndian.Uint16(hdr[8:]) // TTL 64, protocol 17
	hdr[8]--
	updated := checksum.Update(binary.BigEndian.Uint16(hdr[10:]), old, binary.BigEndian.Uint16(hdr[8:]))

	binary.BigEndian.PutUint16(hdr[10:], 0)
	recomputed := checksum.Checksum(hdr, 0)
	fmt.Printf("updated %#04x, recomputed %#04x\n", updated, recomputed)
	// Output: updated 0xb961, recomputed 0xb961
}

// A UDP checksum covers the IPv4 pseudo-header, the UDP header (checksum
// field zero) and the payload.
func ExamplePseudoHeader() {
	src, dst := [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}
	udp := []byte{
		0x30, 0x39, 0x00, 0x35, // ports 12345 -> 53
		0x00, 0x0c, 0x00, 0x00, // length 12, checksum zero
		'p', 'i', 'n', 'g',
	}
	sum := checksum.Checksum(udp, checksum.PseudoHeader(src, dst, 17, uint16(len(udp))))
	binary.BigEndian.PutUint16(udp[6:], sum)
	verify := checksum.Partial(udp, checksum.PseudoHeader(src, dst, 17, uint16(len(udp))))
	fmt.Printf("verifies: %v\n", verify == 0xffff)
	// Output: verifies: true
}
