package linktest

import (
	"encoding/binary"
	"net"

	"github.com/netstation/netstation/stack/checksum"
	"github.com/netstation/netstation/stack/link"
)

// EtherTest is the IEEE local-experimental EtherType: test frames use it so
// nothing else on the wire can be mistaken for them.
const EtherTest = 0x88b5

// Frame builds an EtherTest frame of size bytes whose payload starts with
// seq and continues with a pattern derived from it.
func Frame(dst, src net.HardwareAddr, size int, seq uint32) []byte {
	b := make([]byte, size)
	copy(b[0:], dst)
	copy(b[6:], src)
	binary.BigEndian.PutUint16(b[12:], EtherTest)
	binary.BigEndian.PutUint32(b[14:], seq)
	for i := 18; i < size; i++ {
		b[i] = byte(uint32(i)*7 + seq)
	}
	return b
}

// IsTest reports whether b is an EtherTest frame (as Frame builds them).
func IsTest(b []byte) bool {
	return len(b) >= 18 && binary.BigEndian.Uint16(b[12:]) == EtherTest
}

// UDPFrame builds an Ethernet/IPv4/UDP frame. With partial, the UDP
// checksum field holds the pseudo-header sum and the returned VNetHdr asks
// for NEEDS_CSUM; otherwise the checksum is complete. gsoSize > 0 makes it
// a UDP_L4 GSO super-frame (partial implied).
func UDPFrame(dst, src net.HardwareAddr, srcIP, dstIP [4]byte, sport, dport uint16, payload []byte, partial bool, gsoSize int) link.Frame {
	if gsoSize > 0 {
		partial = true
	}
	b := make([]byte, 42+len(payload))
	copy(b[0:], dst)
	copy(b[6:], src)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], 1)
	ip[8] = 64
	ip[9] = 17
	copy(ip[12:], srcIP[:])
	copy(ip[16:], dstIP[:])
	binary.BigEndian.PutUint16(ip[10:], checksum.Checksum(ip, 0))
	udp := b[34:]
	ulen := uint16(8 + len(payload))
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], ulen)
	copy(udp[8:], payload)
	ph := checksum.PseudoHeader(srcIP, dstIP, 17, ulen)
	f := link.Frame{Buf: b}
	if partial {
		binary.BigEndian.PutUint16(udp[6:], ph)
		f.VNet = link.VNetHdr{Flags: link.VNetNeedsCsum, CsumStart: 34, CsumOffset: 6}
		if gsoSize > 0 {
			f.VNet.GSOType = link.GSOUDPL4
			f.VNet.GSOSize = uint16(gsoSize)
			f.VNet.HdrLen = 42
		}
	} else {
		c := checksum.Checksum(udp, ph)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(udp[6:], c)
	}
	return f
}

// Pattern returns n bytes of a recognisable pattern.
func Pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i) ^ seed
	}
	return p
}
