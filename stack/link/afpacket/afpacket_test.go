package afpacket

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/internal/linktest"
	"github.com/netstation/netstation/stack/checksum"
	"github.com/netstation/netstation/stack/link"
)

func TestOptionsRejected(t *testing.T) {
	for _, o := range []Options{
		{BlockSize: 100 << 10},
		{BlockSize: 64 << 10},
		{Blocks: 1},
		{ReceiveBuffer: -1},
		{BusyPoll: -1},
		{Tx: TxMode(7)},
		{Rx: RxMode(7)},
		{BlockTimeout: -time.Second},
		{RingFrames: 48},
		{RingFrames: 1 << 17},
	} {
		if _, err := Open("lo", o); !errors.Is(err, ErrBadOptions) {
			t.Errorf("Open(%+v) = %v, want ErrBadOptions", o, err)
		}
	}
}

// TestFramesCross sends 60, 1514 and 65000-byte (UDP_L4 GSO) frames between
// two links over a veth pair in both directions, with each transmit path
// and receive mode, and checks bytes and virtio-net header on arrival.
func TestFramesCross(t *testing.T) {
	modes := []struct {
		name string
		o    Options
	}{
		{"default", Options{}},
		{"sendmmsg", Options{Tx: TxSendmmsg}},
		{"busypoll", Options{BusyPoll: 50 * time.Microsecond}},
		{"rxring", Options{Rx: RxRing}},
		{"rxring+sendmmsg", Options{Rx: RxRing, Tx: TxSendmmsg}},
		{"rxring+busypoll", Options{Rx: RxRing, BusyPoll: 50 * time.Microsecond}},
		{"framering", Options{Rx: RxFrameRing}},
		{"framering+sendmmsg", Options{Rx: RxFrameRing, Tx: TxSendmmsg}},
		{"framering+busypoll", Options{Rx: RxFrameRing, BusyPoll: 50 * time.Microsecond}},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			w := linktest.NewPair(t, 1500)
			la := open(t, w.A, "vA", m.o)
			lb := open(t, w.B, "vB", m.o)
			if la.MTU() != 1500 || la.MaxFrame() != 65550 || la.Caps() != link.CapVNetHdr|link.CapGSO {
				t.Fatalf("MTU %d MaxFrame %d Caps %v", la.MTU(), la.MaxFrame(), la.Caps())
			}
			if !bytes.Equal(la.HardwareAddr(), w.MACA) {
				t.Fatalf("HardwareAddr %v, want %v", la.HardwareAddr(), w.MACA)
			}
			ca, cb := collect(t, la), collect(t, lb)
			for dir, x := range []struct {
				from, to *Link
				c        *collector
			}{{la, lb, cb}, {lb, la, ca}} {
				src, dst := x.from.HardwareAddr(), x.to.HardwareAddr()
				var want []link.Frame
				for i, size := range []int{60, 1514, 60, 1514} {
					want = append(want, link.Frame{Buf: linktest.Frame(dst, src, size, uint32(dir*100+i))})
				}
				payload := linktest.Pattern(65000-42, byte(dir))
				gso := linktest.UDPFrame(dst, src, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}, 1000, 2000, payload, true, 1472)
				want = append(want, gso)
				n, err := x.from.WriteBatch(want)
				if err != nil || n != len(want) {
					t.Fatalf("WriteBatch = %d, %v", n, err)
				}
				for i, f := range want {
					match := isTest
					if i == len(want)-1 {
						match = func(r received) bool { return len(r.buf) > 34 && r.buf[23] == 17 }
					}
					r := x.c.next(t, 2*time.Second, match)
					if !bytes.Equal(r.buf, f.Buf) {
						t.Fatalf("dir %d frame %d: got %d bytes, want %d (content differs: %v)", dir, i, len(r.buf), len(f.Buf), len(r.buf) == len(f.Buf))
					}
					if i == len(want)-1 {
						if r.vnet.GSOType != link.GSOUDPL4 || r.vnet.GSOSize != 1472 || r.vnet.Flags&link.VNetNeedsCsum == 0 || r.vnet.CsumStart != 34 || r.vnet.CsumOffset != 6 {
							t.Fatalf("GSO frame arrived with vnet header %+v", r.vnet)
						}
					}
				}
			}
			st := lb.Stats()
			if st.RxFrames < 5 || st.TxFrames != 5 || st.TxBytes != 60+1514+60+1514+65000 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestManyFrames checks order and completeness of many frames with each
// receive mode; with RxRing, across block boundaries (more frames than one
// block holds).
func TestManyFrames(t *testing.T) {
	for _, c := range []struct{ tx, rx Options }{
		{Options{Tx: TxSendmmsg}, Options{}},
		{Options{TxRingFrames: 64}, Options{}},
		{Options{Tx: TxSendmmsg}, Options{Rx: RxRing}},
		{Options{TxRingFrames: 64}, Options{Rx: RxRing}},
		{Options{Tx: TxSendmmsg}, Options{Rx: RxFrameRing}},
		{Options{TxRingFrames: 64}, Options{Rx: RxFrameRing}},
	} {
		t.Run(c.tx.Tx.String()+"/"+c.rx.Rx.String(), func(t *testing.T) {
			w := linktest.NewPair(t, 1500)
			la := open(t, w.A, "vA", c.tx)
			lb := open(t, w.B, "vB", c.rx)
			cb := collect(t, lb)
			// A frame that does not come (next's timeout) may have been
			// dropped or held back: the counters tell which.
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("receiver stats %+v", lb.Stats())
				}
			})
			const total = 20000 // about 16 MB: the 1 MiB ring wraps many times
			// Frames in flight, at most window+50 (7 batches): the block
			// ring (RxRing) never overflows even when its reader is held
			// back. The kernel retires a block with anything in it every
			// BlockTimeout (1 ms), so a sender slower than a batch a
			// millisecond puts each batch in a block of its own, or two
			// when the timer splits it: 500 (11 batches) overran the 16
			// blocks of a reader held back on a loaded machine, "frame
			// 13100: got seq 13150 (drops 50)".
			const window = 300
			batch := make([]link.Frame, 50)
			sent, verified := 0, 0
			verify := func(upTo int) {
				for ; verified < upTo; verified++ {
					r := cb.next(t, 2*time.Second, isTest)
					if seq := binary.BigEndian.Uint32(r.buf[14:]); seq != uint32(verified) {
						t.Fatalf("frame %d: got seq %d (drops %d)", verified, seq, lb.Stats().RingDrops)
					}
					if want := linktest.Frame(lb.HardwareAddr(), la.HardwareAddr(), 60+verified%1400, uint32(verified)); !bytes.Equal(r.buf, want) {
						t.Fatalf("frame %d corrupted", verified)
					}
				}
			}
			for sent < total {
				for i := range batch {
					size := 60 + (sent+i)%1400
					batch[i].Buf = linktest.Frame(lb.HardwareAddr(), la.HardwareAddr(), size, uint32(sent+i))
				}
				n, err := la.WriteBatch(batch)
				if err != nil {
					t.Fatal(err)
				}
				sent += n
				if sent-verified > window {
					verify(sent - window/2)
				}
			}
			verify(total)
			if st := lb.Stats(); st.RingDrops != 0 || st.RxFrames != total {
				t.Fatalf("receiver stats %+v", st)
			}
		})
	}
}

func TestBadFrames(t *testing.T) {
	w := linktest.NewPair(t, 1500)
	la := open(t, w.A, "vA", Options{})
	good := link.Frame{Buf: linktest.Frame(w.MACB, w.MACA, 60, 1)}
	for _, c := range []struct {
		bad  link.Frame
		want error
	}{
		{link.Frame{Buf: make([]byte, 10)}, ErrFrameTooShort},
		{link.Frame{Buf: make([]byte, 1515)}, ErrNotGSO},
		{link.Frame{Buf: make([]byte, 70000), VNet: link.VNetHdr{GSOType: link.GSOUDPL4}}, ErrFrameTooLong},
	} {
		n, err := la.WriteBatch([]link.Frame{good, good, c.bad, good})
		if n != 2 || !errors.Is(err, c.want) {
			t.Errorf("WriteBatch with %d-byte frame = %d, %v; want 2, %v", len(c.bad.Buf), n, err, c.want)
		}
	}
}

// TestKernelToLink: a kernel UDP socket in a sends to an address whose MAC
// is our link's (static neighbour entry); our link in b, which has no
// kernel address, receives the frame with a partial checksum (NEEDS_CSUM,
// as veth hands it over) that completes to a valid one.
func TestKernelToLink(t *testing.T) {
	for _, rx := range []RxMode{RxRecvmmsg, RxFrameRing} {
		t.Run(rx.String(), func(t *testing.T) { testKernelToLink(t, rx) })
	}
}

func testKernelToLink(t *testing.T, rx RxMode) {
	w := linktest.NewPair(t, 1500)
	lb := open(t, w.B, "vB", Options{Rx: rx})
	cb := collect(t, lb)
	conn := w.KernelUDP(t, netip.MustParsePrefix("10.77.0.1/24"), netip.MustParseAddr("10.77.0.2"), 4000)
	payload := linktest.Pattern(1000, 0x5a)
	if _, err := conn.WriteToUDP(payload, &net.UDPAddr{IP: net.IPv4(10, 77, 0, 2), Port: 5000}); err != nil {
		t.Fatal(err)
	}
	r := cb.next(t, 2*time.Second, func(r received) bool {
		return len(r.buf) >= 42 && binary.BigEndian.Uint16(r.buf[12:]) == 0x0800 && r.buf[23] == 17 && binary.BigEndian.Uint16(r.buf[36:]) == 5000
	})
	if !bytes.Equal(r.buf[0:6], w.MACB) || !bytes.Equal(r.buf[6:12], w.MACA) || !bytes.Equal(r.buf[42:], payload) {
		t.Fatalf("frame content wrong: % x", r.buf[:42])
	}
	if r.vnet.Flags&link.VNetNeedsCsum == 0 {
		t.Fatalf("vnet header %+v: want NEEDS_CSUM from veth", r.vnet)
	}
	// Finish the checksum the way the header says and verify it.
	cs, co := int(r.vnet.CsumStart), int(r.vnet.CsumOffset)
	if cs != 34 || co != 6 {
		t.Fatalf("csum_start %d csum_offset %d", cs, co)
	}
	binary.BigEndian.PutUint16(r.buf[cs+co:], checksum.Checksum(r.buf[cs:], 0))
	ph := checksum.PseudoHeader([4]byte{10, 77, 0, 1}, [4]byte{10, 77, 0, 2}, 17, uint16(len(r.buf)-34))
	if got := checksum.Partial(r.buf[34:], ph); got != 0xffff {
		t.Fatalf("completed UDP checksum does not verify: sum %#04x", got)
	}
}

// TestLinkToKernel: our link in b writes an ARP request (the kernel in a
// answers it) and hand-built UDP datagrams, one with a complete checksum
// and one NEEDS_CSUM; a kernel UDP socket in a receives both.
func TestLinkToKernel(t *testing.T) {
	w := linktest.NewPair(t, 1500)
	lb := open(t, w.B, "vB", Options{})
	cb := collect(t, lb)
	conn := w.KernelUDP(t, netip.MustParsePrefix("10.77.0.1/24"), netip.MustParseAddr("10.77.0.2"), 4001)
	// ARP who-has 10.77.0.1 tell 10.77.0.2.
	arp := make([]byte, 42)
	copy(arp[0:], net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(arp[6:], w.MACB)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	copy(arp[14:], []byte{0, 1, 8, 0, 6, 4, 0, 1})
	copy(arp[22:], w.MACB)
	copy(arp[28:], []byte{10, 77, 0, 2})
	copy(arp[38:], []byte{10, 77, 0, 1})
	if _, err := lb.WriteBatch([]link.Frame{{Buf: arp}}); err != nil {
		t.Fatal(err)
	}
	reply := cb.next(t, 2*time.Second, func(r received) bool {
		return len(r.buf) >= 42 && binary.BigEndian.Uint16(r.buf[12:]) == 0x0806 && binary.BigEndian.Uint16(r.buf[20:]) == 2
	})
	if !bytes.Equal(reply.buf[22:28], w.MACA) || !bytes.Equal(reply.buf[28:32], []byte{10, 77, 0, 1}) {
		t.Fatalf("ARP reply % x", reply.buf[:42])
	}

	for _, partial := range []bool{false, true} {
		payload := linktest.Pattern(1200, map[bool]byte{false: 1, true: 2}[partial])
		f := linktest.UDPFrame(w.MACA, w.MACB, [4]byte{10, 77, 0, 2}, [4]byte{10, 77, 0, 1}, 6000, 4001, payload, partial, 0)
		if _, err := lb.WriteBatch([]link.Frame{f}); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 2000)
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("partial=%v: kernel socket: %v", partial, err)
		}
		if !bytes.Equal(buf[:n], payload) || from != netip.MustParseAddrPort("10.77.0.2:6000") {
			t.Fatalf("partial=%v: got %d bytes from %v", partial, n, from)
		}
	}
}

// TestLatencyIndependentOfBlockTimeout: with a 1 s block timeout, single
// frames still arrive at once in the default receive mode, with and
// without busy-polling.
func TestLatencyIndependentOfBlockTimeout(t *testing.T) {
	for _, o := range []Options{{BlockTimeout: time.Second}, {BlockTimeout: time.Second, BusyPoll: 20 * time.Microsecond}} {
		t.Run(fmt.Sprint(o.BusyPoll), func(t *testing.T) {
			w := linktest.NewPair(t, 1500)
			la := open(t, w.A, "vA", Options{})
			lb := open(t, w.B, "vB", o)
			cb := collect(t, lb)
			for i := 0; i < 20; i++ {
				start := time.Now()
				if _, err := la.WriteBatch([]link.Frame{{Buf: linktest.Frame(w.MACB, w.MACA, 60, uint32(i))}}); err != nil {
					t.Fatal(err)
				}
				cb.next(t, 2*time.Second, isTest)
				if d := time.Since(start); d > 200*time.Millisecond {
					t.Fatalf("frame %d took %v with a 1 s block timeout", i, d)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	for _, o := range []Options{{}, {BusyPoll: time.Millisecond}, {Rx: RxRing}, {Rx: RxFrameRing}, {Rx: RxFrameRing, BusyPoll: time.Millisecond}} {
		t.Run(fmt.Sprint(o.Rx, o.BusyPoll), func(t *testing.T) {
			w := linktest.NewPair(t, 1500)
			before := runtime.NumGoroutine()
			linktest.CheckCloseUnblocksRead(t, open(t, w.B, "vB", o), before)
		})
	}
}

// TestNoAllocs: steady-state WriteBatch (both transmit paths) and
// ReadBatch allocate nothing per call.
func TestNoAllocs(t *testing.T) {
	for _, c := range []struct {
		tx TxMode
		rx RxMode
	}{{TxRing, RxRecvmmsg}, {TxSendmmsg, RxRecvmmsg}, {TxRing, RxRing}, {TxSendmmsg, RxFrameRing}} {
		t.Run(c.tx.String()+"/"+c.rx.String(), func(t *testing.T) {
			w := linktest.NewPair(t, 1500)
			la := open(t, w.A, "vA", Options{Tx: c.tx})
			lb := open(t, w.B, "vB", Options{Rx: c.rx})
			linktest.CheckNoAllocs(t, la, lb, w.MACB, w.MACA)
		})
	}
}

// TestKernelRejectsFrame: a frame whose virtio-net header the kernel
// rejects (TCPv4 GSO without NEEDS_CSUM, gso_size 0) must not wedge either
// transmit path: frames after it still go out.
func TestKernelRejectsFrame(t *testing.T) {
	for _, mode := range []TxMode{TxRing, TxSendmmsg} {
		t.Run(mode.String(), func(t *testing.T) {
			w := linktest.NewPair(t, 1500)
			la := open(t, w.A, "vA", Options{Tx: mode})
			lb := open(t, w.B, "vB", Options{})
			cb := collect(t, lb)
			bad := link.Frame{Buf: linktest.Frame(w.MACB, w.MACA, 100, 999), VNet: link.VNetHdr{GSOType: link.GSOTCPv4}}
			for i := 0; i < 3; i++ {
				good := link.Frame{Buf: linktest.Frame(w.MACB, w.MACA, 60, uint32(i))}
				n, err := la.WriteBatch([]link.Frame{bad, good})
				t.Logf("round %d: WriteBatch = %d, %v", i, n, err)
				if n == 0 {
					// sendmmsg reports the rejected frame: send the rest.
					if _, err := la.WriteBatch([]link.Frame{good}); err != nil {
						t.Fatal(err)
					}
				}
				r := cb.next(t, 2*time.Second, isTest)
				if seq := binary.BigEndian.Uint32(r.buf[14:]); seq != uint32(i) {
					t.Fatalf("round %d: got frame %d", i, seq)
				}
			}
		})
	}
}

// TestKernelGSOToLink: a kernel UDP socket with UDP_SEGMENT sends one
// 14000-byte payload; our link receives it whole, as one UDP_L4 GSO
// super-frame (veth does not segment), and its payload is intact.
func TestKernelGSOToLink(t *testing.T) {
	for _, rx := range []RxMode{RxRecvmmsg, RxRing, RxFrameRing} {
		t.Run(rx.String(), func(t *testing.T) { testKernelGSOToLink(t, rx) })
	}
}

func testKernelGSOToLink(t *testing.T, rx RxMode) {
	w := linktest.NewPair(t, 1500)
	lb := open(t, w.B, "vB", Options{Rx: rx})
	cb := collect(t, lb)
	conn := w.KernelUDP(t, netip.MustParsePrefix("10.77.0.1/24"), netip.MustParseAddr("10.77.0.2"), 4003)
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, 1400) })
	if serr != nil {
		t.Fatalf("UDP_SEGMENT: %v", serr)
	}
	payload := linktest.Pattern(14000, 0x33)
	if _, err := conn.WriteToUDP(payload, &net.UDPAddr{IP: net.IPv4(10, 77, 0, 2), Port: 5003}); err != nil {
		t.Fatal(err)
	}
	r := cb.next(t, 2*time.Second, func(r received) bool {
		return len(r.buf) >= 42 && r.buf[23] == 17 && binary.BigEndian.Uint16(r.buf[36:]) == 5003
	})
	if len(r.buf) != 42+len(payload) || !bytes.Equal(r.buf[42:], payload) {
		t.Fatalf("got a %d-byte frame, want one %d-byte super-frame", len(r.buf), 42+len(payload))
	}
	if r.vnet.GSOType != link.GSOUDPL4 || r.vnet.GSOSize != 1400 || r.vnet.Flags&link.VNetNeedsCsum == 0 {
		t.Fatalf("vnet header %+v", r.vnet)
	}
}

// TestWriteGather: a frame given as pieces arrives as the frame they make;
// malformed gathered frames are refused with the WriteBatch errors.
func TestWriteGather(t *testing.T) {
	w := linktest.NewPair(t, 1500)
	la := open(t, w.A, "vA", Options{})
	lb := open(t, w.B, "vB", Options{})
	c := collect(t, lb)
	f := linktest.Frame(w.MACB, w.MACA, 1514, 7)
	if err := la.WriteGather(link.VNetHdr{}, [][]byte{f[:20], f[20:20], f[20:700], f[700:]}); err != nil {
		t.Fatal(err)
	}
	r := c.next(t, 5*time.Second, isTest)
	if !bytes.Equal(r.buf, f) {
		t.Fatalf("received %d bytes, not the %d-byte frame gathered", len(r.buf), len(f))
	}
	if st := la.Stats(); st.TxFrames != 1 || st.TxBytes != uint64(len(f)) {
		t.Errorf("sender stats %+v", st)
	}
	for _, c := range []struct {
		pieces [][]byte
		vnet   link.VNetHdr
		want   error
	}{
		{[][]byte{f[:10], f[10:60]}, link.VNetHdr{}, ErrFrameTooShort},
		{nil, link.VNetHdr{}, ErrFrameTooShort},
		{[][]byte{f, f[:10]}, link.VNetHdr{}, ErrNotGSO},
		{[][]byte{f, make([]byte, 70000)}, link.VNetHdr{GSOType: link.GSOUDPL4}, ErrFrameTooLong},
	} {
		if err := la.WriteGather(c.vnet, c.pieces); !errors.Is(err, c.want) {
			t.Errorf("WriteGather of %d pieces = %v, want %v", len(c.pieces), err, c.want)
		}
	}
}
