package diskproto_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/netstation/netstation/internal/wire/diskproto"
)

// TestSACKRoundTrip: a SACK survives its wire form, and every corruption
// of a field the receiver trusts is refused.
func TestSACKRoundTrip(t *testing.T) {
	in := diskproto.SACK{Round: 9, Tag: 0x01020304, Length: 262144, Session: 5, ReqID: 77, Bitmap: []byte{0xff, 0x0f, 0x81}}
	b := make([]byte, diskproto.SACKHeaderSize+diskproto.MaxSACKBitmap)
	n, err := in.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	b = b[:n]
	if !diskproto.IsSACK(b) || diskproto.IsSegment(b) && !diskproto.IsSACK(b) {
		t.Fatal("a SACK is not recognized as one")
	}
	out, err := diskproto.ParseSACK(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.Round != in.Round || out.Tag != in.Tag || out.Length != in.Length || out.Session != in.Session ||
		out.ReqID != in.ReqID || !bytes.Equal(out.Bitmap, in.Bitmap) {
		t.Fatalf("got %+v, want %+v", out, in)
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x10
		if _, err := diskproto.ParseSACK(c); err == nil {
			t.Errorf("byte %d flipped: accepted", i)
		}
	}
	if _, err := diskproto.ParseSACK(b[:n-1]); err == nil {
		t.Error("truncated SACK accepted")
	}
	if _, err := (&diskproto.SACK{Bitmap: make([]byte, diskproto.MaxSACKBitmap+1)}).Marshal(make([]byte, 1<<16)); !errors.Is(err, diskproto.ErrPayloadSize) {
		t.Errorf("oversized bitmap: %v", err)
	}
}

// TestHeld: the bitmap an Assembly reports names exactly the datagrams
// added, in the wire layout BitmapHas reads.
func TestHeld(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		length := uint32(r.IntN(diskproto.MaxIOLimit) + 1)
		var a diskproto.Assembly
		a.Reset(length)
		max := diskproto.MaxSegments(length)
		want := map[int]bool{}
		for range r.IntN(50) {
			i := r.IntN(max + 1)
			off := uint32(0)
			if i > 0 {
				off = uint32(r.IntN(int(length)))
			}
			if _, err := a.Add(i, off, 0); err == nil {
				want[i] = true
			}
		}
		bm := a.Held(nil)
		top := -1
		for i := range want {
			top = mmax(top, i)
		}
		if len(bm) != diskproto.BitmapSize(top+1) {
			t.Fatalf("bitmap of %d bytes for highest datagram %d", len(bm), top)
		}
		for i := 0; i <= max+8; i++ {
			if diskproto.BitmapHas(bm, i) != want[i] || a.Has(i) != want[i] {
				t.Fatalf("datagram %d: bitmap says %v, Has %v, added %v", i, diskproto.BitmapHas(bm, i), a.Has(i), want[i])
			}
		}
	}
}

func mmax(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// TestVersionReply: a request of version 2 is recognized, and the reply
// to it parses as version 2 carrying CodeVersion and the request's ids.
func TestVersionReply(t *testing.T) {
	b := make([]byte, diskproto.RequestHeaderSize)
	req := diskproto.Request{Op: diskproto.OpInfo, Tag: 42, Session: 7, ReqID: 0}
	req.Marshal(b)
	if _, other := diskproto.OtherVersion(b); other {
		t.Fatal("our own version taken for another")
	}
	diskproto.SetRequestVersion(b, 2)
	if _, err := diskproto.ParseRequest(b); !errors.Is(err, diskproto.ErrVersion) {
		t.Fatalf("version 2 request parsed: %v", err)
	}
	v, other := diskproto.OtherVersion(b)
	if !other || v != 2 {
		t.Fatalf("version 2 request not recognized: %d %v", v, other)
	}
	rb := make([]byte, diskproto.ReplyHeaderSize)
	rb = rb[:diskproto.VersionReply(rb, b, 99)]
	if rb[2] != 2 {
		t.Fatalf("reply in version %d", rb[2])
	}
	if v, ok := diskproto.PeerVersion(rb, 7); !ok || v != 2 {
		t.Fatalf("PeerVersion = %d %v", v, ok)
	}
	// Parsed the way version 2 did (ours but for the version byte).
	diskproto.SetReplyVersionForTest(rb, diskproto.Version)
	rep, err := diskproto.ParseReply(rb)
	if err != nil || rep.Status != diskproto.CodeVersion || rep.Tag != 42 || rep.Session != 7 {
		t.Fatalf("reply %+v, %v", rep, err)
	}
}

func FuzzParseSACK(f *testing.F) {
	for _, s := range []diskproto.SACK{{Round: 1, Session: 2, ReqID: 3, Length: 9000, Bitmap: []byte{0xfd}}, {Tag: 8}} {
		b := make([]byte, diskproto.SACKHeaderSize+len(s.Bitmap))
		s.Marshal(b)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := diskproto.ParseSACK(b)
		if err != nil {
			return
		}
		c := make([]byte, len(b))
		if n, err := s.Marshal(c); err != nil || n != len(b) || !bytes.Equal(b, c) {
			t.Fatalf("accepted SACK does not re-marshal to itself: %+v (%v)", s, err)
		}
		var a diskproto.Assembly
		a.Reset(s.Length % (diskproto.MaxIOLimit + 1))
		for i := range len(s.Bitmap) * 8 {
			diskproto.BitmapHas(s.Bitmap, i)
		}
	})
}
