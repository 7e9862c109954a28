package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/stack"
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

// nullConn is a Conn that never reads and drops what it is given.
type nullConn struct{}

func (nullConn) ReadBatch([]Message) (int, error)    { return 0, errDeadline }
func (nullConn) WriteBatch(m []Message) (int, error) { return len(m), nil }
func (nullConn) SetReadDeadline(time.Time) error     { return nil }
func (nullConn) SetWriteDeadline(time.Time) error    { return nil }
func (nullConn) LocalAddr() net.Addr                 { return &net.UDPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 5301} }
func (nullConn) Close() error                        { return nil }

// testReceiver is a receiver whose datagrams a test hands it directly.
func testReceiver() *receiver {
	o := ReceiverOptions{Batch: MaxBatch}
	if err := o.setDefaults(); err != nil {
		panic(err)
	}
	return newReceiver(nullConn{}, o)
}

// runOf returns a run of n data datagrams of size bytes for test, stream
// 0, numbered from seq.
func runOf(test uint32, n, size int, seq uint64) stack.Run {
	p := make([]byte, n*size)
	for i := range n {
		h := header{Kind: kindData, Streams: 1, Credit: 1024, Test: test, Seq: seq + uint64(i), Sent: int64(i) * 1000}
		h.encode(p[i*size:])
	}
	return stack.Run{Payload: p, Seg: size, Addr: netip.MustParseAddrPort("10.0.0.1:9")}
}

// BenchmarkReceiveRun: the receiver's own work per datagram of a run
// (parse, count, jitter), what every stack's receiver pays beside its
// socket's.
func BenchmarkReceiveRun(b *testing.B) {
	for _, size := range []int{64, 1472} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			r := testReceiver()
			run := runOf(7, 128, size, 0)
			now := time.Now()
			r.handleRun(&run, now) // starts the test
			b.ResetTimer()
			for range b.N {
				r.streams[0].next = 0 // the same datagrams again, in order
				r.handleRun(&run, now)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*128), "ns/datagram")
		})
	}
}

// TestDataRunMatchesHandle: a run's datagrams counted in place (dataRun)
// give exactly what handling each one does: counts, loss, reordering,
// jitter, ignored datagrams, size, credit address; with other tests'
// data, unknown streams, a non-data datagram and a short last datagram
// in the runs.
func TestDataRunMatchesHandle(t *testing.T) {
	const test, size = 7, 100
	from := netip.MustParseAddrPort("10.0.0.1:9")
	var runs []stack.Run
	add := func(seg int, hs ...header) {
		p := make([]byte, 0, len(hs)*seg)
		for i, h := range hs {
			b := make([]byte, seg)
			if i == len(hs)-1 && seg > HeaderLen+8 {
				b = b[:seg-8] // a shorter last datagram
			}
			h.encode(b)
			p = append(p, b...)
		}
		runs = append(runs, stack.Run{Payload: p, Seg: seg, Addr: from})
	}
	d := func(stream uint16, seq uint64, sent int64) header {
		return header{Kind: kindData, Stream: stream, Streams: 2, Credit: 256, Test: test, Seq: seq, Sent: sent}
	}
	add(size, d(0, 0, 0), d(0, 1, 900), d(1, 0, 1000), d(0, 3, 2500))
	add(size, d(0, 2, 3000), d(1, 1, 3100), header{Kind: kindData, Streams: 2, Test: test + 1, Seq: 9}, d(0, 4, 4000))
	add(size, d(0, 5, 5000), d(5, 0, 0), d(0, 6, 6100))
	add(size, d(1, 2, 7000), header{Kind: kindPing, Test: test}, d(1, 3, 7300), d(1, 4, 7400))
	x := d(0, 7, 8000)
	x.Credit = 512
	add(size, d(0, 9, 9000), x, d(1, 6, 9100))

	fast, slow := testReceiver(), testReceiver()
	at := time.Unix(0, 1e9)
	for i := range runs {
		at = at.Add(time.Duration(700+i*37) * time.Nanosecond)
		p, seg := append([]byte(nil), runs[i].Payload...), runs[i].Seg // a ping is answered in place
		run := runs[i]
		fast.handleRun(&run, at)
		for len(p) > 0 {
			k := min(seg, len(p))
			m := Message{Buf: p[:k], N: k, Addr: from}
			slow.handle(&m, at)
			p = p[k:]
		}
	}
	if len(fast.streams) != 2 || fast.res.Ignored != slow.res.Ignored || fast.res.Size != slow.res.Size || fast.last != slow.last {
		t.Fatalf("fast: %d streams, ignored %d, size %d, last %v; per datagram: ignored %d, size %d, last %v",
			len(fast.streams), fast.res.Ignored, fast.res.Size, fast.last, slow.res.Ignored, slow.res.Size, slow.last)
	}
	for i := range fast.streams {
		if f, s := fast.streams[i], slow.streams[i]; f != s {
			t.Fatalf("stream %d: in place %+v, per datagram %+v", i, f, s)
		}
	}
	if fast.streams[0].creditEvery != 512 || fast.streams[0].Lost == 0 || fast.streams[0].OutOfOrder == 0 || fast.streams[0].Jitter == 0 {
		t.Fatalf("the runs did not exercise what they should: %+v", fast.streams[0])
	}
}

// refusingConn is a run writer whose runs the "kernel" refuses after the
// first, as a kernel socket's UDP_SEGMENT is for datagrams larger than
// the path's MTU: that run leaves datagram by datagram and MaxRun drops
// to 1, below which BeginRun refuses longer runs.
type refusingConn struct {
	nullConn
	maxRun, sent int
	buf          []byte
	count        int
}

func (c *refusingConn) MaxRun(int) int { return c.maxRun }
func (c *refusingConn) BeginRun(_ netip.AddrPort, seg, count int) ([]byte, error) {
	if count > c.maxRun {
		return nil, fmt.Errorf("a run of %d (at most %d)", count, c.maxRun)
	}
	c.count = count
	if len(c.buf) < seg*count {
		c.buf = make([]byte, seg*count)
	}
	return c.buf[:seg*count], nil
}
func (c *refusingConn) EndRun() (int, error) {
	c.maxRun = 1 // refused, sent one by one: single datagrams from now on
	c.sent += c.count
	return c.count, nil
}
func (c *refusingConn) WriteBatch(m []Message) (int, error) {
	c.sent += len(m)
	return len(m), nil
}

// TestSenderFollowsMaxRun: a socket whose largest run shrinks while the
// stream sends (the kernel baseline at 8972 B: its first run refused)
// gets the smaller runs from then on, not a write error per batch (make
// bench's kernel row at 8972 B received nothing).
func TestSenderFollowsMaxRun(t *testing.T) {
	o := SenderOptions{Size: 8972, Count: 1000}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort("10.0.0.3:5301")
	s := newSendStream(&Result{Test: 1}, 0, o, dst)
	c := &refusingConn{maxRun: 7}
	if err := s.run(context.Background(), c, time.Now(), time.Time{}, 0); err != nil {
		t.Fatal(err)
	}
	if s.writeErrors != 0 || c.sent != 1000 {
		t.Fatalf("%d write errors, %d of 1000 datagrams sent", s.writeErrors, c.sent)
	}
}

// runCounter is a run writer that records the length of every run.
type runCounter struct {
	nullConn
	maxRun int
	buf    []byte
	runs   []int
}

func (c *runCounter) MaxRun(int) int { return c.maxRun }
func (c *runCounter) BeginRun(_ netip.AddrPort, seg, count int) ([]byte, error) {
	if count > c.maxRun {
		return nil, fmt.Errorf("a run of %d (at most %d)", count, c.maxRun)
	}
	c.runs = append(c.runs, count)
	if len(c.buf) < seg*count {
		c.buf = make([]byte, seg*count)
	}
	return c.buf[:seg*count], nil
}
func (c *runCounter) EndRun() (int, error) { return c.runs[len(c.runs)-1], nil }

// TestSenderWritesWholeRuns: with batches of 128 and runs of at most 122
// (the user-level stack at 64 B), every run but the stream's last is a
// whole one, not 122 and then 6 per batch.
func TestSenderWritesWholeRuns(t *testing.T) {
	o := SenderOptions{Size: 64, Count: 10000, Batch: 128}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	s := newSendStream(&Result{Test: 1}, 0, o, netip.MustParseAddrPort("10.0.0.3:5301"))
	c := &runCounter{maxRun: 122}
	if err := s.run(context.Background(), c, time.Now(), time.Time{}, 0); err != nil {
		t.Fatal(err)
	}
	sum := 0
	for i, r := range c.runs {
		sum += r
		if r != 122 && i != len(c.runs)-1 {
			t.Fatalf("run %d of %d has %d datagrams, want 122: %v", i, len(c.runs), r, c.runs)
		}
	}
	if sum != 10000 {
		t.Fatalf("%d of 10000 datagrams sent", sum)
	}
}
