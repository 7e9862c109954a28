package afxdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netstation/netstation/internal/nstest"
	"github.com/netstation/netstation/stack/checksum"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/afpacket"
)

const etherTest = 0x88b5

type world struct {
	a, b       *nstest.NS
	va         int
	macA, macB net.HardwareAddr
}

func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{a: nstest.New(t, "a"), b: nstest.New(t, "b")}
	for _, ns := range []*nstest.NS{w.a, w.b} {
		if err := ns.Do(func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0)
		}); err != nil {
			t.Fatal(err)
		}
	}
	la, lb := nstest.Veth(t, w.a, "vA", w.b, "vB", 1500)
	w.va = la.Attrs().Index
	w.macA, w.macB = la.Attrs().HardwareAddr, lb.Attrs().HardwareAddr
	return w
}

func openXDP(t testing.TB, ns *nstest.NS, ifname string, o Options) *Link {
	t.Helper()
	var l *Link
	if err := ns.Do(func() (err error) { l, err = Open(ifname, o); return err }); err != nil {
		t.Fatalf("Open(%s, %v): %v", ifname, o.Rx, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func openPacket(t testing.TB, ns *nstest.NS, ifname string) *afpacket.Link {
	t.Helper()
	var l *afpacket.Link
	if err := ns.Do(func() (err error) { l, err = afpacket.Open(ifname, afpacket.Options{}); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func testFrame(dst, src net.HardwareAddr, size int, seq uint32) []byte {
	b := make([]byte, size)
	copy(b[0:], dst)
	copy(b[6:], src)
	binary.BigEndian.PutUint16(b[12:], etherTest)
	binary.BigEndian.PutUint32(b[14:], seq)
	for i := 18; i < size; i++ {
		b[i] = byte(uint32(i)*7 + seq)
	}
	return b
}

func isTest(b []byte) bool { return len(b) >= 18 && binary.BigEndian.Uint16(b[12:]) == etherTest }

// readTest reads l until an etherTest frame arrives and returns a copy, or
// fails after timeout (closing l to unblock the reader).
func readTest(t testing.TB, l link.Link, timeout time.Duration) []byte {
	t.Helper()
	c := make(chan []byte, 1)
	go func() {
		frames := make([]link.Frame, 16)
		for {
			n, err := l.ReadBatch(frames)
			if err != nil {
				c <- nil
				return
			}
			for _, f := range frames[:n] {
				if isTest(f.Buf) {
					c <- append([]byte(nil), f.Buf...)
					return
				}
			}
		}
	}()
	select {
	case b := <-c:
		return b
	case <-time.After(timeout):
		l.Close()
		<-c
		t.Fatalf("no test frame within %v", timeout)
		return nil
	}
}

func TestOptionsRejected(t *testing.T) {
	for _, o := range []Options{{Rx: 5}, {FrameSize: 1000}, {TxFrames: 100}, {RxFrames: 3}} {
		if _, err := Open("lo", o); !errors.Is(err, ErrBadOptions) {
			t.Errorf("Open(%+v) = %v, want ErrBadOptions", o, err)
		}
	}
}

// TestFramesCross: 60- and 1514-byte frames cross between an XSK link
// (both receive modes) and an afpacket link, both directions, intact.
func TestFramesCross(t *testing.T) {
	for _, rx := range []RxMode{RxAFPacket, RxXSK} {
		t.Run(rx.String(), func(t *testing.T) {
			w := newWorld(t)
			x := openXDP(t, w.a, "vA", Options{Rx: rx})
			p := openPacket(t, w.b, "vB")
			if x.Caps() != 0 || x.MaxFrame() != 1514 || !bytes.Equal(x.HardwareAddr(), w.macA) {
				t.Fatalf("Caps %v MaxFrame %d MAC %v", x.Caps(), x.MaxFrame(), x.HardwareAddr())
			}
			for i, size := range []int{60, 1514, 60, 1514} {
				f := testFrame(w.macB, w.macA, size, uint32(i))
				if n, err := x.WriteBatch([]link.Frame{{Buf: f}}); n != 1 || err != nil {
					t.Fatalf("XSK WriteBatch = %d, %v", n, err)
				}
				if got := readTest(t, p, 2*time.Second); !bytes.Equal(got, f) {
					t.Fatalf("XSK->afpacket frame %d (%d B) differs", i, size)
				}
				g := testFrame(w.macA, w.macB, size, uint32(100+i))
				if _, err := p.WriteBatch([]link.Frame{{Buf: g}}); err != nil {
					t.Fatal(err)
				}
				if got := readTest(t, x, 2*time.Second); !bytes.Equal(got, g) {
					t.Fatalf("afpacket->XSK frame %d (%d B) differs", i, size)
				}
			}
			// A burst larger than the transmit ring wraps it.
			batch := make([]link.Frame, 64)
			for i := range batch {
				batch[i].Buf = testFrame(w.macB, w.macA, 60+i, uint32(1000+i))
			}
			for r := 0; r < 100; r++ {
				if n, err := x.WriteBatch(batch); n != len(batch) || err != nil {
					t.Fatalf("burst %d: %d, %v", r, n, err)
				}
			}
			if st := x.Stats(); st.TxFrames != 4+6400 || st.TxInvalid != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestBadFrames(t *testing.T) {
	w := newWorld(t)
	x := openXDP(t, w.a, "vA", Options{})
	good := link.Frame{Buf: testFrame(w.macB, w.macA, 60, 1)}
	for _, c := range []struct {
		bad  link.Frame
		want error
	}{
		{link.Frame{Buf: make([]byte, 5)}, ErrFrameTooShort},
		{link.Frame{Buf: make([]byte, 1515)}, ErrFrameTooLong},
		{link.Frame{Buf: make([]byte, 100), VNet: link.VNetHdr{Flags: link.VNetNeedsCsum}}, ErrNoOffload},
	} {
		if n, err := x.WriteBatch([]link.Frame{good, c.bad, good}); n != 1 || !errors.Is(err, c.want) {
			t.Errorf("WriteBatch = %d, %v; want 1, %v", n, err, c.want)
		}
	}
}

// TestLinkToKernel: a hand-built UDP datagram sent through the XSK reaches
// a kernel UDP socket in the peer namespace.
func TestLinkToKernel(t *testing.T) {
	w := newWorld(t)
	x := openXDP(t, w.b, "vB", Options{})
	va, _ := w.a.Handle.LinkByIndex(w.va)
	w.a.AddrAdd(t, va, "10.78.0.1/24")
	if err := w.a.Handle.NeighAdd(&netlink.Neigh{LinkIndex: w.va, State: netlink.NUD_PERMANENT, IP: net.IPv4(10, 78, 0, 2), HardwareAddr: w.macB}); err != nil {
		t.Fatal(err)
	}
	var conn *net.UDPConn
	if err := w.a.Do(func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 78, 0, 1), Port: 4002})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	payload := bytes.Repeat([]byte("xsk!"), 300)
	b := make([]byte, 42+len(payload))
	copy(b, w.macA)
	copy(b[6:], w.macB)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(28+len(payload)))
	src, dst := [4]byte{10, 78, 0, 2}, [4]byte{10, 78, 0, 1}
	copy(ip[12:], src[:])
	copy(ip[16:], dst[:])
	binary.BigEndian.PutUint16(ip[10:], checksum.Checksum(ip, 0))
	udp := b[34:]
	binary.BigEndian.PutUint16(udp[0:], 7000)
	binary.BigEndian.PutUint16(udp[2:], 4002)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	binary.BigEndian.PutUint16(udp[6:], checksum.Checksum(udp, checksum.PseudoHeader(src, dst, 17, uint16(8+len(payload)))))
	if _, err := x.WriteBatch([]link.Frame{{Buf: b}}); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 2000)
	n, from, err := conn.ReadFromUDP(buf)
	if err != nil || !bytes.Equal(buf[:n], payload) || from.Port != 7000 {
		t.Fatalf("kernel got %d bytes from %v: %v", n, from, err)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	for _, rx := range []RxMode{RxAFPacket, RxXSK} {
		t.Run(rx.String(), func(t *testing.T) {
			w := newWorld(t)
			before := runtime.NumGoroutine()
			x := openXDP(t, w.a, "vA", Options{Rx: rx})
			errc := make(chan error, 1)
			go func() {
				_, err := x.ReadBatch(make([]link.Frame, 4))
				errc <- err
			}()
			time.Sleep(50 * time.Millisecond)
			x.Close()
			select {
			case err := <-errc:
				if !errors.Is(err, link.ErrClosed) {
					t.Fatalf("ReadBatch: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not unblock ReadBatch")
			}
			if _, err := x.WriteBatch([]link.Frame{{Buf: make([]byte, 60)}}); !errors.Is(err, link.ErrClosed) {
				t.Fatalf("WriteBatch after Close: %v", err)
			}
			deadline := time.Now().Add(2 * time.Second)
			for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if g := runtime.NumGoroutine(); g > before {
				t.Fatalf("%d goroutines after Close, %d before", g, before)
			}
		})
	}
}

// BenchmarkTx measures XSK transmit (one b.N = one frame) into an afpacket
// link that drains the peer end.
func BenchmarkTx(b *testing.B) {
	for _, size := range []int{60, 1514} {
		b.Run(fmt.Sprintf("xsk/%d", size), func(b *testing.B) {
			w := newWorld(b)
			x := openXDP(b, w.a, "vA", Options{})
			p := openPacket(b, w.b, "vB")
			var got atomic.Uint64
			done := make(chan struct{})
			go func() {
				defer close(done)
				frames := make([]link.Frame, 64)
				for {
					n, err := p.ReadBatch(frames)
					if err != nil {
						return
					}
					got.Add(uint64(n))
				}
			}()
			batch := make([]link.Frame, 64)
			for i := range batch {
				batch[i].Buf = testFrame(w.macB, w.macA, size, uint32(i))
			}
			b.SetBytes(int64(size))
			b.ResetTimer()
			start := time.Now()
			for sent := 0; sent < b.N; {
				n, err := x.WriteBatch(batch[:min(len(batch), b.N-sent)])
				if err != nil {
					b.Fatal(err)
				}
				sent += n
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
			b.ReportMetric(float64(b.N)*float64(size)*8/el.Seconds()/1e9, "Gbit/s")
			b.ReportMetric(float64(x.Stats().TxRetries), "retries")
			time.Sleep(5 * time.Millisecond)
			p.Close()
			<-done
			b.ReportMetric(float64(p.Stats().RingDrops), "rxdrops")
		})
	}
}

// BenchmarkRx measures receive rate of each receive mode (one b.N = one
// frame) while an afpacket link in the peer namespace transmits flat out.
func BenchmarkRx(b *testing.B) {
	for _, rx := range []RxMode{RxAFPacket, RxXSK} {
		for _, size := range []int{60, 1514} {
			b.Run(fmt.Sprintf("%v/%d", rx, size), func(b *testing.B) {
				w := newWorld(b)
				x := openXDP(b, w.a, "vA", Options{Rx: rx})
				p := openPacket(b, w.b, "vB")
				batch := make([]link.Frame, 64)
				for i := range batch {
					batch[i].Buf = testFrame(w.macA, w.macB, size, uint32(i))
				}
				var stop atomic.Bool
				sdone := make(chan struct{})
				go func() {
					defer close(sdone)
					for !stop.Load() {
						if _, err := p.WriteBatch(batch); err != nil {
							return
						}
					}
				}()
				frames := make([]link.Frame, 64)
				b.SetBytes(int64(size))
				b.ResetTimer()
				start := time.Now()
				for got := 0; got < b.N; {
					n, err := x.ReadBatch(frames)
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
				st := x.Stats()
				b.ReportMetric(float64(st.RxDropped+st.RxRingFull+st.AFPacket.RingDrops), "rxdrops")
			})
		}
	}
}

// BenchmarkPingPong: round trip of a 60-byte frame between two XSK links
// of the same receive mode (one b.N = one round trip); p50/p99 in
// microseconds, goroutines not pinned.
func BenchmarkPingPong(b *testing.B) {
	for _, rx := range []RxMode{RxAFPacket, RxXSK} {
		b.Run(rx.String(), func(b *testing.B) {
			w := newWorld(b)
			la := openXDP(b, w.a, "vA", Options{Rx: rx})
			lb := openXDP(b, w.b, "vB", Options{Rx: rx})
			edone := make(chan struct{})
			go func() {
				defer close(edone)
				frames := make([]link.Frame, 8)
				reply := []link.Frame{{Buf: testFrame(w.macA, w.macB, 60, 0)}}
				for {
					n, err := lb.ReadBatch(frames)
					if err != nil {
						return
					}
					for _, f := range frames[:n] {
						if isTest(f.Buf) {
							lb.WriteBatch(reply)
						}
					}
				}
			}()
			req := []link.Frame{{Buf: testFrame(w.macB, w.macA, 60, 0)}}
			frames := make([]link.Frame, 8)
			rtt := make([]time.Duration, 0, b.N)
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
						got = got || isTest(f.Buf)
					}
				}
				rtt = append(rtt, time.Since(start))
			}
			b.StopTimer()
			lb.Close()
			<-edone
			slices.Sort(rtt)
			b.ReportMetric(float64(rtt[len(rtt)/2])/1e3, "p50-us")
			b.ReportMetric(float64(rtt[(len(rtt)-1)*99/100])/1e3, "p99-us")
		})
	}
}

// TestNoAllocs: steady-state XSK WriteBatch and XSK ReadBatch allocate
// nothing per call.
func TestNoAllocs(t *testing.T) {
	w := newWorld(t)
	la := openXDP(t, w.a, "vA", Options{Rx: RxXSK})
	lb := openXDP(t, w.b, "vB", Options{Rx: RxXSK})
	batch := make([]link.Frame, 16)
	for i := range batch {
		batch[i].Buf = testFrame(w.macB, w.macA, 60+i*90, uint32(i))
	}
	frames := make([]link.Frame, 64)
	round := func() {
		if _, err := la.WriteBatch(batch); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(batch); {
			n, err := lb.ReadBatch(frames)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	}
	round()
	if a := testing.AllocsPerRun(200, round); a != 0 {
		t.Fatalf("%v allocations per write+read round", a)
	}
}
