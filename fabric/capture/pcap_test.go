package capture

import (
	"bytes"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// TestPcapWriterReadByGopacket: what pcapWriter writes, gopacket's pcap
// reader (an independent implementation) reads back: link type,
// snaplen, nanosecond timestamps, kept and original lengths, bytes.
func TestPcapWriterReadByGopacket(t *testing.T) {
	var buf bytes.Buffer
	pw := &pcapWriter{w: &buf}
	if err := pw.writeFileHeader(96); err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1_790_000_000, 123_456_789)
	frames := [][]byte{bytes.Repeat([]byte{0xab}, 60), bytes.Repeat([]byte{0xcd}, 96)}
	if err := pw.writePacket(at, frames[0], 60); err != nil {
		t.Fatal(err)
	}
	if err := pw.writePacket(at.Add(time.Nanosecond), frames[1], 1514); err != nil {
		t.Fatal(err)
	}
	if err := pw.writePacket(at, frames[1], 10); err == nil {
		t.Fatal("a record longer than its frame was written")
	}
	r, err := pcapgo.NewReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeEthernet || r.Snaplen() != 96 || r.Resolution() != gopacket.TimestampResolutionNanosecond {
		t.Fatalf("header: link %v snaplen %d resolution %v", r.LinkType(), r.Snaplen(), r.Resolution())
	}
	for i, want := range []struct {
		at     time.Time
		data   []byte
		length int
	}{{at, frames[0], 60}, {at.Add(time.Nanosecond), frames[1], 1514}} {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if !ci.Timestamp.Equal(want.at) || ci.CaptureLength != len(want.data) || ci.Length != want.length || !bytes.Equal(data, want.data) {
			t.Fatalf("record %d: %+v (%d bytes), want %v %d/%d", i, ci, len(data), want.at, len(want.data), want.length)
		}
	}
}
