package linktest

import (
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
)

// drain reads l until it is closed; the returned channel closes then.
func drain(l link.Link) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		frames := make([]link.Frame, 64)
		for {
			if _, err := l.ReadBatch(frames); err != nil {
				return
			}
		}
	}()
	return done
}

// BenchTx measures how fast tx transmits batch (one b.N = one frame of size
// bytes) while rx, the peer end, drains it. It reports pps, Gbit/s, tx's
// retries and, after closing rx, rx's drops.
func BenchTx(b *testing.B, tx, rx link.Link, batch []link.Frame, size int, txRetries, rxDrops func() uint64) {
	done := drain(rx)
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for sent := 0; sent < b.N; {
		n, err := tx.WriteBatch(batch[:min(len(batch), b.N-sent)])
		if err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
	b.ReportMetric(float64(b.N)*float64(size)*8/el.Seconds()/1e9, "Gbit/s")
	b.ReportMetric(float64(txRetries()), "retries")
	time.Sleep(5 * time.Millisecond)
	rx.Close()
	<-done
	b.ReportMetric(float64(rxDrops()), "rxdrops")
}

// BenchRx measures how fast rx receives (one b.N = one frame read) while a
// goroutine transmits batch (frames of size bytes) on tx, the peer end, as
// fast as it can. It reports pps and rx's drops.
func BenchRx(b *testing.B, tx, rx link.Link, batch []link.Frame, size int, rxDrops func() uint64) {
	var stop atomic.Bool
	sdone := make(chan struct{})
	go func() {
		defer close(sdone)
		for !stop.Load() {
			if _, err := tx.WriteBatch(batch); err != nil {
				return
			}
		}
	}()
	frames := make([]link.Frame, 64)
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for got := 0; got < b.N; {
		n, err := rx.ReadBatch(frames)
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
	b.ReportMetric(float64(rxDrops()), "rxdrops")
}

// BenchPingPong measures the round trip of the EtherTest frame ping from
// la to lb, answered with pong by an echo goroutine on lb (one b.N = one
// round trip), and reports p50 and p99 in microseconds. It closes lb.
// Goroutines are not pinned.
func BenchPingPong(b *testing.B, la, lb link.Link, ping, pong []byte) {
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
				if IsTest(f.Buf) {
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
				got = got || IsTest(f.Buf)
			}
		}
		rtt = append(rtt, time.Since(start))
	}
	b.StopTimer()
	lb.Close()
	<-edone
	slices.Sort(rtt)
	q := func(p float64) float64 { return float64(rtt[int(float64(len(rtt)-1)*p)]) / 1e3 }
	b.ReportMetric(q(0.5), "p50-us")
	b.ReportMetric(q(0.99), "p99-us")
}
