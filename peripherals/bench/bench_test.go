package bench_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"image/png"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/peripherals/bench"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
	"github.com/netstation/netstation/stack/stacktest"
)

var (
	ipSend = netip.MustParseAddr("10.7.0.1")
	ipRecv = netip.MustParseAddr("10.7.0.2")
)

const benchPort = 5201

// userPair starts two user-level stacks on a mem pair and returns an
// unconnected sending socket on the first and a receiving socket on port
// 5201 of the second. The receiver's queue is deep enough that a test of
// a few thousand datagrams cannot overflow it.
func userPair(t testing.TB, o mem.Options) (snd, rcv bench.Conn) {
	t.Helper()
	p := stacktest.New(t, stacktest.Options{Mem: o,
		A: stack.Config{Addr: netip.PrefixFrom(ipSend, 24)},
		B: stack.Config{Addr: netip.PrefixFrom(ipRecv, 24), UDPQueueBytes: 64 << 20, UDPQueueLen: 1 << 16}})
	a, b := p.A, p.B
	cs, err := a.ListenUDP(netip.AddrPortFrom(ipSend, 0))
	if err != nil {
		t.Fatal(err)
	}
	cr, err := b.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), benchPort))
	if err != nil {
		t.Fatal(err)
	}
	return bench.User(cs), bench.User(cr)
}

// run runs a receiver on rcv and a sender on snd to dst.
func run(t testing.TB, snd, rcv bench.Conn, dst netip.AddrPort, so bench.SenderOptions, ro bench.ReceiverOptions) (*bench.Result, *bench.Result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		rres *bench.Result
		rerr error
		wg   sync.WaitGroup
	)
	wg.Go(func() { rres, rerr = bench.RunReceiver(ctx, rcv, ro) })
	sres, serr := bench.RunSender(ctx, snd, dst, so)
	wg.Wait()
	if serr != nil || rerr != nil {
		t.Fatalf("sender: %v, receiver: %v", serr, rerr)
	}
	return sres, rres
}

func TestUserCountsExactly(t *testing.T) {
	snd, rcv := userPair(t, mem.Options{})
	s, r := run(t, snd, rcv, netip.AddrPortFrom(ipRecv, benchPort),
		bench.SenderOptions{Stack: "user", Size: 1000, Count: 3000, Parallel: 2}, bench.ReceiverOptions{Stack: "user"})
	if s.Sum.Packets != 6000 || s.Sum.Bytes != 6000*1000 {
		t.Fatalf("sent %d datagrams, %d bytes; want 6000, 6000000", s.Sum.Packets, s.Sum.Bytes)
	}
	if r.Sum.Packets != s.Sum.Packets || r.Sum.Bytes != s.Sum.Bytes || r.Sum.Lost != 0 || r.Sum.OutOfOrder != 0 {
		t.Fatalf("received %+v, sent %+v", r.Sum, s.Sum)
	}
	if len(r.Streams) != 2 || r.Streams[0].Packets != 3000 || r.Streams[1].Packets != 3000 {
		t.Fatalf("streams %+v", r.Streams)
	}
	if !s.Reached || !s.FINAcked || r.Test != s.Test || r.Remote.Addr() != ipSend || r.Ignored != 0 {
		t.Fatalf("FINAcked %v, test %x/%x, remote %v, ignored %d", s.FINAcked, r.Test, s.Test, r.Remote, r.Ignored)
	}
}

func TestUserLargestDatagrams(t *testing.T) {
	snd, rcv := userPair(t, mem.Options{}) // MTU 1500: every datagram is IP-fragmented
	s, r := run(t, snd, rcv, netip.AddrPortFrom(ipRecv, benchPort),
		bench.SenderOptions{Size: bench.MaxSize, Count: 200, Batch: 8}, bench.ReceiverOptions{})
	if r.Sum.Packets != 200 || r.Sum.Bytes != s.Sum.Bytes || r.Size != bench.MaxSize || r.Sum.Lost != 0 {
		t.Fatalf("sent %+v, received %+v (size %d)", s.Sum, r.Sum, r.Size)
	}
}

// benchDatagram returns the bench header fields of a frame carrying one,
// decoded by hand (offsets of Ethernet+IPv4+UDP, then the header layout).
func benchDatagram(f *link.Frame) (kind byte, seq uint64, ok bool) {
	const off = 14 + 20 + 8
	b := f.Buf
	if len(b) < off+32 || binary.BigEndian.Uint16(b[12:]) != 0x0800 || b[23] != 17 ||
		binary.BigEndian.Uint32(b[off:]) != 0x6e736231 {
		return 0, 0, false
	}
	return b[off+4], binary.BigEndian.Uint64(b[off+16:]), true
}

func TestUserLossIsExact(t *testing.T) {
	const count = 2000
	var dropped, finDropped atomic.Uint64
	drop := func(f *link.Frame) bool {
		k, seq, ok := benchDatagram(f)
		switch {
		case !ok:
			return false
		case k == 1 && (seq%10 == 3 || seq >= count-5): // inner and tail loss
			dropped.Add(1)
			return true
		case k == 2 && finDropped.Add(1) == 1: // the first FIN: must be retransmitted
			return true
		}
		return false
	}
	snd, rcv := userPair(t, mem.Options{Drop: drop})
	s, r := run(t, snd, rcv, netip.AddrPortFrom(ipRecv, benchPort),
		bench.SenderOptions{Size: 200, Count: count}, bench.ReceiverOptions{})
	want := dropped.Load()
	if want == 0 || s.Sum.Packets != count {
		t.Fatalf("sent %d, dropped %d", s.Sum.Packets, want)
	}
	if r.Sum.Lost != want || r.Sum.Packets != count-want || r.Sum.Expected() != count {
		t.Fatalf("receiver lost %d of %d (received %d); %d were dropped", r.Sum.Lost, r.Sum.Expected(), r.Sum.Packets, want)
	}
	if !s.FINAcked || finDropped.Load() < 2 {
		t.Fatalf("FIN acked %v after %d FINs", s.FINAcked, finDropped.Load())
	}
	rep := bench.Merge(s, r)
	wantPct := 100 * float64(want) / count
	if d := rep.End.Sum.LostPercent - wantPct; d > 1e-9 || d < -1e-9 {
		t.Fatalf("lost_percent %v, want %v", rep.End.Sum.LostPercent, wantPct)
	}
}

func TestLiveIntervals(t *testing.T) {
	snd, rcv := userPair(t, mem.Options{})
	var mu sync.Mutex
	var sentIv, recvIv []bench.Interval
	s, r := run(t, snd, rcv, netip.AddrPortFrom(ipRecv, benchPort),
		bench.SenderOptions{Size: 500, Duration: 600 * time.Millisecond, Rate: 40e6, Interval: 100 * time.Millisecond,
			OnInterval: func(iv bench.Interval) { mu.Lock(); sentIv = append(sentIv, iv); mu.Unlock() }},
		bench.ReceiverOptions{Interval: 100 * time.Millisecond,
			OnInterval: func(iv bench.Interval) { recvIv = append(recvIv, iv) }})
	mu.Lock()
	defer mu.Unlock()
	if len(sentIv) < 4 || len(recvIv) < 4 {
		t.Fatalf("%d sender and %d receiver intervals, want >= 4 each", len(sentIv), len(recvIv))
	}
	for _, c := range []struct {
		name string
		ivs  []bench.Interval
		res  *bench.Result
	}{{"sender", sentIv, s}, {"receiver", recvIv, r}} {
		var pk, by uint64
		for i, iv := range c.res.Intervals {
			pk += iv.Sum.Packets
			by += iv.Sum.Bytes
			if i > 0 && iv.Sum.Start != c.res.Intervals[i-1].Sum.End {
				t.Errorf("%s interval %d starts at %v, previous ended at %v", c.name, i, iv.Sum.Start, c.res.Intervals[i-1].Sum.End)
			}
			// Live intervals are the final ones, but for a short tail
			// folded into the last one.
			if i < len(c.res.Intervals)-1 && iv.Sum != c.ivs[i].Sum {
				t.Errorf("%s interval %d: live %+v, final %+v", c.name, i, c.ivs[i].Sum, iv.Sum)
			}
		}
		if pk != c.res.Sum.Packets || by != c.res.Sum.Bytes || len(c.res.Intervals) != len(c.ivs) {
			t.Errorf("%s: %d intervals (%d live) add to %d datagrams %d bytes, totals %d %d",
				c.name, len(c.res.Intervals), len(c.ivs), pk, by, c.res.Sum.Packets, c.res.Sum.Bytes)
		}
	}
	// 40 Mbit/s of 500-byte datagrams for 0.6 s is 6000 datagrams; pacing
	// may fall behind on a loaded machine but must never run ahead.
	if s.Sum.Packets > 6000+64 || s.Sum.Packets < 1000 {
		t.Fatalf("paced sender sent %d datagrams in %v, want about 6000", s.Sum.Packets, s.Sum.End)
	}
}

func TestReportJSON(t *testing.T) {
	snd, rcv := userPair(t, mem.Options{})
	s, r := run(t, snd, rcv, netip.AddrPortFrom(ipRecv, benchPort),
		bench.SenderOptions{Stack: "user", Size: 300, Count: 500, Parallel: 2}, bench.ReceiverOptions{Stack: "user"})
	rep := bench.Merge(s, r)
	js, err := rep.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		t.Fatal(err)
	}
	// The field names of iperf3's UDP JSON (iperf_api.c).
	paths := []string{
		"start.connected.0.local_host", "start.connected.0.remote_port", "start.version", "start.system_info",
		"start.timestamp.time", "start.timestamp.timesecs", "start.connecting_to.host",
		"start.test_start.protocol", "start.test_start.num_streams", "start.test_start.blksize", "start.test_start.duration",
		"intervals.0.streams.0.socket", "intervals.0.streams.0.bits_per_second",
		"intervals.0.sum.start", "intervals.0.sum.end", "intervals.0.sum.seconds", "intervals.0.sum.bytes",
		"intervals.0.sum.bits_per_second", "intervals.0.sum.packets", "intervals.0.sum.lost_packets",
		"intervals.0.sum.lost_percent", "intervals.0.sum.jitter_ms",
		"end.streams.1.udp.jitter_ms", "end.streams.1.udp.out_of_order",
		"end.sum.bits_per_second", "end.sum.jitter_ms", "end.sum.lost_packets", "end.sum.packets", "end.sum.lost_percent",
		"end.sum_sent.bytes", "end.sum_sent.sender", "end.sum_received.bytes", "end.sum_received.bits_per_second",
		"netstation.stack", "netstation.packets_per_second_sent",
	}
	for _, p := range paths {
		if lookup(m, p) == nil {
			t.Errorf("JSON has no %s", p)
		}
	}
	if got := lookup(m, "start.test_start.protocol"); got != "UDP" {
		t.Errorf("protocol %v", got)
	}
	if got := lookup(m, "end.sum_received.packets"); got != float64(1000) {
		t.Errorf("sum_received.packets %v, want 1000", got)
	}
	var back bench.Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	js2, err := back.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(js, js2) {
		t.Fatalf("JSON does not round-trip:\n%s\n---\n%s", js, js2)
	}
	if p := bench.PointOf(rep); p.Stack != "user" || p.Size != 300 || p.BitsPerSecond != rep.End.SumReceived.BitsPerSecond || p.PacketsPerSecond <= 0 {
		t.Errorf("PointOf: %+v", p)
	}
	// One side alone: a sender's intervals carry no loss figures, as in
	// iperf3's client output; a receiver's do.
	alone := bench.Merge(s, nil)
	if len(alone.Intervals) == 0 || alone.Intervals[0].Sum.LossFigures != nil || !alone.Intervals[0].Sum.Sender {
		t.Errorf("sender-only intervals: %+v", alone.Intervals)
	}
	if ra := bench.Merge(nil, r); ra.End.Sum.LossFigures == nil || ra.End.Sum.Packets != 1000 {
		t.Errorf("receiver-only end.sum: %+v", ra.End.Sum)
	}
	for _, one := range []*bench.Report{alone, bench.Merge(nil, r), bench.Merge(nil, nil)} {
		if err := one.Text(io.Discard); err != nil {
			t.Error(err)
		}
		if _, err := one.JSON(); err != nil {
			t.Error(err)
		}
	}
	var text bytes.Buffer
	if err := rep.Text(&text); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	for _, want := range []string{"Lost/Total Datagrams", "sec", "sender\n", "receiver\n", "0/1000 (0%)", "[SUM]"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
}

// lookup walks a dotted path of keys and indexes through decoded JSON.
func lookup(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			i := 0
			for _, c := range k {
				i = i*10 + int(c-'0')
			}
			if i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func TestRTTSurvivesLostPackets(t *testing.T) {
	var pingDrops, pongDrops atomic.Uint64
	drop := func(f *link.Frame) bool {
		k, seq, ok := benchDatagram(f)
		switch {
		case ok && k == 4 && seq == 5 && pingDrops.Add(1) == 1: // a ping
			return true
		case ok && k == 5 && seq == 9 && pongDrops.Add(1) <= 2: // a pong, twice
			return true
		}
		return false
	}
	snd, rcv := userPair(t, mem.Options{Drop: drop})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	echoCtx, stopEcho := context.WithCancel(ctx)
	var echoed uint64
	var wg sync.WaitGroup
	wg.Go(func() { echoed, _ = bench.RunEcho(echoCtx, rcv) })
	res, err := bench.RunRTT(ctx, snd, netip.AddrPortFrom(ipRecv, benchPort),
		bench.RTTOptions{Stack: "user", Count: 20, Timeout: 50 * time.Millisecond})
	stopEcho()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	// Three drops force at least three retransmissions; a slow machine
	// (the race detector, a loaded CI host) may add spurious ones when an
	// answer takes longer than the 50 ms timeout. What must hold whatever
	// the speed: every ping answered, every retransmission counted in
	// Sent, and the echo side answering each of the 20 pings, seq 9 three
	// times (two pongs dropped), and nothing it was not sent (a spurious
	// retransmission may still be on its way when the test stops it).
	if len(res.Samples) != 20 || res.Lost != 0 || res.Retransmits < 3 || res.Sent != 20+res.Retransmits {
		t.Fatalf("answered %d, lost %d, retransmits %d, sent %d; want 20, 0, >= 3, 20+retransmits",
			len(res.Samples), res.Lost, res.Retransmits, res.Sent)
	}
	if echoed < 22 || echoed > res.Sent-1 { // one ping dropped on the way
		t.Errorf("echo answered %d, want 22..%d (sent %d, one dropped)", echoed, res.Sent-1, res.Sent)
	}
	p50, p99 := res.Percentile(50), res.Percentile(99.9)
	if p50 <= 0 || p99 < p50 || p99 != res.Samples[19] {
		t.Fatalf("p50 %v p99.9 %v samples %v", p50, p99, res.Samples)
	}
	rep := bench.Merge(nil, nil).WithRTT(res)
	if rep.Netstation.RTT == nil || rep.Netstation.RTT.P50Us <= 0 {
		t.Fatalf("report rtt %+v", rep.Netstation.RTT)
	}
}

func TestRTTGivesUpOnDeadPeer(t *testing.T) {
	snd, _ := userPair(t, mem.Options{Drop: func(*link.Frame) bool { return true }})
	res, err := bench.RunRTT(context.Background(), snd, netip.AddrPortFrom(ipRecv, benchPort),
		bench.RTTOptions{Count: 2, Timeout: 10 * time.Millisecond, Retries: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Lost != 2 || len(res.Samples) != 0 || res.Sent != 6 {
		t.Fatalf("lost %d, samples %d, sent %d", res.Lost, len(res.Samples), res.Sent)
	}
}

func kernelPair(t testing.TB) (snd, rcv bench.Conn, dst netip.AddrPort) {
	t.Helper()
	cr, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		cr.Close()
		t.Fatal(err)
	}
	cr.SetReadBuffer(4 << 20)
	t.Cleanup(func() { cr.Close(); cs.Close() })
	return bench.Kernel(cs), bench.Kernel(cr), cr.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestKernelLoopback(t *testing.T) {
	snd, rcv, dst := kernelPair(t)
	// Paced, so a loaded machine's receiver keeps up and the count is exact.
	s, r := run(t, snd, rcv, dst,
		bench.SenderOptions{Stack: "kernel", Size: 1000, Count: 1500, Parallel: 2, Rate: 100e6}, bench.ReceiverOptions{Stack: "kernel"})
	if s.Sum.Packets != 3000 || r.Sum.Packets != 3000 || r.Sum.Lost != 0 || r.Sum.Bytes != s.Sum.Bytes || !s.FINAcked {
		t.Fatalf("sent %+v, received %+v, FIN acked %v", s.Sum, r.Sum, s.FINAcked)
	}
	if r.Remote != s.Local || r.Local != dst {
		t.Fatalf("receiver saw %v -> %v, sender is %v -> %v", r.Remote, r.Local, s.Local, dst)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { bench.RunEcho(ctx, rcv) })
	var live []bench.RTTInterval
	rt, err := bench.RunRTT(context.Background(), snd, dst, bench.RTTOptions{Stack: "kernel", Count: 200,
		Interval: time.Millisecond, OnInterval: func(iv bench.RTTInterval) { live = append(live, iv) }})
	cancel()
	wg.Wait()
	if err != nil || len(rt.Samples) != 200 || rt.Lost != 0 {
		t.Fatalf("rtt: %v, %d samples, %d lost", err, len(rt.Samples), rt.Lost)
	}
	var answered uint64
	for _, iv := range live {
		answered += iv.Answered
		if iv.Answered > 0 && (iv.Min <= 0 || iv.P50 < iv.Min || iv.Max < iv.P99) {
			t.Errorf("live interval %+v", iv)
		}
	}
	if answered != 200 || len(live) < 2 {
		t.Errorf("%d live intervals account for %d answers, want 200", len(live), answered)
	}
	t.Logf("kernel loopback 64 B RTT p50 %v p99 %v (unpinned)", rt.Percentile(50), rt.Percentile(99))
}

func TestSenderStopsOnContext(t *testing.T) {
	snd, _ := userPair(t, mem.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	// No receiver: the probe and the FINs go unanswered, bounded by their retries.
	s, err := bench.RunSender(ctx, snd, netip.AddrPortFrom(ipRecv, benchPort),
		bench.SenderOptions{Duration: time.Minute, FINTimeout: 20 * time.Millisecond, FINRetries: 3})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second || s.FINAcked || s.Reached {
		t.Fatalf("took %v, reached %v, FIN acked %v", d, s.Reached, s.FINAcked)
	}
}

func TestKernelSeparateSockets(t *testing.T) {
	snd, rcv, dst := kernelPair(t)
	snd2, _, _ := kernelPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r *bench.Result
	var wg sync.WaitGroup
	wg.Go(func() { r, _ = bench.RunReceiver(ctx, rcv, bench.ReceiverOptions{}) })
	s, err := bench.RunSenderStreams(ctx, []bench.Conn{snd, snd2}, dst, bench.SenderOptions{Size: 500, Count: 1000, Rate: 50e6})
	wg.Wait()
	if err != nil || r == nil {
		t.Fatal(err)
	}
	if s.Parallel != 2 || !s.FINAcked || r.Sum.Packets != 2000 || r.Streams[1].Packets != 1000 || r.Sum.Lost != 0 {
		t.Fatalf("sent %+v (FIN acked %v), received %+v", s.Sum, s.FINAcked, r.Streams)
	}
}

func TestReceiverStopsOnContext(t *testing.T) {
	_, rcv := userPair(t, mem.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	r, err := bench.RunReceiver(ctx, rcv, bench.ReceiverOptions{})
	if err != nil || r.Sum.Packets != 0 {
		t.Fatalf("%v, %+v", err, r)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("receiver took %v to notice its context", d)
	}
}

func TestBadOptions(t *testing.T) {
	snd, rcv := userPair(t, mem.Options{})
	dst := netip.AddrPortFrom(ipRecv, benchPort)
	ctx := context.Background()
	for _, o := range []bench.SenderOptions{{Size: 10}, {Size: 70000}, {Parallel: 500}, {Batch: bench.MaxBatch + 1}, {Rate: -1}} {
		if _, err := bench.RunSender(ctx, snd, dst, o); err == nil {
			t.Errorf("RunSender(%+v) accepted", o)
		}
	}
	if _, err := bench.RunSender(ctx, snd, netip.AddrPort{}, bench.SenderOptions{Count: 1}); err == nil {
		t.Error("RunSender without destination accepted")
	}
	if _, err := bench.RunReceiver(ctx, rcv, bench.ReceiverOptions{Batch: bench.MaxBatch + 1}); err == nil {
		t.Error("RunReceiver with a batch above MaxBatch accepted")
	}
	if _, err := bench.RunRTT(ctx, snd, dst, bench.RTTOptions{Size: 8}); err == nil {
		t.Error("RunRTT with 8-byte pings accepted")
	}
	if err := bench.Plot(&bytes.Buffer{}, "x", nil); err == nil {
		t.Error("Plot without points accepted")
	}
}

func TestPlotPNG(t *testing.T) {
	var pts []bench.Point
	for _, size := range []int{64, 512, 1472, 8972} {
		pts = append(pts,
			bench.Point{Stack: "user", Size: size, BitsPerSecond: float64(size) * 8 * 1e5, PacketsPerSecond: 1e5},
			bench.Point{Stack: "kernel", Size: size, BitsPerSecond: float64(size) * 8 * 2e5, PacketsPerSecond: 2e5})
	}
	var buf bytes.Buffer
	if err := bench.Plot(&buf, "veth", pts); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() < 600 || b.Dy() < 200 {
		t.Fatalf("image %v", b)
	}
}

// BenchmarkSenderMem streams b.N datagrams between two user-level stacks
// on the mem pair and, for comparison by the same code, between two
// kernel sockets on 127.0.0.1.
func BenchmarkSenderMem(b *testing.B) {
	for _, size := range []int{64, 1472} {
		b.Run("user/"+strconv.Itoa(size), func(b *testing.B) {
			snd, rcv := userPair(b, mem.Options{})
			benchSender(b, snd, rcv, netip.AddrPortFrom(ipRecv, benchPort), size)
		})
		b.Run("kernel-loopback/"+strconv.Itoa(size), func(b *testing.B) {
			snd, rcv, dst := kernelPair(b)
			benchSender(b, snd, rcv, dst, size)
		})
	}
}

func benchSender(b *testing.B, snd, rcv bench.Conn, dst netip.AddrPort, size int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var r *bench.Result
	wg.Go(func() { r, _ = bench.RunReceiver(ctx, rcv, bench.ReceiverOptions{}) })
	b.SetBytes(int64(size))
	b.ResetTimer()
	s, err := bench.RunSender(ctx, snd, dst, bench.SenderOptions{Size: size, Count: uint64(b.N)})
	b.StopTimer()
	wg.Wait()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(s.Sum.PacketsPerSecond(), "sent-pps")
	b.ReportMetric(r.Sum.PacketsPerSecond(), "recv-pps")
	b.ReportMetric(r.Sum.LostPercent(), "lost-%")
}

// TestAllocationsDoNotGrowWithDatagrams checks that the sender's and
// receiver's steady-state paths do not allocate per datagram: twenty
// times the datagrams must not cost more allocations made by this
// package's code (the test link's buffer pool is not ours and is left out).
func TestAllocationsDoNotGrowWithDatagrams(t *testing.T) {
	if testing.Short() {
		t.Skip("profiles whole runs")
	}
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()
	mallocs := func(count uint64) int64 {
		snd, rcv := userPair(t, mem.Options{})
		before := benchAllocs()
		s, r := run(t, snd, rcv, netip.AddrPortFrom(ipRecv, benchPort),
			bench.SenderOptions{Size: 64, Count: count, Interval: time.Hour}, bench.ReceiverOptions{Interval: time.Hour})
		if r.Sum.Packets != s.Sum.Packets {
			t.Fatalf("received %d of %d", r.Sum.Packets, s.Sum.Packets)
		}
		return benchAllocs() - before
	}
	small, big := mallocs(1000), mallocs(20000)
	t.Logf("allocations by package bench per run: %d for 1000 datagrams, %d for 20000", small, big)
	if big > small+small/10 {
		t.Fatalf("allocations grow with datagrams: %d for 1000, %d for 20000", small, big)
	}
}

// benchAllocs counts the objects allocated so far whose allocating
// function (the innermost frame outside the runtime) is in package bench.
func benchAllocs() int64 {
	runtime.GC()
	runtime.GC() // the profile is published one cycle late
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, true)
	for {
		recs = make([]runtime.MemProfileRecord, n+50)
		var ok bool
		if n, ok = runtime.MemProfile(recs, true); ok {
			recs = recs[:n]
			break
		}
	}
	var total int64
	for _, r := range recs {
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			if !strings.HasPrefix(f.Function, "runtime.") && !strings.HasPrefix(f.Function, "internal/") {
				if strings.HasPrefix(f.Function, "github.com/netstation/netstation/peripherals/bench.") {
					total += r.AllocObjects
				}
				break
			}
			if !more {
				break
			}
		}
	}
	return total
}

// slowConn is a receiving socket whose application is slow: every read
// takes a nap after it, so an unpaced sender outruns it.
type slowConn struct {
	bench.Conn
	nap time.Duration
}

func (c slowConn) ReadBatch(msgs []bench.Message) (int, error) {
	n, err := c.Conn.ReadBatch(msgs)
	if n > 0 {
		time.Sleep(c.nap)
	}
	return n, err
}

// slowViews is slowConn reading through the zero-copy views, as a
// receiver on a user-level socket does.
type slowViews struct {
	slowConn
	u *stack.UDPConn
}

func (c slowViews) ReadViews(v []stack.View) (int, error) {
	n, err := c.u.ReadViews(v)
	if n > 0 {
		time.Sleep(c.nap)
	}
	return n, err
}

func (c slowViews) Release() { c.u.Release() }

// TestCreditKeepsSlowReceiver: a receiver reading 32 datagrams a
// millisecond behind a socket queue of 8,192. Unpaced, the sender
// overflows it (the test's setup can fail); with the default credit
// window the sender is held to what the receiver reads, the receiver
// loses at most 1 % and every datagram still gets through.
func TestCreditKeepsSlowReceiver(t *testing.T) {
	const count = 20000
	pair := func(t *testing.T) (snd bench.Conn, rcv *stack.UDPConn, rs *stack.Stack) {
		p := stacktest.New(t, stacktest.Options{
			A: stack.Config{Addr: netip.PrefixFrom(ipSend, 24)},
			B: stack.Config{Addr: netip.PrefixFrom(ipRecv, 24), UDPQueueBytes: 64 << 20, UDPQueueLen: 8192}})
		cs, err := p.A.ListenUDP(netip.AddrPortFrom(ipSend, 0))
		if err != nil {
			t.Fatal(err)
		}
		cr, err := p.B.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), benchPort))
		if err != nil {
			t.Fatal(err)
		}
		return bench.User(cs), cr, p.B
	}
	dst := netip.AddrPortFrom(ipRecv, benchPort)
	ro := bench.ReceiverOptions{Batch: 32}
	for _, tc := range []struct {
		name   string
		window int
		views  bool
	}{{"unpaced", 0, false}, {"credit", bench.DefaultWindow, false}, {"credit-views", bench.DefaultWindow, true}} {
		t.Run(tc.name, func(t *testing.T) {
			snd, cr, rs := pair(t)
			slow := slowConn{Conn: bench.User(cr), nap: time.Millisecond}
			var rcv bench.Conn = slow
			if tc.views {
				rcv = slowViews{slow, cr}
			}
			s, r := run(t, snd, rcv, dst, bench.SenderOptions{Size: 200, Count: count, Window: tc.window}, ro)
			drops := 0
			for _, u := range rs.Stats().UDP {
				if u.Local.Port() == benchPort {
					drops += int(u.RxDrops)
				}
			}
			t.Logf("sent %d, received %d, lost %.2f%% (socket drops %d), %.0f datagrams/s, window waits %d, probes %d",
				s.Sum.Packets, r.Sum.Packets, r.Sum.LostPercent(), drops, r.Sum.PacketsPerSecond(), s.CreditWaits, s.CreditProbes)
			if s.Sum.Packets != count {
				t.Fatalf("sent %d of %d", s.Sum.Packets, count)
			}
			if tc.window == 0 {
				if r.Sum.LostPercent() < 10 || drops == 0 {
					t.Fatalf("unpaced: the slow receiver lost only %.2f%% (%d socket drops): the test cannot tell credit from none", r.Sum.LostPercent(), drops)
				}
				return
			}
			if r.Sum.LostPercent() > 1 || r.Sum.Packets < count*99/100 {
				t.Fatalf("credit: receiver lost %.2f%% (%d socket drops), received %d of %d", r.Sum.LostPercent(), drops, r.Sum.Packets, count)
			}
			if s.CreditWaits == 0 || s.Window != bench.DefaultWindow {
				t.Fatalf("the window never held the sender back (waits %d, window %d)", s.CreditWaits, s.Window)
			}
		})
	}
}
