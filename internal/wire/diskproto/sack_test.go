package diskproto_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
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

// TestVersionReply: requests of versions 2 and 3 (the 128-byte header,
// built here byte by byte with hash/crc32, not with the package) and of a
// later version in our layout are recognized, and the reply to each
// parses in the requester's version carrying CodeVersion and the
// request's ids. A legacy header with a bad CRC is not answered.
func TestVersionReply(t *testing.T) {
	b := make([]byte, diskproto.RequestHeaderSize)
	req := diskproto.Request{Op: diskproto.OpInfo, Tag: 42, Session: 7, ReqID: 0}
	req.Marshal(b)
	if _, other := diskproto.OtherVersion(b); other {
		t.Fatal("our own version taken for another")
	}
	legacy := func(v uint8) []byte {
		h := make([]byte, diskproto.LegacyRequestHeaderSize)
		binary.BigEndian.PutUint16(h[0:], diskproto.Magic)
		h[2], h[3] = v, byte(diskproto.OpInfo)
		binary.BigEndian.PutUint32(h[8:], 42)
		binary.BigEndian.PutUint64(h[16:], 7)
		binary.BigEndian.PutUint32(h[56:], crc32.Checksum(nil, castagnoli))
		c := crc32.Update(0, castagnoli, h[:60])
		binary.BigEndian.PutUint32(h[60:], crc32.Update(c, castagnoli, h[64:]))
		return h
	}
	down := make([]byte, diskproto.RequestHeaderSize)
	down = down[:diskproto.LegacyRequest(down, b, 3)]
	later := append([]byte(nil), b...)
	later[2] = diskproto.Version + 1
	resealRequest(later)
	for _, tc := range []struct {
		name string
		v    uint8
		b    []byte
	}{
		{"version 2", 2, legacy(2)},
		{"version 3", 3, legacy(3)},
		{"version 3 by LegacyRequest", 3, down},
		{"a later version", diskproto.Version + 1, later},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "version 3 by LegacyRequest" {
				if want := legacy(3); !bytes.Equal(tc.b, want) {
					t.Fatalf("LegacyRequest = % x, want % x", tc.b, want)
				}
			}
			if _, err := diskproto.ParseRequest(tc.b); !errors.Is(err, diskproto.ErrVersion) {
				t.Fatalf("parsed: %v", err)
			}
			v, other := diskproto.OtherVersion(tc.b)
			if !other || v != tc.v {
				t.Fatalf("not recognized: %d %v", v, other)
			}
			rb := make([]byte, diskproto.ReplyHeaderSize)
			rb = rb[:diskproto.VersionReply(rb, tc.b, 99)]
			if rb[2] != tc.v {
				t.Fatalf("reply in version %d", rb[2])
			}
			if v, ok := diskproto.PeerVersion(rb, 7); !ok || v != tc.v {
				t.Fatalf("PeerVersion = %d %v", v, ok)
			}
			// Parsed the way that version does (ours but for the version byte).
			diskproto.SetReplyVersionForTest(rb, diskproto.Version)
			rep, err := diskproto.ParseReply(rb)
			if err != nil || rep.Status != diskproto.CodeVersion || rep.Tag != 42 || rep.Session != 7 {
				t.Fatalf("reply %+v, %v", rep, err)
			}
			bad := append([]byte(nil), tc.b...)
			bad[20] ^= 1
			if _, other := diskproto.OtherVersion(bad); other {
				t.Fatal("a header with a bad CRC recognized")
			}
		})
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
