package stack

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

// connected returns a resolved sender on b and a listener on a.
func connected(t testing.TB, o mem.Options) (tx, rx *UDPConn) {
	a, b := pair(t, o)
	rx, err := a.ListenUDP(netip.AddrPortFrom(ipA, 8000))
	if err != nil {
		t.Fatal(err)
	}
	tx, err = b.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(ipA, 8000))
	if err != nil {
		t.Fatal(err)
	}
	// Warm up: ARP both ways, buffers, timers.
	buf := make([]byte, 2048)
	for range 3 {
		tx.Write([]byte("warm"))
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := rx.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatal(err)
		}
	}
	rx.SetReadDeadline(time.Time{})
	return tx, rx
}

// TestZeroAllocsPerPacket measures the whole path — encode, template,
// link, classify, demux, ring, read — and wants no allocation.
func TestZeroAllocsPerPacket(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	for _, caps := range []link.Caps{0, link.CapVNetHdr, link.CapVNetHdr | link.CapGSO} {
		for _, size := range []int{64, 1472} {
			tx, rx := connected(t, mem.Options{Caps: caps})
			msg := pattern(size, 0)
			buf := make([]byte, 2048)
			allocs := testing.AllocsPerRun(2000, func() {
				if _, err := tx.Write(msg); err != nil {
					t.Fatal(err)
				}
				if n, _, err := rx.ReadFromUDPAddrPort(buf); err != nil || n != size {
					t.Fatal(n, err)
				}
			})
			if allocs != 0 {
				t.Errorf("caps %v, %d B: %.2f allocations per packet", caps, size, allocs)
			}
			msgs := make([]Message, 32)
			in := make([]Message, 32)
			for i := range msgs {
				msgs[i].Buf = msg
				in[i].Buf = make([]byte, 2048)
			}
			allocs = testing.AllocsPerRun(200, func() {
				if _, err := tx.WriteBatch(msgs); err != nil {
					t.Fatal(err)
				}
				for got := 0; got < len(msgs); {
					n, err := rx.ReadBatch(in[got:])
					if err != nil {
						t.Fatal(err)
					}
					got += n
				}
			})
			if allocs != 0 {
				t.Errorf("caps %v, %d B batch of 32: %.2f allocations per batch", caps, size, allocs)
			}
			views := make([]View, 32)
			allocs = testing.AllocsPerRun(200, func() {
				if _, err := tx.WriteBatch(msgs); err != nil {
					t.Fatal(err)
				}
				for got := 0; got < len(msgs); {
					n, err := rx.ReadViews(views)
					if err != nil {
						t.Fatal(err)
					}
					got += n
					rx.Release()
				}
			})
			if allocs != 0 {
				t.Errorf("caps %v, %d B batch of 32 read as views: %.2f allocations per batch", caps, size, allocs)
			}
			runs := make([]Run, 8)
			allocs = testing.AllocsPerRun(200, func() {
				if _, err := tx.WriteBatch(msgs); err != nil {
					t.Fatal(err)
				}
				for got := 0; got < len(msgs); {
					_, d, err := rx.ReadRuns(runs)
					if err != nil {
						t.Fatal(err)
					}
					got += d
					rx.Release()
				}
			})
			if allocs != 0 {
				t.Errorf("caps %v, %d B batch of 32 read as runs: %.2f allocations per batch", caps, size, allocs)
			}
			k := min(tx.MaxRun(size), 32)
			allocs = testing.AllocsPerRun(200, func() {
				area, err := tx.BeginRun(netip.AddrPort{}, size, k)
				if err != nil {
					t.Fatal(err)
				}
				copy(area, msg)
				if _, err := tx.EndRun(); err != nil {
					t.Fatal(err)
				}
				for got := 0; got < k; {
					_, d, err := rx.ReadRuns(runs)
					if err != nil {
						t.Fatal(err)
					}
					got += d
					rx.Release()
				}
			})
			if allocs != 0 {
				t.Errorf("caps %v, %d B run of %d written in place: %.2f allocations per run", caps, size, k, allocs)
			}
		}
	}
}

// TestZeroAllocsUnconnected covers WriteToUDPAddrPort on a listener.
func TestZeroAllocsUnconnected(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	tx, rx := connected(t, mem.Options{})
	back, _ := tx.s.ListenUDP(netip.AddrPortFrom(ipB, 8001))
	msg := pattern(100, 0)
	buf := make([]byte, 2048)
	dst := netip.AddrPortFrom(ipB, 8001)
	allocs := testing.AllocsPerRun(2000, func() {
		if _, err := rx.WriteToUDPAddrPort(msg, dst); err != nil {
			t.Fatal(err)
		}
		if _, _, err := back.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%.2f allocations per packet", allocs)
	}
}

// BenchmarkUDP measures one datagram through both stacks on the mem link:
// the sender's WriteBatch, the receive loop and the reader's ReadBatch
// overlap, as they do on a real link.
func BenchmarkUDP(b *testing.B) {
	for _, caps := range []link.Caps{0, link.CapVNetHdr} {
		for _, size := range []int{64, 1472} {
			for _, batch := range []int{1, 32} {
				b.Run(fmt.Sprintf("caps=%d/size=%d/batch=%d", caps, size, batch), func(b *testing.B) {
					benchUDP(b, mem.Options{Caps: caps, Depth: 4096}, size, batch)
				})
			}
		}
	}
	b.Run("gso/size=1472/batch=32", func(b *testing.B) {
		benchUDP(b, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Depth: 4096}, 1472, 32)
	})
}

func benchUDP(b *testing.B, o mem.Options, size, batch int) {
	tx, rx := connected(b, o)
	msgs := make([]Message, batch)
	for i := range msgs {
		msgs[i].Buf = pattern(size, 0)
	}
	total := b.N
	var consumed atomic.Int64
	go func() {
		in := make([]Message, 64)
		for i := range in {
			in[i].Buf = make([]byte, 2048)
		}
		for {
			n, err := rx.ReadBatch(in)
			if err != nil {
				return // closed by the test's cleanup
			}
			consumed.Add(int64(n))
		}
	}()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < total; {
		m := msgs[:min(batch, total-sent)]
		if _, err := tx.WriteBatch(m); err != nil {
			b.Fatal(err)
		}
		sent += len(m)
		// The mem link does not push back on the receiver's ring (a real
		// link would lose frames the same way): keep at most half the
		// ring in flight so the benchmark measures the path, not drops.
		for int64(sent)-consumed.Load() > DefaultUDPQueueLen/2 {
			runtime.Gosched()
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for consumed.Load() < int64(total) && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	b.StopTimer()
	if got := consumed.Load(); got < int64(total) {
		b.Fatalf("received %d of %d (drops %v)", got, total, rx.s.Stats().Drops)
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "pps")
}

// discardLink swallows what it is given and never delivers anything.
type discardLink struct {
	caps link.Caps
	done chan struct{}
}

func (l *discardLink) ReadBatch([]link.Frame) (int, error) { <-l.done; return 0, link.ErrClosed }
func (l *discardLink) WriteBatch(f []link.Frame) (int, error) {
	return len(f), nil
}
func (l *discardLink) MTU() int                       { return 1500 }
func (l *discardLink) MaxFrame() int                  { return 65550 }
func (l *discardLink) HardwareAddr() net.HardwareAddr { return macA }
func (l *discardLink) Caps() link.Caps                { return l.caps }
func (l *discardLink) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}

// BenchmarkSendPath is the send path alone: build, template, checksum (or
// offload), hand to a link that discards; with GSO, batches of 32 leave as
// super-frames.
func BenchmarkSendPath(b *testing.B) {
	for _, caps := range []link.Caps{0, link.CapVNetHdr, link.CapVNetHdr | link.CapGSO} {
		for _, size := range []int{64, 1472} {
			b.Run(fmt.Sprintf("caps=%d/size=%d", caps, size), func(b *testing.B) {
				s, err := New(&discardLink{caps: caps, done: make(chan struct{})}, Config{Addr: netip.PrefixFrom(ipA, 24), NoGratuitousARP: true})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				s.arp.Learn(ipB.As4(), [6]byte(macB), time.Now())
				c, _ := s.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(ipB, 9))
				msgs := make([]Message, 32)
				for i := range msgs {
					msgs[i].Buf = pattern(size, 0)
				}
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i += len(msgs) {
					c.WriteBatch(msgs[:min(len(msgs), b.N-i)])
				}
			})
		}
	}
}

// BenchmarkReceivePathGSO is the receive path for UDP GSO super-frames
// (as a peer's batches arrive): one classification per frame, then per
// datagram the demux's share, the ring and the reader's copy; an op is
// one datagram.
func BenchmarkReceivePathGSO(b *testing.B) {
	for _, size := range []int{64, 1472} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			s, _ := rawPeer(b, Config{}, mem.Options{Caps: link.CapVNetHdr | link.CapGSO})
			c, _ := s.ListenUDP(netip.AddrPortFrom(netip.Addr{}, 7000))
			segs := min(64, header.UDPMaximumPayload/size)
			f := link.Frame{
				Buf:  udpFrame(1, 7000, pattern(size*segs, 0)),
				VNet: link.VNetHdr{Flags: link.VNetDataValid, GSOType: link.GSOUDPL4, GSOSize: uint16(size)},
			}
			var p engine.Packet
			msgs := make([]Message, segs)
			for i := range msgs {
				msgs[i].Buf = make([]byte, 2048)
			}
			batch := []link.Frame{f}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += segs {
				s.inputBatch(batch, &p) // stands in for the idle receive goroutine
				if n := c.q.pop(msgs); n != segs {
					b.Fatalf("%d datagrams of %d (drops %v)", n, segs, s.Stats().Drops)
				}
			}
		})
	}
}

// BenchmarkReceivePath is the receive path alone: classify, verify,
// demux, copy into the ring, and the reader's copy out.
func BenchmarkReceivePath(b *testing.B) {
	for _, size := range []int{64, 1472} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			s, _ := rawPeer(b, Config{}, mem.Options{})
			c, _ := s.ListenUDP(netip.AddrPortFrom(netip.Addr{}, 7000))
			f := link.Frame{Buf: udpFrame(1, 7000, pattern(size, 0))}
			var p engine.Packet
			msgs := make([]Message, 32)
			for i := range msgs {
				msgs[i].Buf = make([]byte, 2048)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			batch := make([]link.Frame, 32)
			for i := range batch {
				batch[i] = f
			}
			for i := 0; i < b.N; i += len(batch) {
				// Stands in for the idle receive goroutine.
				s.inputBatch(batch[:min(len(batch), b.N-i)], &p)
				c.q.pop(msgs)
			}
			if s.Stats().TotalDrops() != 0 {
				b.Fatal(s.Stats().Drops)
			}
		})
	}
}
