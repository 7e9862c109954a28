package bench

import (
	"strings"
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

// TestMergeSplitsLoss: the receiver's own drops (socket, and ring frames
// turned into datagrams) are told apart from loss on the way, a heavy
// overflow is flagged in the text, and a kernel socket's offload figures
// come through as datagrams per message.
func TestMergeSplitsLoss(t *testing.T) {
	snd := &Result{Role: RoleSender, Stack: "kernel", Parallel: 1, Size: 1472,
		Streams: []Totals{{Packets: 1000, Bytes: 1472000, End: time.Second}},
		Offload: &Offload{Mode: "kernel", Messages: 25, Segmented: 25, Datagrams: 1000}}
	snd.Sum = sumOf(snd.Streams, 0, time.Second)
	rcv := &Result{Role: RoleReceiver, Stack: "kernel", Parallel: 1, Size: 1472,
		Streams:  []Totals{{Packets: 800, Lost: 200, Bytes: 800 * 1472, End: time.Second}},
		Overflow: Overflow{Socket: 120, Ring: 2, RingDatagrams: 30},
		Offload:  &Offload{Mode: "kernel", Messages: 40, Segmented: 40, Datagrams: 800}}
	rcv.Sum = sumOf(rcv.Streams, 0, time.Second)
	r := Merge(snd, rcv)
	n := r.Netstation
	if n.ReceiverOverflow != 150 || n.LinkLost != 50 || n.ReceiverOverflowPercent != 15 || n.ReceiverRingDropFrames != 2 {
		t.Errorf("overflow %d (%.1f%%), on the way %d, ring frames %d", n.ReceiverOverflow, n.ReceiverOverflowPercent, n.LinkLost, n.ReceiverRingDropFrames)
	}
	if n.DatagramsPerSend != 40 || n.DatagramsPerReceive != 20 || n.KernelMode != "kernel" {
		t.Errorf("offload: %+v", n)
	}
	var b strings.Builder
	if err := r.Text(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "WARNING: the receiver dropped 15.0%") || !strings.Contains(b.String(), "40.0 datagrams per sent message") {
		t.Errorf("text:\n%s", b.String())
	}
	// Overflow above what was lost (a count that includes another test's
	// datagrams) never makes loss on the way negative.
	rcv.Overflow = Overflow{Socket: 500}
	if n := Merge(snd, rcv).Netstation; n.LinkLost != 0 || n.ReceiverOverflowPercent != 50 {
		t.Errorf("capped: %+v", n)
	}
}
