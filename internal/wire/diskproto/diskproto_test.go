package diskproto_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"testing"

	"github.com/netstation/netstation/internal/wire/diskproto"
)

func seedRequests() [][]byte {
	var out [][]byte
	for _, r := range []diskproto.Request{
		{Op: diskproto.OpInfo, Tag: 1, Session: 9},
		{Op: diskproto.OpWrite, Flags: diskproto.FlagFUA, Tag: 2, Session: 9, ReqID: 3, Low: 1, Epoch: 5, Offset: 4096, Payload: []byte("data")},
		{Op: diskproto.OpRead, Tag: 3, Length: 65536, Offset: 1 << 40},
		{Op: diskproto.OpRead, Tag: 7, Length: 262144, PaceRate: 1_500_000_000},
		{Op: diskproto.OpRead, Flags: diskproto.FlagHave, Tag: 8, Length: 262144, PaceRate: 1, Payload: []byte{0x0f}},
		{Op: diskproto.OpTrim, Length: 8192, Capability: [64]byte{1, 2, 3}},
		{Op: diskproto.OpFlush},
		{Op: diskproto.OpTransfer, Tag: 4, Session: 9, ReqID: 1, Length: 1280 * 720 * 4, Payload: seedOrder()},
		{Op: diskproto.OpRead, Flags: diskproto.FlagHave, Tag: 5, Length: 262144, Offset: 1 << 20, Payload: []byte{0xff, 0xfe, 0x7f}},
		{Op: diskproto.OpWrite, Flags: diskproto.FlagReport, Tag: 6, Payload: []byte("probe")},
	} {
		b := make([]byte, diskproto.RequestHeaderSize+len(r.Payload))
		r.Marshal(b)
		out = append(out, b)
	}
	return out
}

func seedOrder() []byte {
	o := diskproto.TransferOrder{Dest: netip.MustParseAddrPort("10.77.0.12:5910"), Notify: netip.MustParseAddrPort("10.77.0.10:40000"),
		Width: 1280, Height: 720, TileW: 20, TileH: 18, Repeat: 50, Stream: 7, Frame: 1}
	b := o.Marshal()
	return b[:]
}

// TestTransferOrderRoundTrip: an order survives its wire form; a TRANSFER
// request keeps its source length apart from its payload; bad orders are
// refused.
func TestTransferOrderRoundTrip(t *testing.T) {
	b := seedOrder()
	o, err := diskproto.ParseTransferOrder(b)
	if err != nil {
		t.Fatal(err)
	}
	if again := o.Marshal(); !bytes.Equal(again[:], b) || o.Dest.Port() != 5910 || o.Repeat != 50 {
		t.Fatalf("round trip: %+v", o)
	}
	r := diskproto.Request{Op: diskproto.OpTransfer, Length: 1 << 30, Payload: b}
	buf := make([]byte, diskproto.RequestHeaderSize+len(b))
	if _, err := r.Marshal(buf); err != nil {
		t.Fatal(err)
	}
	if got, err := diskproto.ParseRequest(buf); err != nil || got.Length != 1<<30 || !bytes.Equal(got.Payload, b) {
		t.Fatalf("request: %+v %v", got, err)
	}
	for name, mut := range map[string]func(o *diskproto.TransferOrder){
		"no destination": func(o *diskproto.TransferOrder) { o.Dest = netip.AddrPort{} },
		"zero width":     func(o *diskproto.TransferOrder) { o.Width = 0 },
		"zero tile":      func(o *diskproto.TransferOrder) { o.TileH = 0 },
		"flags":          func(o *diskproto.TransferOrder) { o.Flags = 1 },
		"notify port 0":  func(o *diskproto.TransferOrder) { o.Notify = netip.AddrPortFrom(o.Notify.Addr(), 0) },
	} {
		bad := o
		mut(&bad)
		w := bad.Marshal()
		if _, err := diskproto.ParseTransferOrder(w[:]); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	res := diskproto.TransferResult{Frames: 3, Tiles: 7680, Resent: 2, Windows: 15, Elapsed: 12345}
	if got, err := diskproto.ParseTransferResult(res.Marshal()); err != nil || got != res {
		t.Errorf("result round trip: %+v %v", got, err)
	}
}

// FuzzTransferOrder: any 32 bytes either parse to an order that
// re-marshals to itself or are refused; never a panic.
func FuzzTransferOrder(f *testing.F) {
	f.Add(seedOrder())
	f.Add(make([]byte, diskproto.TransferOrderSize))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := diskproto.ParseTransferOrder(b)
		if err != nil {
			return
		}
		if again := o.Marshal(); !bytes.Equal(again[:], b) {
			t.Fatalf("order %+v re-marshals to %x, not %x", o, again, b)
		}
		if _, ok := diskproto.TransferDestination(b); !ok {
			t.Fatal("TransferDestination refuses a parsed order")
		}
	})
}

func TestRequestRoundTrip(t *testing.T) {
	for _, b := range seedRequests() {
		r, err := diskproto.ParseRequest(b)
		if err != nil {
			t.Fatalf("%x: %v", b[:8], err)
		}
		c := make([]byte, len(b))
		if _, err := r.Marshal(c); err != nil || !bytes.Equal(b, c) {
			t.Fatalf("re-marshal differs: %v", err)
		}
		diskproto.RewriteRequest(c, 77, 5, 6)
		r2, err := diskproto.ParseRequest(c)
		if err != nil || r2.Tag != 77 || r2.Low != 5 || r2.Epoch != 6 || r2.ReqID != r.ReqID {
			t.Fatalf("RewriteRequest: %+v %v", r2, err)
		}
		c[len(c)-1] ^= 0x10
		if _, err := diskproto.ParseRequest(c); err == nil {
			t.Fatal("a flipped bit went unnoticed")
		}
	}
	if _, err := diskproto.ParseRequest(seedRequests()[0][:10]); !errors.Is(err, diskproto.ErrShort) {
		t.Fatalf("short: %v", err)
	}
}

// TestPaceRate: a READ's pace rate (version 4) sits big-endian at bytes
// 128-135 under the header CRC (checked here with hash/crc32, not the
// package); any other operation carrying one is a bad request.
func TestPaceRate(t *testing.T) {
	r := diskproto.Request{Op: diskproto.OpRead, Tag: 1, Session: 2, ReqID: 3, Length: 4096, PaceRate: 0x0102030405060708}
	b := make([]byte, diskproto.RequestHeaderSize)
	if n, err := r.Marshal(b); err != nil || n != 136 {
		t.Fatalf("Marshal: %d %v", n, err)
	}
	if got := binary.BigEndian.Uint64(b[128:]); got != r.PaceRate {
		t.Fatalf("bytes 128-135 hold %#x", got)
	}
	c := crc32.Update(0, castagnoli, b[:60])
	if want := crc32.Update(c, castagnoli, b[64:136]); binary.BigEndian.Uint32(b[60:]) != want {
		t.Fatal("the header CRC does not cover the pace rate")
	}
	if got, err := diskproto.ParseRequest(b); err != nil || got.PaceRate != r.PaceRate {
		t.Fatalf("ParseRequest: %+v %v", got, err)
	}
	b[135] ^= 1
	if _, err := diskproto.ParseRequest(b); !errors.Is(err, diskproto.ErrHeaderChecksum) {
		t.Fatalf("altered pace rate: %v", err)
	}
	for _, op := range []diskproto.Op{diskproto.OpInfo, diskproto.OpWrite, diskproto.OpFlush, diskproto.OpTrim} {
		w := diskproto.Request{Op: op, Length: 4096, PaceRate: 1 << 30}
		if op == diskproto.OpWrite {
			w.Payload = []byte("x")
		}
		b := make([]byte, diskproto.RequestHeaderSize+len(w.Payload))
		w.Marshal(b)
		_, err := diskproto.ParseRequest(b)
		if code, ok := diskproto.ReplyCode(err); !errors.Is(err, diskproto.ErrFlags) || !ok || code != diskproto.CodeBadRequest {
			t.Errorf("%v with a pace rate: %v", op, err)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, b := range seedRequests() {
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Fuzz(func(t *testing.T, b []byte, reseal bool) {
		if reseal {
			// Fix the CRCs, so that the fuzzer explores the field checks
			// behind them and not only the CRC rejections.
			b = append([]byte(nil), b...)
			resealRequest(b)
		}
		r, err := diskproto.ParseRequest(b)
		if err != nil {
			if _, ok := diskproto.ReplyCode(err); !ok && (r.Op != 0 || r.Tag != 0 || r.Session != 0 || r.Payload != nil) {
				t.Fatalf("untrustworthy header returned fields: %+v", r)
			}
			return
		}
		// The header as parsed (a partial WRITE keeps its Length and CRC)
		// followed by the data must give the datagram back.
		c := make([]byte, len(b))
		r.MarshalHeader(c)
		copy(c[diskproto.RequestHeaderSize:], r.Payload)
		if !bytes.Equal(b, c) {
			t.Fatalf("accepted request does not re-marshal to itself: %+v", r)
		}
	})
}

func FuzzParseReply(f *testing.F) {
	for _, r := range []diskproto.Reply{
		{Op: diskproto.OpInfo, Tag: 1, Epoch: 3, Payload: diskproto.InfoPayload{Size: 1 << 30, BlockSize: 4096, Window: 32, MaxIO: 61440, WindowBytes: 1 << 20}.Marshal()},
		{Op: diskproto.OpRead, Tag: 2, ReqID: 7, Payload: []byte("hello")},
		{Op: diskproto.OpWrite, Status: diskproto.CodeRange},
	} {
		b := make([]byte, diskproto.ReplyHeaderSize+len(r.Payload))
		r.Marshal(b)
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Fuzz(func(t *testing.T, b []byte, reseal bool) {
		if reseal {
			b = append([]byte(nil), b...)
			resealReply(b)
		}
		r, err := diskproto.ParseReply(b)
		if err != nil {
			return
		}
		if r.Op == diskproto.OpInfo {
			diskproto.ParseInfo(r.Payload)
		}
		c := make([]byte, len(b))
		copy(c[diskproto.ReplyHeaderSize:], r.Payload)
		r.MarshalHeader(c)
		if !bytes.Equal(b, c) {
			t.Fatalf("accepted reply does not re-marshal to itself: %+v", r)
		}
	})
}

func ExampleRequest_Marshal() {
	req := diskproto.Request{Op: diskproto.OpWrite, Flags: diskproto.FlagFUA, Tag: 1, Session: 42,
		ReqID: 0, Offset: 4096, Payload: []byte("block data")}
	b := make([]byte, diskproto.RequestHeaderSize+len(req.Payload))
	n, _ := req.Marshal(b)
	got, err := diskproto.ParseRequest(b[:n])
	fmt.Println(n, got.Op, got.Length, string(got.Payload), err)
	// Output: 146 write 10 block data <nil>
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func resealRequest(b []byte) {
	if len(b) < diskproto.RequestHeaderSize {
		return
	}
	binary.BigEndian.PutUint32(b[56:], crc32.Checksum(b[diskproto.RequestHeaderSize:], castagnoli))
	c := crc32.Update(0, castagnoli, b[:60])
	binary.BigEndian.PutUint32(b[60:], crc32.Update(c, castagnoli, b[64:diskproto.RequestHeaderSize]))
}

func resealReply(b []byte) {
	if len(b) < diskproto.ReplyHeaderSize {
		return
	}
	binary.BigEndian.PutUint32(b[40:], crc32.Checksum(b[diskproto.ReplyHeaderSize:], castagnoli))
	binary.BigEndian.PutUint32(b[44:], crc32.Checksum(b[:44], castagnoli))
}
