package bench

import (
	"testing"
	"time"
)

func TestStreamReorderAndJitter(t *testing.T) {
	var s recvStream
	// seq 0,1,3,2,5 with transit 100,100,150,110,100 us.
	arrivals := []struct {
		seq     uint64
		transit int64
	}{{0, 100e3}, {1, 100e3}, {3, 150e3}, {2, 110e3}, {5, 100e3}}
	var want float64
	prev := int64(-1)
	for i, a := range arrivals {
		sent := int64(i) * 1e6
		s.add(a.seq, 100, sent, sent+a.transit)
		if prev >= 0 {
			d := float64(a.transit - prev)
			if d < 0 {
				d = -d
			}
			want += (d - want) / 16
		}
		prev = a.transit
	}
	if s.Packets != 5 || s.OutOfOrder != 1 || s.Lost != 1 { // 4 missing when 5 came; 2 arrived late
		t.Fatalf("packets %d out-of-order %d lost %d", s.Packets, s.OutOfOrder, s.Lost)
	}
	if s.Jitter != time.Duration(want) || s.Jitter == 0 {
		t.Fatalf("jitter %v, want %v", s.Jitter, time.Duration(want))
	}
	s.finish(8) // 6 and 7 never came
	if s.Lost != 3 || s.Expected() != 8 {
		t.Fatalf("after FIN: lost %d expected %d", s.Lost, s.Expected())
	}
	s.finish(8) // a retransmitted FIN changes nothing
	if s.Lost != 3 {
		t.Fatalf("second FIN: lost %d", s.Lost)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	h := header{Kind: kindFIN, Attempt: 2, Stream: 3, Streams: 4, Test: 0xdeadbeef, Seq: 1 << 40, Sent: -5}
	b := make([]byte, HeaderLen)
	h.encode(b)
	var g header
	if err := parseHeader(b, &g); err != nil || g != h {
		t.Fatalf("%+v, %v; want %+v", g, err, h)
	}
}

func FuzzParseHeader(f *testing.F) {
	b := make([]byte, HeaderLen+8)
	(&header{Kind: kindData, Streams: 1, Seq: 7, Sent: 99}).encode(b)
	f.Add(b)
	f.Add(b[:HeaderLen-1])
	f.Add([]byte{})
	f.Add([]byte("nsb1\x09"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var h header
		if err := parseHeader(data, &h); err != nil {
			return
		}
		out := make([]byte, HeaderLen)
		h.encode(out)
		var g header
		if err := parseHeader(out, &g); err != nil || g != h {
			t.Fatalf("re-encoded header differs: %+v vs %+v (%v)", g, h, err)
		}
	})
}
