package checksum

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// serializeIPv4 builds an IPv4 packet carrying l4 and payload with
// gopacket, checksums computed by gopacket, and returns the bytes.
func serializeIPv4(t *testing.T, ip *layers.IPv4, l4 gopacket.SerializableLayer, payload []byte) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, l4, gopacket.Payload(payload)); err != nil {
		t.Fatalf("gopacket serialize: %v", err)
	}
	return buf.Bytes()
}

func randomIPv4(rng *rand.Rand, proto layers.IPProtocol) (*layers.IPv4, [4]byte, [4]byte) {
	var src, dst [4]byte
	binary.BigEndian.PutUint32(src[:], rng.Uint32())
	binary.BigEndian.PutUint32(dst[:], rng.Uint32())
	ip := &layers.IPv4{
		Version: 4, IHL: 5, TTL: uint8(rng.Uint32()), Id: uint16(rng.Uint32()),
		Protocol: proto, SrcIP: net.IP(src[:]), DstIP: net.IP(dst[:]),
	}
	return ip, src, dst
}

// l4Checksum computes the UDP/TCP checksum of segment (the L4 header and
// payload) with this package, the checksum field at csumOff taken as zero.
func l4Checksum(segment []byte, csumOff int, src, dst [4]byte, proto uint8) uint16 {
	seg := append([]byte(nil), segment...)
	seg[csumOff], seg[csumOff+1] = 0, 0
	return Checksum(seg, PseudoHeader(src, dst, proto, uint16(len(seg))))
}

// TestPseudoHeaderAgainstGopacketUDP is the independent check of
// PseudoHeader: gopacket's UDP serializer computes the checksum over its
// own pseudo-header, and ours must agree for random addresses, ports and
// payload sizes (odd ones included).
func TestPseudoHeaderAgainstGopacketUDP(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for range 2000 {
		ip, src, dst := randomIPv4(rng, layers.IPProtocolUDP)
		udp := &layers.UDP{SrcPort: layers.UDPPort(rng.Uint32()), DstPort: layers.UDPPort(rng.Uint32())}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, rng.IntN(1473))
		fillPattern(rng, payload, rng.IntN(4))
		pkt := serializeIPv4(t, ip, udp, payload)

		ihl := int(pkt[0]&0x0f) * 4
		// gopacket's IPv4 header checksum is an independent check of
		// Partial on a header: it must verify.
		if v := Partial(pkt[:ihl], 0); v != 0xffff {
			t.Fatalf("gopacket's IPv4 header %x sums to %#04x, want 0xffff", pkt[:ihl], v)
		}
		segment := pkt[ihl:]
		want := binary.BigEndian.Uint16(segment[6:])
		got := l4Checksum(segment, 6, src, dst, uint8(layers.IPProtocolUDP))
		if got == 0 {
			got = 0xffff // RFC 768: a computed zero is sent as all ones.
		}
		if got != want {
			t.Fatalf("src %v dst %v len %d: UDP checksum = %#04x, gopacket %#04x", src, dst, len(segment), got, want)
		}
	}
}

// TestPseudoHeaderAgainstGopacketTCP does the same for TCP (protocol 6,
// checksum at offset 16), where a zero checksum is sent as is.
func TestPseudoHeaderAgainstGopacketTCP(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for range 2000 {
		ip, src, dst := randomIPv4(rng, layers.IPProtocolTCP)
		tcp := &layers.TCP{
			SrcPort: layers.TCPPort(rng.Uint32()), DstPort: layers.TCPPort(rng.Uint32()),
			Seq: rng.Uint32(), Ack: rng.Uint32(), ACK: true, Window: uint16(rng.Uint32()),
		}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, rng.IntN(1461))
		fillPattern(rng, payload, rng.IntN(4))
		pkt := serializeIPv4(t, ip, tcp, payload)
		segment := pkt[int(pkt[0]&0x0f)*4:]
		want := binary.BigEndian.Uint16(segment[16:])
		if got := l4Checksum(segment, 16, src, dst, uint8(layers.IPProtocolTCP)); got != want {
			t.Fatalf("src %v dst %v len %d: TCP checksum = %#04x, gopacket %#04x", src, dst, len(segment), got, want)
		}
	}
}
