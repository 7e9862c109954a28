package afpacket

import (
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
)

// drain reads l until it is closed, counting frames.
func drain(l *Link, count *atomic.Uint64) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		frames := make([]link.Frame, 64)
		for {
			n, err := l.ReadBatch(frames)
			if err != nil {
				return
			}
			count.Add(uint64(n))
		}
	}()
	return done
}

func benchFrames(w *world, size int) []link.Frame {
	batch := make([]link.Frame, 64)
	for i := range batch {
		if size > 1514 {
			batch[i] = udpFrame(w.macB, w.macA, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}, 1, 2, pattern(size-42, 0), true, 1472)
		} else {
			batch[i].Buf = testFrame(w.macB, w.macA, size, uint32(i))
		}
	}
	return batch
}

// BenchmarkTx measures transmit rate (one b.N = one frame) with each
// transmit path; a link in the peer namespace drains the frames.
func BenchmarkTx(b *testing.B) {
	for _, mode := range []TxMode{TxSendmmsg, TxRing} {
		for _, size := range []int{60, 1514, 65000} {
			b.Run(fmt.Sprintf("%v/%d", mode, size), func(b *testing.B) {
				w := newWorld(b, 1500)
				la := open(b, w.a, "vA", Options{Tx: mode})
				lb := open(b, w.b, "vB", Options{})
				var got atomic.Uint64
				done := drain(lb, &got)
				batch := benchFrames(w, size)
				b.SetBytes(int64(size))
				b.ResetTimer()
				start := time.Now()
				for sent := 0; sent < b.N; {
					n, err := la.WriteBatch(batch[:min(len(batch), b.N-sent)])
					if err != nil {
						b.Fatal(err)
					}
					sent += n
				}
				el := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
				b.ReportMetric(float64(b.N)*float64(size)*8/el.Seconds()/1e9, "Gbit/s")
				b.ReportMetric(float64(la.Stats().TxRetries), "retries")
				time.Sleep(5 * time.Millisecond)
				lb.Close()
				<-done
				b.ReportMetric(float64(lb.Stats().RingDrops), "rxdrops")
			})
		}
	}
}

// BenchmarkRx measures receive rate (one b.N = one frame read) while a
// goroutine transmits as fast as it can from the peer namespace.
func BenchmarkRx(b *testing.B) {
	for _, size := range []int{60, 1514} {
		for _, bell := range []bool{true, false} {
			name := fmt.Sprintf("%d/doorbell", size)
			if !bell {
				name = fmt.Sprintf("%d/nodoorbell", size)
			}
			b.Run(name, func(b *testing.B) { benchRx(b, size, Options{NoDoorbell: !bell}) })
		}
	}
}

func benchRx(b *testing.B, size int, o Options) {
	w := newWorld(b, 1500)
	la := open(b, w.a, "vA", Options{})
	lb := open(b, w.b, "vB", o)
	batch := benchFrames(w, size)
	var stop atomic.Bool
	sdone := make(chan struct{})
	go func() {
		defer close(sdone)
		for !stop.Load() {
			if _, err := la.WriteBatch(batch); err != nil {
				return
			}
		}
	}()
	frames := make([]link.Frame, 64)
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for got := 0; got < b.N; {
		n, err := lb.ReadBatch(frames)
		if err != nil {
			b.Fatal(err)
		}
		got += n
	}
	el := time.Since(start)
	b.StopTimer()
	stop.Store(true)
	<-sdone
	b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
	b.ReportMetric(float64(lb.Stats().RingDrops), "rxdrops")
}

// BenchmarkPingPong measures the round trip of a 60-byte frame between two
// links (one b.N = one round trip): an echo goroutine answers on the far
// link. Reported: p50 and p99 in microseconds. Goroutines are not pinned;
// with GOMAXPROCS=2 the two sides usually run on different CPUs.
func BenchmarkPingPong(b *testing.B) {
	for _, c := range []struct {
		name string
		o    Options
	}{
		{"doorbell", Options{}},
		{"doorbell+busypoll50us", Options{BusyPoll: 50 * time.Microsecond}},
		{"busypoll50us", Options{BusyPoll: 50 * time.Microsecond, NoDoorbell: true}},
		{"blocktimeout1ms", Options{NoDoorbell: true}},
	} {
		b.Run(c.name, func(b *testing.B) {
			w := newWorld(b, 1500)
			la := open(b, w.a, "vA", c.o)
			lb := open(b, w.b, "vB", c.o)
			rtt := pingPong(b, la, lb, testFrame(w.macB, w.macA, 60, 0), testFrame(w.macA, w.macB, 60, 0))
			reportLatency(b, rtt)
		})
	}
}

func pingPong(b *testing.B, la, lb link.Link, ping, pong []byte) []time.Duration {
	edone := make(chan struct{})
	go func() {
		defer close(edone)
		frames := make([]link.Frame, 8)
		reply := []link.Frame{{Buf: pong}}
		for {
			n, err := lb.ReadBatch(frames)
			if err != nil {
				return
			}
			for _, f := range frames[:n] {
				if isTest(received{buf: f.Buf}) {
					lb.WriteBatch(reply)
				}
			}
		}
	}()
	frames := make([]link.Frame, 8)
	req := []link.Frame{{Buf: ping}}
	rtt := make([]time.Duration, 0, b.N)
	runtime.GC()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := la.WriteBatch(req); err != nil {
			b.Fatal(err)
		}
		for got := false; !got; {
			n, err := la.ReadBatch(frames)
			if err != nil {
				b.Fatal(err)
			}
			for _, f := range frames[:n] {
				got = got || isTest(received{buf: f.Buf})
			}
		}
		rtt = append(rtt, time.Since(start))
	}
	b.StopTimer()
	lb.Close()
	<-edone
	return rtt
}

func reportLatency(b *testing.B, rtt []time.Duration) {
	slices.Sort(rtt)
	q := func(p float64) float64 { return float64(rtt[int(float64(len(rtt)-1)*p)]) / 1e3 }
	b.ReportMetric(q(0.5), "p50-us")
	b.ReportMetric(q(0.99), "p99-us")
}
