package engine

import (
	"encoding/binary"

	"github.com/netstation/netstation/stack/header"
)

// Template is what every frame a sender emits must carry: its source MAC,
// source IP address, protocol and (for UDP and TCP) source port. Proto 0
// describes ARP frames, whose sender MAC and address must match.
//
// The check reads a few fixed offsets, so it costs a handful of compares
// per frame. The fabric applies the same rule in the kernel on the host
// side of each veth; this is the first of the two fences.
type Template struct {
	SrcMAC  [6]byte
	SrcAddr [4]byte
	SrcPort uint16
	Proto   uint8
}

// Match reports whether frame conforms to t.
func (t *Template) Match(frame []byte) bool {
	if len(frame) < header.EthernetMinimumSize || [6]byte(frame[6:12]) != t.SrcMAC {
		return false
	}
	et := binary.BigEndian.Uint16(frame[12:])
	if t.Proto == 0 {
		return et == header.EtherTypeARP && len(frame) >= 14+header.ARPSize &&
			[6]byte(frame[22:28]) == t.SrcMAC && [4]byte(frame[28:32]) == t.SrcAddr
	}
	if et != header.EtherTypeIPv4 || len(frame) < 34 {
		return false
	}
	if frame[23] != t.Proto || [4]byte(frame[26:30]) != t.SrcAddr {
		return false
	}
	if t.Proto != header.ProtocolUDP && t.Proto != header.ProtocolTCP {
		return true
	}
	if binary.BigEndian.Uint16(frame[20:])&0x1fff != 0 {
		return true // a later fragment carries no ports
	}
	l4 := 14 + int(frame[14]&0xf)*4
	return len(frame) >= l4+2 && binary.BigEndian.Uint16(frame[l4:]) == t.SrcPort
}
