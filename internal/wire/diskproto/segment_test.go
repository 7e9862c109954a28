package diskproto_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/netstation/netstation/internal/wire/diskproto"
)

// layOut builds a segmented WRITE the way a client does and returns its
// datagrams.
func layOut(t testing.TB, data []byte, dgram int) [][]byte {
	l := diskproto.Layout{Header: diskproto.RequestHeaderSize, Length: len(data), Datagram: dgram}
	if !l.Valid() {
		t.Fatalf("invalid layout %+v", l)
	}
	buf := make([]byte, l.Size())
	req := diskproto.Request{Op: diskproto.OpWrite, Tag: 9, Length: uint32(len(data)), Session: 5, ReqID: 77,
		Epoch: 3, Offset: 8192, PayloadCRC: diskproto.Checksum(data)}
	req.MarshalHeader(buf)
	var out [][]byte
	for i := range l.Count() {
		a, b := l.Span(i)
		da, db, off := l.Data(i)
		if i > 0 {
			diskproto.PutSegmentHeader(buf[a:], false, uint16(i), uint32(off), 5, 77)
		}
		copy(buf[da:db], data[off:])
		out = append(out, buf[a:b])
	}
	return out
}

// TestLayout checks that the datagrams tile the buffer, carry every data
// byte exactly once, and are all the chosen size but the last.
func TestLayout(t *testing.T) {
	for _, n := range []int{0, 1, 1343, 1344, 1345, 4096, 65536, 1 << 20, diskproto.MaxIOLimit} {
		for _, d := range []int{diskproto.MinDatagram, 1472, 8972, diskproto.MaxDatagram} {
			for _, hdr := range []int{diskproto.RequestHeaderSize, diskproto.ReplyHeaderSize} {
				l := diskproto.Layout{Header: hdr, Length: n, Datagram: d}
				pos, data := 0, 0
				for i := range l.Count() {
					a, b := l.Span(i)
					da, db, off := l.Data(i)
					if a != pos || b <= a || b-a > d || (i < l.Count()-1 && b-a != d) {
						t.Fatalf("%+v: datagram %d spans [%d,%d) after %d", l, i, a, b, pos)
					}
					if off != data || db-da != min(n-data, db-da) || da < a || db != b {
						t.Fatalf("%+v: datagram %d data [%d,%d) at %d, want offset %d", l, i, da, db, off, data)
					}
					if i > 0 && db-da < diskproto.MinSegmentData && i < l.Count()-1 {
						t.Fatalf("%+v: segment %d carries %d bytes", l, i, db-da)
					}
					pos, data = b, data+db-da
				}
				if pos != l.Size() || data != n || l.Count()-1 > diskproto.MaxSegments(uint32(n)) {
					t.Fatalf("%+v: %d bytes laid out of %d, %d data of %d, %d datagrams", l, pos, l.Size(), data, n, l.Count())
				}
			}
		}
	}
}

// TestSegmentedWriteAssembles sends a laid-out WRITE through the parsers
// and an Assembly in a shuffled order with duplicates, and gets the data
// back with a matching CRC.
func TestSegmentedWriteAssembles(t *testing.T) {
	data := make([]byte, 200_000)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	dgrams := layOut(t, data, 1472)
	order := r.Perm(len(dgrams))
	order = append(order, order[:10]...) // duplicates
	var a diskproto.Assembly
	var crc uint32
	got := make([]byte, len(data))
	a.Reset(uint32(len(data)))
	for _, i := range order {
		b := dgrams[i]
		if !diskproto.IsSegment(b) {
			req, err := diskproto.ParseRequest(b)
			if err != nil || !req.Partial() || req.Length != uint32(len(data)) {
				t.Fatalf("header: %v %+v", err, req)
			}
			if fresh, err := a.Add(0, 0, len(req.Payload)); err != nil {
				t.Fatal(err)
			} else if fresh {
				copy(got, req.Payload)
				crc = req.PayloadCRC
			}
			continue
		}
		seg, err := diskproto.ParseSegment(b)
		if err != nil || seg.Reply || seg.Session != 5 || seg.ReqID != 77 {
			t.Fatalf("segment %d: %v %+v", i, err, seg)
		}
		fresh, err := a.Add(int(seg.Index), seg.Offset, len(seg.Data))
		if err != nil {
			t.Fatal(err)
		}
		if fresh {
			copy(got[seg.Offset:], seg.Data)
		}
	}
	if !a.Complete() || !bytes.Equal(got, data) || diskproto.Checksum(got) != crc {
		t.Fatalf("assembly complete %v, equal %v", a.Complete(), bytes.Equal(got, data))
	}
}

func TestAssemblyRefusesImpossibleSegments(t *testing.T) {
	var a diskproto.Assembly
	a.Reset(10_000)
	for name, c := range map[string]struct {
		index int
		off   uint32
		n     int
	}{
		"past the end":       {1, 9_000, 2_000},
		"index too high":     {diskproto.MaxSegments(10_000) + 1, 100, 10},
		"header at offset":   {0, 5, 10},
		"segment at 0":       {3, 0, 10},
		"negative index":     {-1, 10, 10},
		"offset overflowing": {2, ^uint32(0), 10},
	} {
		if _, err := a.Add(c.index, c.off, c.n); !errors.Is(err, diskproto.ErrSegment) {
			t.Errorf("%s: %v, want ErrSegment", name, err)
		}
	}
	if a.HasHeader() || a.Complete() {
		t.Fatal("refused datagrams were recorded")
	}
}

func FuzzParseSegment(f *testing.F) {
	for i, b := range layOut(f, bytes.Repeat([]byte("seg"), 1000), diskproto.MinDatagram)[1:] {
		if i == 2 {
			diskproto.SetSegmentRound(b, diskproto.FlagLast, 77)
		}
		f.Add(b, uint32(3000))
	}
	f.Fuzz(func(t *testing.T, b []byte, length uint32) {
		seg, err := diskproto.ParseSegment(b)
		if err != nil {
			return
		}
		c := make([]byte, len(b))
		diskproto.PutSegmentHeader(c, seg.Reply, seg.Index, seg.Offset, seg.Session, seg.ReqID)
		diskproto.SetSegmentRound(c, seg.Flags, seg.Round)
		copy(c[diskproto.SegmentHeaderSize:], seg.Data)
		if !bytes.Equal(b, c) {
			t.Fatalf("accepted segment does not re-marshal to itself: %+v", seg)
		}
		var a diskproto.Assembly
		a.Reset(length % (diskproto.MaxIOLimit + 1))
		if fresh, err := a.Add(int(seg.Index), seg.Offset, len(seg.Data)); err == nil && !fresh {
			t.Fatal("first datagram reported as a duplicate")
		}
		// The header comes last and fixes a length: accepted only if what
		// arrived fits it.
		l := length % (diskproto.MaxIOLimit + 1) / 2
		if err := a.SetLength(l); err == nil && a.Has(int(seg.Index)) && uint64(seg.Offset)+uint64(len(seg.Data)) > uint64(l) {
			t.Fatalf("length %d accepted with %d bytes at %d held", l, len(seg.Data), seg.Offset)
		}
	})
}

// TestPutSegmentHeaderRound: one write with the flags and round gives the
// bytes PutSegmentHeader and then SetSegmentRound give, as do
// PutSegmentFields and then SetSegmentRound, and parses back.
func TestPutSegmentHeaderRound(t *testing.T) {
	for _, c := range []struct {
		flags diskproto.SegmentFlags
		round uint8
		reply bool
	}{{0, 0, false}, {diskproto.FlagLast, 7, true}, {0, 255, true}, {diskproto.FlagLast, 1, false}} {
		a := make([]byte, diskproto.SegmentHeaderSize+10)
		b := make([]byte, diskproto.SegmentHeaderSize+10)
		diskproto.PutSegmentHeader(a, c.reply, 3, 2888, 11, 12)
		diskproto.SetSegmentRound(a, c.flags, c.round)
		diskproto.PutSegmentHeaderRound(b, c.reply, 3, 2888, 11, 12, c.flags, c.round)
		if !bytes.Equal(a, b) {
			t.Fatalf("%+v: %x, want %x", c, b, a)
		}
		// The fields alone, sealed when the round is set: the same bytes,
		// and nothing sealed before (an unsealed header does not parse).
		f := make([]byte, diskproto.SegmentHeaderSize+10)
		diskproto.PutSegmentFields(f, c.reply, 3, 2888, 11, 12)
		if _, err := diskproto.ParseSegment(f); err == nil {
			t.Fatalf("%+v: a header with its fields alone parsed", c)
		}
		diskproto.SetSegmentRound(f, c.flags, c.round)
		if !bytes.Equal(f, b) {
			t.Fatalf("%+v: fields then round %x, want %x", c, f, b)
		}
		seg, err := diskproto.ParseSegment(b)
		if err != nil || seg.Flags != c.flags || seg.Round != c.round || seg.Reply != c.reply || seg.Index != 3 || seg.Offset != 2888 {
			t.Fatalf("%+v: parsed %+v, %v", c, seg, err)
		}
	}
}
