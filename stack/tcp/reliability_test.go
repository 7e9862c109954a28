package tcp_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/impair"
	"github.com/netstation/netstation/stack/link/mem"
	"github.com/netstation/netstation/stack/tcp"
)

// TestLossRecovery moves data both ways over a link that loses 2 % of
// the frames in each direction and checks every byte arrives in order.
func TestLossRecovery(t *testing.T) {
	for _, tc := range []struct {
		caps link.Caps
		cfg  tcp.Config
	}{
		{0, tcp.Config{}},
		{link.CapVNetHdr | link.CapGSO, tcp.Config{}},
		{0, tcp.Config{NoSACK: true}},                     // NewReno
		{0, tcp.Config{NoSACK: true, NoTimestamps: true}}, // NewReno, Karn's RTT samples
	} {
		caps := tc.caps
		var ia, ib *impair.Link
		w := newWorld(t, worldOpts{
			tcp:   tc.cfg,
			mem:   mem.Options{Caps: caps},
			wrapA: func(l link.Link) link.Link { ia = impair.Wrap(l); return ia },
			wrapB: func(l link.Link) link.Link { ib = impair.Wrap(l); return ib },
		})
		c, s := w.connect(t, 80)
		ia.Set(impair.Params{LossPPM: 20000, Seed: 1})
		ib.Set(impair.Params{LossPPM: 20000, Seed: 2})
		size := 2 << 20
		if caps&link.CapGSO != 0 {
			size = 16 << 20 // super-frames: as many frames to lose
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); transfer(t, s, c, pattern(size, 9), false) }()
		transfer(t, c, s, pattern(size, 8), true)
		wg.Wait()
		dropped := ia.Counters().TxDropped + ib.Counters().TxDropped
		sa, sb := w.a.TCP().Stats(), w.b.TCP().Stats()
		t.Logf("caps %v %+v: link dropped %d frames; retransmitted %d+%d segments, fast retransmits %d+%d, timeouts %d+%d",
			caps, tc.cfg, dropped, sa.RetransSegs.Load(), sb.RetransSegs.Load(), sa.FastRetransmits.Load(), sb.FastRetransmits.Load(),
			sa.Timeouts.Load(), sb.Timeouts.Load())
		if dropped == 0 || sa.RetransSegs.Load()+sb.RetransSegs.Load() == 0 {
			t.Fatal("no loss, or no retransmission: the test proved nothing")
		}
		if dropped >= 10 && sa.FastRetransmits.Load()+sb.FastRetransmits.Load() == 0 {
			t.Error("every loss waited for a timeout: fast retransmit never fired")
		}
	}
}

// TestZeroWindow: a reader that stops makes the window close; the sender
// probes while it is zero, and all data arrives once the reader resumes.
func TestZeroWindow(t *testing.T) {
	w := newWorld(t, worldOpts{tcp: tcp.Config{MaxBuffer: 64 << 10, InitialBuffer: 64 << 10, MinRTO: 20 * time.Millisecond}})
	c, s := w.connect(t, 80)
	data := pattern(1<<20, 5)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		werr <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for w.a.TCP().Stats().ZeroWindowProbes.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no zero-window probes while the reader sleeps")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-werr:
		t.Fatalf("write of 1 MiB finished with a 64 KiB window and no reader: %v", err)
	default:
	}
	got := make([]byte, 0, len(data))
	buf := make([]byte, 4096)
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(got) < len(data) {
		n, err := s.Read(buf)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != string(data) {
		t.Fatal("data differs")
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
}

// TestDeadlines: Read and Write give up with os.ErrDeadlineExceeded (a
// net.Error whose Timeout is true) and work again once it is cleared.
func TestDeadlines(t *testing.T) {
	w := newWorld(t, worldOpts{tcp: tcp.Config{MaxBuffer: 64 << 10, InitialBuffer: 64 << 10}})
	c, s := w.connect(t, 80)
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	start := time.Now()
	_, err := c.Read(make([]byte, 10))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past deadline: %v", err)
	}
	if d := time.Since(start); d < 25*time.Millisecond {
		t.Fatalf("read gave up after %v", d)
	}
	// A deadline set while a reader blocks wakes it.
	go func() { time.Sleep(20 * time.Millisecond); c.SetReadDeadline(time.Now()) }()
	c.SetReadDeadline(time.Time{})
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blocked read, deadline set from elsewhere: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	// Nobody reads on s: the buffers fill and the write times out.
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := c.Write(make([]byte, 4<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n >= 4<<20 {
		t.Fatalf("write into a full pipe: %d, %v", n, err)
	}
	c.SetWriteDeadline(time.Time{})
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := s.Read(buf); err != nil {
				return
			}
		}
	}()
	if _, err := c.Write([]byte("more")); err != nil {
		t.Fatal(err)
	}
}

// TestDialFailures: a refused port, a peer that never answers, and a
// listener whose backlog is full (its SYNs are counted drops).
func TestDialFailures(t *testing.T) {
	var ib *impair.Link
	w := newWorld(t, worldOpts{
		tcp:   tcp.Config{Backlog: 3},
		wrapB: func(l link.Link) link.Link { ib = impair.Wrap(l); return ib },
	})
	_, err := w.a.DialTCP(ctxT(t, 3*time.Second), netip.AddrPort{}, netip.AddrPortFrom(ipB, 9))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial to a closed port: %v", err)
	}
	l, err := w.b.ListenTCP(netip.AddrPortFrom(ipB, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var conns []*tcp.Conn
	for range 3 {
		c, err := w.a.DialTCP(ctxT(t, 3*time.Second), netip.AddrPort{}, netip.AddrPortFrom(ipB, 80))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	before := w.b.Stats().Drops[engine.DropTCPListenOverflow]
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := w.a.DialTCP(ctx, netip.AddrPort{}, netip.AddrPortFrom(ipB, 80)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial beyond the backlog: %v", err)
	}
	// B drops the SYN on its receive goroutine, which under load need not
	// have got to it when the dial gives up.
	for deadline := time.Now().Add(10 * time.Second); w.b.Stats().Drops[engine.DropTCPListenOverflow] <= before; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("SYN beyond the backlog not counted")
		}
	}
	for _, c := range conns {
		c.Close()
	}
	ib.Set(impair.Params{Down: true})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := w.a.DialTCP(ctx2, netip.AddrPort{}, netip.AddrPortFrom(ipB, 80)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial into a cut cable: %v", err)
	}
}

// TestKeepAlive: probes keep an idle connection alive while the peer
// answers and end it with ETIMEDOUT when the peer is gone.
func TestKeepAlive(t *testing.T) {
	var ib *impair.Link
	w := newWorld(t, worldOpts{
		tcp:   tcp.Config{KeepAliveCount: 6},
		wrapB: func(l link.Link) link.Link { ib = impair.Wrap(l); return ib },
	})
	c, _ := w.connect(t, 80)
	c.SetKeepAlivePeriod(50 * time.Millisecond)
	c.SetKeepAlive(true)
	time.Sleep(300 * time.Millisecond)
	if c.State() != "ESTABLISHED" {
		t.Fatalf("idle connection with a live peer: %s", c.State())
	}
	ib.Set(impair.Params{Down: true})
	// The abort is the 7th firing of the keepalive timer since the last
	// answer, about 350 ms on a quiet machine; each firing is as late as
	// the scheduler makes it, and under load with -race the seven took
	// over 3 s (the read deadline this had, 10 of 120 runs).
	down := time.Now()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("read with a dead peer: %v", err)
	}
	t.Logf("ended %v after the peer went", time.Since(down).Round(time.Millisecond))
}

// TestManyConnections opens, uses and closes 10,000 connections and
// checks nothing is left: no connection, no goroutine, bounded heap.
func TestManyConnections(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	w := newWorld(t, worldOpts{tcp: tcp.Config{TimeWait: 50 * time.Millisecond}})
	l, err := w.b.ListenTCP(netip.AddrPortFrom(ipB, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	g0 := runtime.NumGoroutine()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 16)
				n, _ := c.Read(buf)
				c.Write(buf[:n])
				c.Close()
			}()
		}
	}()
	var failed atomic.Int32
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 16)
			for range work {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c, err := w.a.DialTCP(ctx, netip.AddrPort{}, netip.AddrPortFrom(ipB, 80))
				cancel()
				if err != nil {
					failed.Add(1)
					t.Error(err)
					continue
				}
				c.Write([]byte("ping"))
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if n, err := c.Read(buf); err != nil || string(buf[:n]) != "ping" {
					failed.Add(1)
				}
				c.Close()
			}
		}()
	}
	for i := range n {
		work <- i
		if failed.Load() > 10 {
			break
		}
	}
	close(work)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d connections failed", failed.Load(), n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for w.a.TCP().NumConns()+w.b.TCP().NumConns() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("connections left: %d and %d", w.a.TCP().NumConns(), w.b.TCP().NumConns())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The accept loop is still running: it is one goroutine above g0.
	for time.Now().Before(deadline) && runtime.NumGoroutine() > g0+1 {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > g0+1 {
		t.Errorf("goroutines: %d before, %d after", g0, g)
	}
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	grown := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
	t.Logf("%d connections: heap %d -> %d bytes; %d mallocs", n, m0.HeapAlloc, m1.HeapAlloc, m1.Mallocs-m0.Mallocs)
	if grown > 16<<20 {
		t.Errorf("heap grew by %d bytes after all connections closed", grown)
	}
}

// TestDialNoRoute: an address off the subnet with no gateway fails at
// once, and a listener's Accept honours its deadline.
func TestDialNoRoute(t *testing.T) {
	w := newWorld(t, worldOpts{})
	start := time.Now()
	_, err := w.a.DialTCP(ctxT(t, 5*time.Second), netip.AddrPort{}, netip.MustParseAddrPort("192.0.2.1:80"))
	var oe *net.OpError
	if err == nil || !errors.As(err, &oe) || time.Since(start) > time.Second {
		t.Fatalf("dial off-subnet: %v after %v", err, time.Since(start))
	}
	l, err := w.a.ListenTCP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.(*tcp.Listener).SetDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := l.Accept(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("accept past its deadline: %v", err)
	}
	go func() { time.Sleep(10 * time.Millisecond); l.Close() }()
	l.(*tcp.Listener).SetDeadline(time.Time{})
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept on a closed listener: %v", err)
	}
}

// TestStackCloseResetsPeers: closing a stack resets its connections: a
// RST leaves for the peer (seen on the wire: the mem pair closes both
// ends at once, so the peer may not read it), the local reader sees
// ECONNABORTED.
func TestStackCloseResetsPeers(t *testing.T) {
	var rsts atomic.Int32
	hook := func(f *link.Frame) bool {
		b := f.Buf
		if len(b) >= 54 && b[23] == 6 && [4]byte(b[26:30]) == ipA.As4() && b[47]&0x04 != 0 {
			rsts.Add(1)
		}
		return false
	}
	w := newWorld(t, worldOpts{mem: mem.Options{Drop: hook}})
	c, _ := w.connect(t, 80)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		errc <- err
	}()
	w.a.Close()
	if err := <-errc; !errors.Is(err, syscall.ECONNABORTED) {
		t.Fatalf("local reader: %v", err)
	}
	if rsts.Load() != 1 {
		t.Fatalf("%d RSTs from the closed stack, want 1", rsts.Load())
	}
}

// TestConcurrentConnections: 50 connections move data both ways at once
// over a lossy GSO link; every byte arrives on the right connection.
func TestConcurrentConnections(t *testing.T) {
	var ia *impair.Link
	w := newWorld(t, worldOpts{
		mem:   mem.Options{Caps: link.CapVNetHdr | link.CapGSO},
		wrapA: func(l link.Link) link.Link { ia = impair.Wrap(l); return ia },
	})
	ia.Set(impair.Params{LossPPM: 20000, Seed: 5})
	l, err := w.b.ListenTCP(netip.AddrPortFrom(ipB, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conns, size := 50, 256<<10
	if raceEnabled {
		// The race detector makes each segment several times dearer:
		// fewer, shorter connections still interleave every path it
		// checks, within the 30 s deadline on a busy 2-core host.
		conns, size = 20, 64<<10
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { // echo everything back
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						c.(*tcp.Conn).CloseWrite()
						return
					}
				}
			}()
		}
	}()
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := w.a.DialTCP(ctxT(t, 10*time.Second), netip.AddrPort{}, netip.AddrPortFrom(ipB, 80))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			data := pattern(size, byte(i))
			go func() { c.Write(data); c.CloseWrite() }()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != string(data) {
				t.Errorf("connection %d: %d of %d bytes back, %v", i, len(got), size, err)
			}
		}()
	}
	wg.Wait()
	t.Logf("link dropped %+v", ia.Counters())
}

// TestCorruption: frames with a flipped byte fail the TCP checksum, are
// dropped and counted, and their data is retransmitted.
func TestCorruption(t *testing.T) {
	var ia *impair.Link
	w := newWorld(t, worldOpts{wrapA: func(l link.Link) link.Link { ia = impair.Wrap(l); return ia }})
	c, s := w.connect(t, 80)
	ia.Set(impair.Params{CorruptPPM: 10000, Seed: 9})
	transfer(t, c, s, pattern(2<<20, 6), false)
	transfer(t, s, c, pattern(2<<20, 7), false)
	bad := w.a.Stats().Drops[engine.DropTCPBadChecksum] + w.b.Stats().Drops[engine.DropTCPBadChecksum]
	t.Logf("corrupted %d frames; %d dropped for a bad TCP checksum", ia.Counters().Corrupted, bad)
	if ia.Counters().Corrupted == 0 || bad == 0 {
		t.Fatal("nothing corrupted, or nothing caught")
	}
}
