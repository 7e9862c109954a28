package capture

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/netstation/netstation/stack/checksum"
)

// superFrame builds an IPv4 super-frame of proto with payload n bytes and
// the virtio-net header that hands it over for GSO of size bytes.
func superFrame(t *testing.T, tcp bool, n, size int) (vnet, frame, payload []byte) {
	payload = make([]byte, n)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	eth := &layers.Ethernet{SrcMAC: []byte{2, 0, 0, 0, 0, 1}, DstMAC: []byte{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Id: 100, SrcIP: []byte{10, 0, 0, 1}, DstIP: []byte{10, 0, 0, 2}}
	var l4 gopacket.SerializableLayer
	vnet = make([]byte, vnetHdrLen)
	if tcp {
		ip.Protocol = layers.IPProtocolTCP
		t4 := &layers.TCP{SrcPort: 1000, DstPort: 2000, Seq: 5000, ACK: true, PSH: true, FIN: true, CWR: true, Window: 100}
		t4.SetNetworkLayerForChecksum(ip)
		l4 = t4
		vnet[1] = gsoTCPv4
	} else {
		ip.Protocol = layers.IPProtocolUDP
		u := &layers.UDP{SrcPort: 1000, DstPort: 2000}
		u.SetNetworkLayerForChecksum(ip)
		l4 = u
		vnet[1] = gsoUDPL4
	}
	binary.NativeEndian.PutUint16(vnet[4:], uint16(size))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, l4, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return vnet, buf.Bytes(), payload
}

// TestSegments: a TCP and a UDP super-frame become the frames the wire
// carries, each decoded by gopacket with valid IP and transport checksums,
// their payloads end to end equal to the super-frame's.
func TestSegments(t *testing.T) {
	for _, tcp := range []bool{false, true} {
		vnet, frame, payload := superFrame(t, tcp, 3500, 1448)
		segs := segments(vnet, frame)
		if len(segs) != 3 {
			t.Fatalf("tcp %v: %d segments, want 3", tcp, len(segs))
		}
		var got []byte
		for i, s := range segs {
			p := gopacket.NewPacket(s, layers.LayerTypeEthernet, gopacket.Default)
			ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if ip == nil || int(ip.Length) != len(s)-14 || ip.Id != 100+uint16(i) {
				t.Fatalf("tcp %v segment %d: %v", tcp, i, p)
			}
			if checksum.Checksum(s[14:34], 0) != 0 {
				t.Errorf("tcp %v segment %d: bad IP checksum", tcp, i)
			}
			l4 := s[34:]
			if checksum.Checksum(l4, checksum.PseudoHeader([4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}, uint8(ip.Protocol), uint16(len(l4)))) != 0 {
				t.Errorf("tcp %v segment %d: bad transport checksum", tcp, i)
			}
			if tcp {
				tl := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
				last := i == len(segs)-1
				if tl.Seq != 5000+uint32(i*1448) || tl.FIN != last || tl.PSH != last || tl.CWR != (i == 0) {
					t.Errorf("segment %d: seq %d fin %v psh %v cwr %v", i, tl.Seq, tl.FIN, tl.PSH, tl.CWR)
				}
				got = append(got, tl.Payload...)
			} else {
				u := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
				if int(u.Length) != len(l4) {
					t.Errorf("segment %d: UDP length %d of %d", i, u.Length, len(l4))
				}
				got = append(got, u.Payload...)
			}
		}
		if !bytes.Equal(got, payload) {
			t.Errorf("tcp %v: payloads differ", tcp)
		}
	}
	// Not a super-frame, or one too small to cut: written as it is.
	vnet, frame, _ := superFrame(t, false, 1000, 1448)
	if segments(vnet, frame) != nil {
		t.Error("a frame within gso_size was cut")
	}
	vnet[1] = 0
	if segments(vnet, frame) != nil {
		t.Error("a frame without GSO was cut")
	}
}

// FuzzSegments: any frame and header is cut or left alone, never a panic,
// and the segments never carry more payload than the frame.
func FuzzSegments(f *testing.F) {
	for _, tcp := range []bool{false, true} {
		vnet, frame, _ := superFrame(&testing.T{}, tcp, 3000, 1000)
		f.Add(vnet, frame)
	}
	f.Fuzz(func(t *testing.T, vnet, frame []byte) {
		if len(vnet) < vnetHdrLen {
			return
		}
		total := 0
		for _, s := range segments(vnet, frame) {
			total += len(s)
		}
		if total > 0 && total > len(frame)*len(frame) {
			t.Fatalf("%d bytes of segments from a %d-byte frame", total, len(frame))
		}
	})
}
