package header

import (
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func TestTCPEncodeDecodedByGopacket(t *testing.T) {
	cases := []TCPOptions{
		{},
		{MSS: 1460, HasWS: true, WS: 7, SACKPermitted: true, HasTS: true, TSVal: 1, TSEcr: 2},
		{MSS: 536},
		{SACKPermitted: true},
		{HasTS: true, TSVal: 0xdeadbeef, TSEcr: 0x01020304, NumSACK: 3,
			SACK: [TCPMaxSACKBlocks]SACKBlock{{1, 2}, {3, 4}, {5, 6}}},
	}
	for i, o := range cases {
		f := TCPFields{SrcPort: 1234, DstPort: 80, Seq: 0xfffffff0, Ack: 77, Flags: TCPFlagSYN | TCPFlagACK, Window: 512, Opts: o}
		b := make(TCP, 60+5)
		hl := b.Encode(&f)
		if hl%4 != 0 || hl != TCPMinimumSize+TCPOptionsSize(&o) {
			t.Fatalf("case %d: header length %d", i, hl)
		}
		copy(b[hl:], "hello")
		b = b[:hl+5]
		if !b.IsValid() || b.DataOffset() != hl || string(b.Payload()) != "hello" || b.Seq() != f.Seq || b.Ack() != 77 ||
			b.Flags() != f.Flags || b.Window() != 512 || b.SrcPort() != 1234 || b.DstPort() != 80 {
			t.Fatalf("case %d: getters disagree: %x", i, []byte(b))
		}
		var got TCPOptions
		if err := ParseTCPOptions(b.Options(), &got); err != nil || got != o {
			t.Fatalf("case %d: parsed %+v, %v; want %+v", i, got, err, o)
		}
		pkt := gopacket.NewPacket(b, layers.LayerTypeTCP, gopacket.Default)
		tl, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok || pkt.ErrorLayer() != nil {
			t.Fatalf("case %d: gopacket: %v", i, pkt.ErrorLayer())
		}
		if tl.Seq != f.Seq || !tl.SYN || !tl.ACK || tl.Window != 512 || string(tl.Payload) != "hello" {
			t.Fatalf("case %d: gopacket sees %+v", i, tl)
		}
		for _, op := range tl.Options {
			switch op.OptionType {
			case layers.TCPOptionKindMSS:
				if o.MSS == 0 {
					t.Errorf("case %d: gopacket sees an MSS we did not encode", i)
				}
			case layers.TCPOptionKindTimestamps:
				if !o.HasTS || len(op.OptionData) != 8 {
					t.Errorf("case %d: timestamps %x", i, op.OptionData)
				}
			}
		}
	}
}

func TestParseTCPOptionsRejects(t *testing.T) {
	bad := [][]byte{
		{TCPOptMSS},       // no length
		{TCPOptMSS, 4, 1}, // runs past the end
		{TCPOptMSS, 3, 1}, // wrong length
		{TCPOptTimestamps, 9, 1, 2, 3, 4, 5, 6, 7},
		{TCPOptSACK, 2}, // no block
		{TCPOptSACK, 7, 1, 2, 3, 4, 5},
		{99, 1}, // length below 2
	}
	for _, b := range bad {
		var o TCPOptions
		if err := ParseTCPOptions(b, &o); err == nil {
			t.Errorf("%x accepted", b)
		}
	}
	var o TCPOptions
	if err := ParseTCPOptions([]byte{TCPOptNOP, 99, 3, 0, TCPOptWindowScale, 3, 30, TCPOptEOL, 0xff}, &o); err != nil || !o.HasWS || o.WS != TCPMaxWindowScale {
		t.Errorf("unknown option, clamped WS, EOL: %+v %v", o, err)
	}
}

func TestTCPChecksum(t *testing.T) {
	src, dst := [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}
	b := make(TCP, 25)
	b.Encode(&TCPFields{SrcPort: 1, DstPort: 2, Seq: 3, Flags: TCPFlagACK})
	copy(b[20:], "abcde")
	b.SetChecksum(TCPChecksum(src, dst, b))
	pkt := gopacket.NewPacket(b, layers.LayerTypeTCP, gopacket.Default)
	tl := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	ip := &layers.IPv4{SrcIP: src[:], DstIP: dst[:], Protocol: layers.IPProtocolTCP}
	tl.SetNetworkLayerForChecksum(ip)
	// gopacket sums the segment as it is, checksum field included: a
	// correct segment sums to zero.
	if got, err := tl.ComputeChecksum(); err != nil || got != 0 {
		t.Fatalf("checksum %#x: gopacket residue %#x (%v)", b.Checksum(), got, err)
	}
}

func FuzzParseTCPOptions(f *testing.F) {
	f.Add([]byte{TCPOptMSS, 4, 5, 0xb4, TCPOptNOP, TCPOptWindowScale, 3, 7})
	f.Add([]byte{TCPOptSACK, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	f.Add([]byte{TCPOptTimestamps, 10, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, b []byte) {
		var o TCPOptions
		if ParseTCPOptions(b, &o) != nil {
			return
		}
		// What parsed re-encodes and parses to the same thing.
		buf := make(TCP, TCPMaximumSize+TCPOptionsSize(&o))
		if o.NumSACK > 3 && o.HasTS || TCPMinimumSize+TCPOptionsSize(&o) > TCPMaximumSize {
			return
		}
		buf.Encode(&TCPFields{Opts: o})
		var again TCPOptions
		if err := ParseTCPOptions(TCP(buf).Options(), &again); err != nil || again != o {
			t.Fatalf("%+v re-parsed as %+v (%v)", o, again, err)
		}
	})
}
