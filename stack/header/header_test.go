package header

import (
	"testing"
)

func TestIPv4RoundTrip(t *testing.T) {
	b := make(IPv4, 40)
	f := IPv4Fields{TOS: 4, TotalLength: 40, ID: 0xbeef, Flags: IPv4FlagMoreFragments, FragmentOffset: 1480,
		TTL: 9, Protocol: ProtocolUDP, Src: [4]byte{1, 2, 3, 4}, Dst: [4]byte{5, 6, 7, 8}}
	b.Encode(&f)
	if !b.IsValid(40) || !b.IsChecksumValid() || b.ID() != 0xbeef || b.FragmentOffset() != 1480 ||
		!b.More() || b.TTL() != 9 || b.Src() != f.Src || b.Dst() != f.Dst || b.TOS() != 4 || len(b.Payload()) != 20 {
		t.Fatalf("round trip: %x", []byte(b))
	}
	if b.IsValid(39) || IPv4(b[:19]).IsValid(19) {
		t.Fatal("short packet valid")
	}
	b[0] = 0x44
	if b.IsValid(40) {
		t.Fatal("IHL 4 valid")
	}
}

func TestUDPChecksumNeverZero(t *testing.T) {
	// RFC 768: a computed zero is sent as all ones. Search a payload that
	// sums to zero.
	src, dst := [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}
	b := make(UDP, 10)
	b.Encode(&UDPFields{SrcPort: 1, DstPort: 2, Length: 10})
	for v := range 1 << 16 {
		b[8], b[9] = byte(v>>8), byte(v)
		b.SetChecksum(0)
		if c := UDPChecksum(src, dst, b); c == 0 {
			t.Fatal("zero checksum emitted")
		} else if c == 0xffff {
			return
		}
	}
	t.Fatal("no payload summed to zero")
}

func TestICMPSetTypeIncremental(t *testing.T) {
	m := make(ICMPv4, 64)
	for i := range m[8:] {
		m[8+i] = byte(i)
	}
	m.Encode(&ICMPv4Fields{Type: ICMPv4Echo, Ident: 7, Sequence: 9})
	m.SetType(ICMPv4EchoReply)
	want := make(ICMPv4, 64)
	copy(want, m)
	want.Encode(&ICMPv4Fields{Type: ICMPv4EchoReply, Ident: 7, Sequence: 9})
	if m.Checksum() != want.Checksum() {
		t.Fatalf("incremental %#x, full %#x", m.Checksum(), want.Checksum())
	}
}
