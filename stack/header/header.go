package header

import (
	"encoding/binary"
	"net/netip"

	"github.com/netstation/netstation/stack/checksum"
)

// EtherType values the stack understands.
const (
	EtherTypeIPv4 uint16 = 0x0800
	EtherTypeARP  uint16 = 0x0806
	EtherTypeIPv6 uint16 = 0x86dd
)

// IP protocol numbers.
const (
	ProtocolICMP uint8 = 1
	ProtocolTCP  uint8 = 6
	ProtocolUDP  uint8 = 17
)

// Sizes of fixed headers.
const (
	EthernetMinimumSize = 14
	ARPSize             = 28 // IPv4 over Ethernet
	IPv4MinimumSize     = 20
	IPv4MaximumSize     = 60
	ICMPv4MinimumSize   = 8
	UDPMinimumSize      = 8
	IPv4MaximumPacket   = 65535
	// UDPMaximumPayload is the largest UDP payload one IPv4 datagram holds.
	UDPMaximumPayload = IPv4MaximumPacket - IPv4MinimumSize - UDPMinimumSize
)

// Broadcast is the Ethernet broadcast address.
var Broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Ethernet is an Ethernet II header view.
type Ethernet []byte

// EthernetFields are the fields Encode writes.
type EthernetFields struct {
	Dst, Src [6]byte
	Type     uint16
}

// Dst returns the destination MAC.
func (e Ethernet) Dst() [6]byte { return [6]byte(e[0:6]) }

// Src returns the source MAC.
func (e Ethernet) Src() [6]byte { return [6]byte(e[6:12]) }

// Type returns the EtherType.
func (e Ethernet) Type() uint16 { return binary.BigEndian.Uint16(e[12:]) }

// SetDst sets the destination MAC.
func (e Ethernet) SetDst(m [6]byte) { copy(e[0:6], m[:]) }

// SetSrc sets the source MAC.
func (e Ethernet) SetSrc(m [6]byte) { copy(e[6:12], m[:]) }

// Payload returns what follows the header.
func (e Ethernet) Payload() []byte { return e[EthernetMinimumSize:] }

// Encode writes f into e[:14].
func (e Ethernet) Encode(f *EthernetFields) {
	copy(e[0:6], f.Dst[:])
	copy(e[6:12], f.Src[:])
	binary.BigEndian.PutUint16(e[12:], f.Type)
}

// ARP operations.
const (
	ARPRequest uint16 = 1
	ARPReply   uint16 = 2
)

// ARP is an ARP packet view (RFC 826), IPv4 over Ethernet only.
type ARP []byte

// ARPFields are the fields Encode writes.
type ARPFields struct {
	Op                     uint16
	SenderMAC, TargetMAC   [6]byte
	SenderAddr, TargetAddr [4]byte
}

// IsValid reports whether a is long enough and describes IPv4 over Ethernet.
func (a ARP) IsValid() bool {
	return len(a) >= ARPSize &&
		binary.BigEndian.Uint16(a[0:]) == 1 && // Ethernet
		binary.BigEndian.Uint16(a[2:]) == EtherTypeIPv4 &&
		a[4] == 6 && a[5] == 4
}

// Op returns the operation.
func (a ARP) Op() uint16 { return binary.BigEndian.Uint16(a[6:]) }

// SenderMAC returns the sender hardware address.
func (a ARP) SenderMAC() [6]byte { return [6]byte(a[8:14]) }

// SenderAddr returns the sender protocol address.
func (a ARP) SenderAddr() [4]byte { return [4]byte(a[14:18]) }

// TargetMAC returns the target hardware address.
func (a ARP) TargetMAC() [6]byte { return [6]byte(a[18:24]) }

// TargetAddr returns the target protocol address.
func (a ARP) TargetAddr() [4]byte { return [4]byte(a[24:28]) }

// Encode writes f into a[:28].
func (a ARP) Encode(f *ARPFields) {
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], EtherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], f.Op)
	copy(a[8:14], f.SenderMAC[:])
	copy(a[14:18], f.SenderAddr[:])
	copy(a[18:24], f.TargetMAC[:])
	copy(a[24:28], f.TargetAddr[:])
}

// IPv4 flags (in the high bits of the flags/fragment-offset word).
const (
	IPv4FlagDontFragment  uint8 = 2
	IPv4FlagMoreFragments uint8 = 1
)

// IPv4 is an IPv4 header view; it may extend over the payload.
type IPv4 []byte

// IPv4Fields are the fields Encode writes. Options are not supported on
// send; the header is always 20 bytes.
type IPv4Fields struct {
	TOS            uint8
	TotalLength    uint16
	ID             uint16
	Flags          uint8
	FragmentOffset uint16 // in bytes; must be a multiple of 8
	TTL            uint8
	Protocol       uint8
	Src, Dst       [4]byte
}

// Version returns the IP version field.
func (b IPv4) Version() uint8 { return b[0] >> 4 }

// HeaderLength returns the header length in bytes (IHL*4), options included.
func (b IPv4) HeaderLength() int { return int(b[0]&0xf) * 4 }

// OptionsLength returns the length of the options.
func (b IPv4) OptionsLength() int { return b.HeaderLength() - IPv4MinimumSize }

// TOS returns the type-of-service byte.
func (b IPv4) TOS() uint8 { return b[1] }

// TotalLength returns the total length field.
func (b IPv4) TotalLength() uint16 { return binary.BigEndian.Uint16(b[2:]) }

// ID returns the identification field.
func (b IPv4) ID() uint16 { return binary.BigEndian.Uint16(b[4:]) }

// Flags returns the three flag bits.
func (b IPv4) Flags() uint8 { return b[6] >> 5 }

// FragmentOffset returns the fragment offset in bytes.
func (b IPv4) FragmentOffset() uint16 { return binary.BigEndian.Uint16(b[6:]) << 3 }

// More reports whether the more-fragments flag is set.
func (b IPv4) More() bool { return b.Flags()&IPv4FlagMoreFragments != 0 }

// IsFragment reports whether the packet is one fragment of a datagram.
func (b IPv4) IsFragment() bool { return b.More() || b.FragmentOffset() != 0 }

// TTL returns the time to live.
func (b IPv4) TTL() uint8 { return b[8] }

// Protocol returns the payload protocol.
func (b IPv4) Protocol() uint8 { return b[9] }

// Checksum returns the header checksum field.
func (b IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[10:]) }

// Src returns the source address.
func (b IPv4) Src() [4]byte { return [4]byte(b[12:16]) }

// Dst returns the destination address.
func (b IPv4) Dst() [4]byte { return [4]byte(b[16:20]) }

// SrcAddr returns the source address as a netip.Addr.
func (b IPv4) SrcAddr() netip.Addr { return netip.AddrFrom4(b.Src()) }

// DstAddr returns the destination address as a netip.Addr.
func (b IPv4) DstAddr() netip.Addr { return netip.AddrFrom4(b.Dst()) }

// Payload returns the bytes after the header up to the total length.
func (b IPv4) Payload() []byte { return b[b.HeaderLength():b.TotalLength()] }

// SetTotalLength sets the total length field (the checksum is not updated).
func (b IPv4) SetTotalLength(n uint16) { binary.BigEndian.PutUint16(b[2:], n) }

// SetChecksum sets the header checksum field.
func (b IPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[10:], c) }

// SetTTL sets the TTL and updates the checksum incrementally (RFC 1624).
func (b IPv4) SetTTL(ttl uint8) {
	old := binary.BigEndian.Uint16(b[8:])
	b[8] = ttl
	b.SetChecksum(checksum.Update(b.Checksum(), old, binary.BigEndian.Uint16(b[8:])))
}

// CalculateChecksum returns the checksum the header should carry.
func (b IPv4) CalculateChecksum() uint16 {
	hl := b.HeaderLength()
	s := checksum.Partial(b[:10], 0)
	return ^checksum.Partial(b[12:hl], s)
}

// IsChecksumValid reports whether the header sums to 0xffff.
func (b IPv4) IsChecksumValid() bool {
	return checksum.Partial(b[:b.HeaderLength()], 0) == 0xffff
}

// IsValid reports whether b holds a well-formed IPv4 header for a packet of
// pktLen bytes (the bytes the link delivered after the Ethernet header):
// version 4, IHL >= 5, header and total length within pktLen.
func (b IPv4) IsValid(pktLen int) bool {
	if len(b) < IPv4MinimumSize || pktLen < IPv4MinimumSize || len(b) < pktLen {
		return false
	}
	hl := b.HeaderLength()
	tl := int(b.TotalLength())
	return b.Version() == 4 && hl >= IPv4MinimumSize && hl <= tl && tl <= pktLen
}

// Encode writes f into b[:20] including the header checksum.
func (b IPv4) Encode(f *IPv4Fields) {
	b[0] = 0x45
	b[1] = f.TOS
	binary.BigEndian.PutUint16(b[2:], f.TotalLength)
	binary.BigEndian.PutUint16(b[4:], f.ID)
	binary.BigEndian.PutUint16(b[6:], uint16(f.Flags)<<13|f.FragmentOffset>>3)
	b[8] = f.TTL
	b[9] = f.Protocol
	b[10], b[11] = 0, 0
	copy(b[12:16], f.Src[:])
	copy(b[16:20], f.Dst[:])
	b.SetChecksum(b.CalculateChecksum())
}

// ICMPv4 types.
const (
	ICMPv4EchoReply           uint8 = 0
	ICMPv4DstUnreachable      uint8 = 3
	ICMPv4Echo                uint8 = 8
	ICMPv4TimeExceeded        uint8 = 11
	ICMPv4PortUnreachable     uint8 = 3 // code of ICMPv4DstUnreachable
	ICMPv4FragmentationNeeded uint8 = 4 // code of ICMPv4DstUnreachable
)

// ICMPv4 is an ICMPv4 message view.
type ICMPv4 []byte

// Type returns the message type.
func (b ICMPv4) Type() uint8 { return b[0] }

// Code returns the message code.
func (b ICMPv4) Code() uint8 { return b[1] }

// Checksum returns the checksum field.
func (b ICMPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[2:]) }

// Ident returns the echo identifier.
func (b ICMPv4) Ident() uint16 { return binary.BigEndian.Uint16(b[4:]) }

// Sequence returns the echo sequence number.
func (b ICMPv4) Sequence() uint16 { return binary.BigEndian.Uint16(b[6:]) }

// Payload returns what follows the 8-byte header.
func (b ICMPv4) Payload() []byte { return b[ICMPv4MinimumSize:] }

// SetType sets the type field and updates the checksum incrementally.
func (b ICMPv4) SetType(t uint8) {
	old := binary.BigEndian.Uint16(b[0:])
	b[0] = t
	b.SetChecksum(checksum.Update(b.Checksum(), old, binary.BigEndian.Uint16(b[0:])))
}

// SetChecksum sets the checksum field.
func (b ICMPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[2:], c) }

// ICMPv4Fields are the fields Encode writes.
type ICMPv4Fields struct {
	Type, Code uint8
	// Rest is the second 32-bit word: ident and sequence for echo,
	// unused (or next-hop MTU) for errors.
	Ident, Sequence uint16
}

// Encode writes f into b[:8] and computes the checksum over all of b.
func (b ICMPv4) Encode(f *ICMPv4Fields) {
	b[0], b[1], b[2], b[3] = f.Type, f.Code, 0, 0
	binary.BigEndian.PutUint16(b[4:], f.Ident)
	binary.BigEndian.PutUint16(b[6:], f.Sequence)
	b.SetChecksum(checksum.Checksum(b, 0))
}

// UDP is a UDP header view; it may extend over the payload.
type UDP []byte

// UDPFields are the fields Encode writes.
type UDPFields struct {
	SrcPort, DstPort uint16
	Length           uint16
	Checksum         uint16
}

// SrcPort returns the source port.
func (b UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(b[0:]) }

// DstPort returns the destination port.
func (b UDP) DstPort() uint16 { return binary.BigEndian.Uint16(b[2:]) }

// Length returns the length field (header included).
func (b UDP) Length() uint16 { return binary.BigEndian.Uint16(b[4:]) }

// Checksum returns the checksum field (0 means none was computed).
func (b UDP) Checksum() uint16 { return binary.BigEndian.Uint16(b[6:]) }

// SetChecksum sets the checksum field.
func (b UDP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[6:], c) }

// SetLength sets the length field.
func (b UDP) SetLength(n uint16) { binary.BigEndian.PutUint16(b[4:], n) }

// Payload returns what follows the 8-byte header.
func (b UDP) Payload() []byte { return b[UDPMinimumSize:] }

// Encode writes f into b[:8].
func (b UDP) Encode(f *UDPFields) {
	binary.BigEndian.PutUint16(b[0:], f.SrcPort)
	binary.BigEndian.PutUint16(b[2:], f.DstPort)
	binary.BigEndian.PutUint16(b[4:], f.Length)
	binary.BigEndian.PutUint16(b[6:], f.Checksum)
}

// UDPChecksum returns the checksum to store in a UDP datagram (header with
// a zero checksum field plus payload, all in b) between src and dst. A
// computed zero is sent as 0xffff (RFC 768).
func UDPChecksum(src, dst [4]byte, b []byte) uint16 {
	ph := checksum.PseudoHeader(src, dst, ProtocolUDP, uint16(len(b)))
	c := checksum.Checksum(b, ph)
	if c == 0 {
		c = 0xffff
	}
	return c
}

// Broadcast4 is the limited broadcast address 255.255.255.255.
var Broadcast4 = [4]byte{255, 255, 255, 255}
