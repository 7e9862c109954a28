package capture

import (
	"encoding/binary"

	"github.com/netstation/netstation/stack/checksum"
)

// virtio-net GSO types (linux/virtio_net.h).
const (
	gsoTCPv4 = 1
	gsoUDPL4 = 5
	gsoECN   = 0x80
)

// segments cuts a GSO super-frame (IPv4 TCP or UDP_L4) into the frames
// the wire carries: gso_size bytes of payload each, with the headers of
// the super-frame, IP length, id and checksum, UDP length, TCP sequence
// number and flags (FIN and PSH on the last only, CWR on the first only)
// and complete transport checksums, as the kernel's software GSO does. It
// returns nil for a frame that is no super-frame, or one it cannot cut
// (other protocols, truncated): that one is written as it is.
func segments(vnet, frame []byte) [][]byte {
	typ := vnet[1] &^ gsoECN
	size := int(binary.NativeEndian.Uint16(vnet[4:]))
	if (typ != gsoTCPv4 && typ != gsoUDPL4) || size == 0 {
		return nil
	}
	const eth = 14
	if len(frame) < eth+20 || binary.BigEndian.Uint16(frame[12:]) != 0x0800 {
		return nil
	}
	ip := frame[eth:]
	ihl := int(ip[0]&0x0f) * 4
	if ihl < 20 || len(ip) < ihl+8 {
		return nil
	}
	proto := ip[9]
	var l4, csumAt int
	switch {
	case typ == gsoUDPL4 && proto == 17:
		l4, csumAt = 8, 6
	case typ == gsoTCPv4 && proto == 6 && len(ip) >= ihl+20:
		l4, csumAt = int(ip[ihl+12]>>4)*4, 16
		if l4 < 20 {
			return nil
		}
	default:
		return nil
	}
	hdrs := eth + ihl + l4
	if len(frame) < hdrs || len(frame)-hdrs <= size {
		return nil
	}
	payload := frame[hdrs:]
	id := binary.BigEndian.Uint16(ip[4:])
	seq := binary.BigEndian.Uint32(ip[ihl+4:])
	var out [][]byte
	for off, i := 0, 0; off < len(payload); off, i = off+size, i+1 {
		n := min(size, len(payload)-off)
		f := make([]byte, hdrs+n)
		copy(f, frame[:hdrs])
		copy(f[hdrs:], payload[off:off+n])
		sip := f[eth:]
		binary.BigEndian.PutUint16(sip[2:], uint16(ihl+l4+n))
		binary.BigEndian.PutUint16(sip[4:], id+uint16(i))
		sip[10], sip[11] = 0, 0
		binary.BigEndian.PutUint16(sip[10:], checksum.Checksum(sip[:ihl], 0))
		seg := sip[ihl:]
		if proto == 17 {
			binary.BigEndian.PutUint16(seg[4:], uint16(l4+n))
		} else {
			binary.BigEndian.PutUint32(seg[4:], seq+uint32(off))
			if off+n < len(payload) {
				seg[13] &^= 0x09 // FIN, PSH: the last segment's
			}
			if i > 0 {
				seg[13] &^= 0x80 // CWR: the first segment's
			}
		}
		seg[csumAt], seg[csumAt+1] = 0, 0
		var src, dst [4]byte
		copy(src[:], sip[12:16])
		copy(dst[:], sip[16:20])
		c := checksum.Checksum(seg, checksum.PseudoHeader(src, dst, proto, uint16(len(seg))))
		if c == 0 && proto == 17 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(seg[csumAt:], c)
		out = append(out, f)
	}
	return out
}
