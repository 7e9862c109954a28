package gossip

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// mlAliveMsg mirrors memberlist's alive message, encoded as memberlist
// encodes it (type byte, then msgpack of the struct).
type mlAliveMsg struct {
	Incarnation uint32
	Node        string
	Addr        []byte
	Port        uint16
	Meta        []byte
	Vsn         []uint8
}

func encodeMsg(t testing.TB, typ byte, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteByte(typ)
	if err := codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func alive(t testing.TB, node string, inc uint32) []byte {
	return encodeMsg(t, mlAlive, mlAliveMsg{Incarnation: inc, Node: node, Addr: []byte{10, 0, 0, 1}, Port: Port,
		Meta: []byte(`{"kind":"disk"}`), Vsn: []uint8{1, 5, 2, 0, 0, 0}})
}

func compound(msgs ...[]byte) []byte {
	out := []byte{mlCompound, byte(len(msgs))}
	for _, m := range msgs {
		out = binary.BigEndian.AppendUint16(out, uint16(len(m)))
	}
	for _, m := range msgs {
		out = append(out, m...)
	}
	return out
}

func withCRC(b []byte) []byte {
	out := []byte{mlHasCRC, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], crc32.ChecksumIEEE(b))
	return append(out, b...)
}

// TestQuietPacket: joins of others go, everything else stays, byte for
// byte, and a rebuilt packet's framing and CRC are memberlist's.
func TestQuietPacket(t *testing.T) {
	join := alive(t, "p7", 1)
	refute := alive(t, "p7", 2)
	own := alive(t, "p1", 1)
	suspect := encodeMsg(t, 3, struct {
		Incarnation uint32
		Node, From  string
	}{1, "p9", "p1"})
	ping := []byte{0, 0x81, 0xa5, 'S', 'e', 'q', 'N', 'o', 1}
	for _, tc := range []struct {
		name    string
		in      []byte
		want    []byte // nil: dropped
		quieted int
	}{
		{"join", join, nil, 1},
		{"join with crc", withCRC(join), nil, 1},
		{"refutation", refute, refute, 0},
		{"own join", own, own, 0},
		{"suspect", suspect, suspect, 0},
		{"compound of joins", compound(join, alive(t, "p8", 1)), nil, 2},
		{"compound, one left", compound(ping, join), ping, 1},
		{"compound, crc, one left", withCRC(compound(join, ping)), withCRC(ping), 1},
		{"compound, two left", compound(ping, join, refute), compound(ping, refute), 1},
		{"compound, crc, two left", withCRC(compound(suspect, join, own)), withCRC(compound(suspect, own)), 1},
		{"compound untouched", compound(ping, refute), compound(ping, refute), 0},
		{"truncated compound", compound(ping, join)[:20], compound(ping, join)[:20], 0},
		{"garbage alive", []byte{mlAlive, 0xc1, 0xff}, []byte{mlAlive, 0xc1, 0xff}, 0},
		{"empty", []byte{}, []byte{}, 0},
	} {
		got, q := quietPacket(tc.in, "p1")
		if q != tc.quieted || !bytes.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("%s: got %x (%d quieted), want %x (%d)", tc.name, got, q, tc.want, tc.quieted)
		}
	}
}

// TestAliveFast: the decoder-free reading of an alive message agrees with
// the codec, and declines what it does not know.
func TestAliveFast(t *testing.T) {
	for _, m := range []mlAliveMsg{{Incarnation: 1, Node: "p7"}, {Incarnation: 2, Node: "disk123", Addr: []byte{10, 0, 0, 1}, Port: Port, Vsn: []uint8{1, 5, 2, 0, 0, 0}},
		{Incarnation: 1 << 20, Node: strings.Repeat("n", 300), Meta: bytes.Repeat([]byte("m"), 400)}} {
		b := encodeMsg(t, mlAlive, m)[1:]
		inc, node, ok := aliveFast(b)
		if !ok || inc != m.Incarnation || node != m.Node {
			t.Errorf("%+v: fast %d %q %v", m, inc, node, ok)
		}
	}
	// Not an alive message as memberlist writes it: the codec decides.
	other := encodeMsg(t, mlAlive, struct {
		Incarnation int64
		Node        string
	}{-1, "p7"})[1:]
	if _, _, ok := aliveFast(other); ok {
		t.Errorf("%x read fast", other)
	}
}

// TestQuietPacketAllocs: a packet with nothing to take out is passed on
// without a copy.
func TestQuietPacketAllocs(t *testing.T) {
	ping := []byte{0, 0x81, 0xa5, 'S', 'e', 'q', 'N', 'o', 1}
	pkt := withCRC(compound(ping, ping))
	if n := testing.AllocsPerRun(100, func() { quietPacket(pkt, "p1") }); n > 1 {
		t.Errorf("%v allocations for a packet without alive messages", n)
	}
}

// FuzzQuietPacket: any datagram gives a result without a panic; what is
// sent is the input itself, nothing, or a well-formed packet whose
// messages are the input's, in order, minus what was counted.
func FuzzQuietPacket(f *testing.F) {
	join, ping := alive(f, "p7", 1), []byte{0, 0x81, 0xa5, 'S', 'e', 'q', 'N', 'o', 1}
	for _, s := range [][]byte{join, withCRC(join), compound(ping, join), withCRC(compound(join, ping, alive(f, "p1", 1))), {mlCompound, 3, 0}, {mlHasCRC}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		out, q := quietPacket(in, "p1")
		if !bytes.Equal(in, orig) {
			t.Fatal("input modified")
		}
		if q == 0 {
			if !bytes.Equal(out, in) {
				t.Fatalf("nothing quieted but %x became %x", in, out)
			}
			return
		}
		if out == nil {
			return
		}
		body, inBody := out, in
		if in[0] == mlHasCRC {
			if out[0] != mlHasCRC || binary.BigEndian.Uint32(out[1:5]) != crc32.ChecksumIEEE(out[5:]) {
				t.Fatalf("bad CRC header in %x", out)
			}
			body, inBody = out[5:], in[5:]
		}
		inParts, ok := splitCompound(inBody[1:])
		if !ok {
			t.Fatalf("quieted %d of a packet that is not a compound", q)
		}
		outParts := [][]byte{body}
		if body[0] == mlCompound {
			if outParts, ok = splitCompound(body[1:]); !ok {
				t.Fatalf("rebuilt compound %x is malformed", body)
			}
		}
		if len(outParts)+q != len(inParts) {
			t.Fatalf("%d parts + %d quieted != %d", len(outParts), q, len(inParts))
		}
		j := 0
		for _, p := range inParts {
			if j < len(outParts) && bytes.Equal(p, outParts[j]) {
				j++
			}
		}
		if j != len(outParts) {
			t.Fatalf("rebuilt parts are not the input's in order")
		}
	})
}

// FuzzAliveFast: whatever aliveFast reads, memberlist's codec reads the
// same.
func FuzzAliveFast(f *testing.F) {
	f.Add(alive(f, "p7", 1)[1:])
	f.Add(alive(f, "disk12", 300)[1:])
	f.Fuzz(func(t *testing.T, b []byte) {
		inc, node, ok := aliveFast(b)
		if !ok {
			return
		}
		var h aliveHeader
		if err := codec.NewDecoderBytes(b, &msgpackHandle).Decode(&h); err != nil {
			return // the fast reader stops at what it needs; trailing junk is the codec's to refuse
		}
		if h.Incarnation != inc || h.Node != node {
			t.Fatalf("fast %d %q, codec %d %q", inc, node, h.Incarnation, h.Node)
		}
	})
}
