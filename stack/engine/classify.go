package engine

import (
	"encoding/binary"

	"github.com/netstation/netstation/stack/checksum"
	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/link"
)

// Packet is what the classifier learned about an accepted frame. Offsets
// index Buf; nothing is copied.
type Packet struct {
	Buf       []byte // the whole frame (or, for ClassifyIP, the IP packet)
	VNet      link.VNetHdr
	EtherType uint16
	L3        int // offset of the IP (or ARP) header
	L4        int // offset of the transport header
	End       int // end of the IP packet (L3 + total length)
	Proto     uint8
	Src, Dst  [4]byte
	SrcPort   uint16
	DstPort   uint16
	// Fragment is set for one fragment of a datagram: L4 fields are not
	// filled and the caller hands the packet to reassembly.
	Fragment bool
	// PartialCsum is set when the L4 checksum field holds only the
	// pseudo-header sum (VNetNeedsCsum from a local kernel): the payload is
	// trusted, and FinishChecksum must run before the frame travels on.
	PartialCsum bool
	// GSO is set for a UDP_L4 super-frame: the payload stands for
	// datagrams of VNet.GSOSize bytes each (the last may be shorter).
	GSO bool
}

// IP returns the IP packet (header and payload).
func (p *Packet) IP() header.IPv4 { return header.IPv4(p.Buf[p.L3:p.End]) }

// L4Payload returns the transport payload: after the 8-byte UDP header, or
// after the ICMP header, or the whole segment for TCP.
func (p *Packet) L4Payload() []byte {
	switch p.Proto {
	case header.ProtocolUDP:
		return p.Buf[p.L4+header.UDPMinimumSize : p.End]
	case header.ProtocolICMP:
		return p.Buf[p.L4+header.ICMPv4MinimumSize : p.End]
	}
	return p.Buf[p.L4:p.End]
}

// Classifier validates frames addressed to one interface.
type Classifier struct {
	MAC       [6]byte
	Addr      [4]byte
	Broadcast [4]byte // the subnet's directed broadcast address
}

// Classify runs the receive state machine over one frame. It returns
// DropNone and fills p, or the reason the frame must be dropped.
func (c *Classifier) Classify(f *link.Frame, p *Packet) DropReason {
	b := f.Buf
	*p = Packet{Buf: b, VNet: f.VNet}
	if len(b) < header.EthernetMinimumSize {
		return DropEthernetTruncated
	}
	eth := header.Ethernet(b)
	dst := eth.Dst()
	if dst != c.MAC && dst != header.Broadcast {
		return DropNotForUs
	}
	p.EtherType = eth.Type()
	p.L3 = header.EthernetMinimumSize
	switch p.EtherType {
	case header.EtherTypeARP:
		if !header.ARP(b[p.L3:]).IsValid() {
			return DropARPInvalid
		}
		p.End = p.L3 + header.ARPSize
		return DropNone
	case header.EtherTypeIPv4:
		return c.classifyIP(p)
	}
	return DropUnknownEtherType
}

// ClassifyIP runs the IPv4 part of the state machine over a bare IP
// packet, such as a reassembled datagram.
func (c *Classifier) ClassifyIP(ip []byte, p *Packet) DropReason {
	*p = Packet{Buf: ip, EtherType: header.EtherTypeIPv4}
	return c.classifyIP(p)
}

func (c *Classifier) classifyIP(p *Packet) DropReason {
	b := p.Buf[p.L3:]
	if len(b) < header.IPv4MinimumSize {
		return DropIPTruncated
	}
	ip := header.IPv4(b)
	if ip.Version() != 4 {
		return DropIPBadVersion
	}
	hl := ip.HeaderLength()
	if hl < header.IPv4MinimumSize || hl > len(b) {
		return DropIPBadIHL
	}
	tl := int(ip.TotalLength())
	if tl < hl || tl > len(b) {
		return DropIPBadTotalLength
	}
	if !ip.IsChecksumValid() {
		return DropIPBadChecksum
	}
	if ip.TTL() == 0 {
		return DropIPBadTTL
	}
	p.Src, p.Dst = ip.Src(), ip.Dst()
	if p.Src == header.Broadcast4 || p.Src[0] >= 224 || p.Src == c.Addr {
		return DropIPBadSource
	}
	if p.Dst != c.Addr && p.Dst != header.Broadcast4 && p.Dst != c.Broadcast {
		return DropNotOurAddress
	}
	p.Proto = ip.Protocol()
	p.L4 = p.L3 + hl
	p.End = p.L3 + tl
	if ip.IsFragment() {
		if p.VNet.GSOType != link.GSONone {
			return DropGSOInvalid
		}
		plen := tl - hl
		if int(ip.FragmentOffset())+plen > header.IPv4MaximumPacket-header.IPv4MinimumSize ||
			(ip.More() && (plen == 0 || plen%8 != 0)) {
			return DropFragmentInvalid
		}
		p.Fragment = true
		return DropNone
	}
	return c.classifyL4(p)
}

func (c *Classifier) classifyL4(p *Packet) DropReason {
	seg := p.Buf[p.L4:p.End]
	trusted := p.VNet.Flags&link.VNetDataValid != 0
	partial := p.VNet.Flags&link.VNetNeedsCsum != 0
	switch p.Proto {
	case header.ProtocolUDP:
		if len(seg) < header.UDPMinimumSize {
			return DropUDPTruncated
		}
		u := header.UDP(seg)
		ul := int(u.Length())
		if ul < header.UDPMinimumSize || ul > len(seg) {
			return DropUDPBadLength
		}
		p.End = p.L4 + ul
		p.SrcPort, p.DstPort = u.SrcPort(), u.DstPort()
		if p.VNet.GSOType == link.GSOUDPL4 {
			if p.VNet.GSOSize == 0 || !(partial || trusted) {
				return DropGSOInvalid
			}
			p.GSO = true
		} else if p.VNet.GSOType != link.GSONone {
			return DropGSOInvalid
		}
		switch {
		case partial:
			// A local kernel left the checksum for the device to finish:
			// the field holds the pseudo-header sum, the data never left
			// the host. Accept; FinishChecksum completes it if forwarded.
			p.PartialCsum = true
		case trusted || u.Checksum() == 0:
		default:
			ph := checksum.PseudoHeader(p.Src, p.Dst, header.ProtocolUDP, uint16(ul))
			if checksum.Partial(seg[:ul], ph) != 0xffff {
				return DropUDPBadChecksum
			}
		}
		return DropNone
	case header.ProtocolICMP:
		if p.VNet.GSOType != link.GSONone {
			return DropGSOInvalid
		}
		if len(seg) < header.ICMPv4MinimumSize {
			return DropICMPTruncated
		}
		if !trusted && checksum.Partial(seg, 0) != 0xffff {
			return DropICMPBadChecksum
		}
		return DropNone
	case header.ProtocolTCP:
		if len(seg) < 20 {
			return DropTCPTruncated
		}
		doff := int(seg[12]>>4) * 4
		if doff < 20 || doff > len(seg) {
			return DropTCPTruncated
		}
		p.SrcPort = binary.BigEndian.Uint16(seg[0:])
		p.DstPort = binary.BigEndian.Uint16(seg[2:])
		switch {
		case partial:
			p.PartialCsum = true
		case trusted:
		default:
			ph := checksum.PseudoHeader(p.Src, p.Dst, header.ProtocolTCP, uint16(len(seg)))
			if checksum.Partial(seg, ph) != 0xffff {
				return DropTCPBadChecksum
			}
		}
		return DropNone
	}
	return DropUnknownProtocol
}
