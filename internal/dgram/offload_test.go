package dgram_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/nstest"
	"github.com/netstation/netstation/stack"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// pair is two namespaces of the test's own joined by a veth, a kernel UDP
// socket in each.
type pair struct {
	a, b         *nstest.NS
	la, lb       netlink.Link
	sa, sb       *net.UDPConn
	aAddr, bAddr netip.AddrPort
}

func newPair(t testing.TB) *pair {
	p := &pair{a: nstest.New(t, "a"), b: nstest.New(t, "b")}
	p.la, p.lb = nstest.Veth(t, p.a, "gsoa", p.b, "gsob", 1500)
	p.a.AddrAdd(t, p.la, "10.77.0.1/24")
	p.b.AddrAdd(t, p.lb, "10.77.0.2/24")
	listen := func(ns *nstest.NS, ip string) *net.UDPConn {
		var c *net.UDPConn
		if err := ns.Do(func() (err error) {
			c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		dgram.SetKernelBuffers(c, 32<<20)
		return c
	}
	p.sa, p.sb = listen(p.a, "10.77.0.1"), listen(p.b, "10.77.0.2")
	p.aAddr = p.sa.LocalAddr().(*net.UDPAddr).AddrPort()
	p.bAddr = p.sb.LocalAddr().(*net.UDPAddr).AddrPort()
	return p
}

func (p *pair) txPackets(t *testing.T) uint64 {
	l, err := p.a.Handle.LinkByName("gsoa")
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Statistics.TxPackets
}

// sendAll sends count datagrams of size bytes in batches of 64, each
// carrying its sequence number, and paces so no buffer overflows.
func sendAll(t *testing.T, c dgram.Conn, dst netip.AddrPort, count, size int) {
	t.Helper()
	msgs := make([]dgram.Message, 64)
	for i := range msgs {
		msgs[i] = dgram.Message{Buf: make([]byte, size), Addr: dst}
	}
	sendMsgs(t, c, msgs, count)
}

// sendContiguous is sendAll with the batch's datagrams back to back in
// one array, which a kernel socket sends as one iovec per run.
func sendContiguous(t *testing.T, c dgram.Conn, dst netip.AddrPort, count, size int) {
	t.Helper()
	msgs := make([]dgram.Message, 64)
	backing := make([]byte, len(msgs)*size)
	for i := range msgs {
		msgs[i] = dgram.Message{Buf: backing[i*size : (i+1)*size], Addr: dst}
	}
	sendMsgs(t, c, msgs, count)
}

func sendMsgs(t *testing.T, c dgram.Conn, msgs []dgram.Message, count int) {
	t.Helper()
	for seq := 0; seq < count; {
		n := min(len(msgs), count-seq)
		for i := range n {
			binary.BigEndian.PutUint32(msgs[i].Buf, uint32(seq+i))
		}
		w, err := c.WriteBatch(msgs[:n])
		if err != nil || w != n {
			t.Fatalf("WriteBatch at %d: %d of %d, %v", seq, w, n, err)
		}
		seq += n
		time.Sleep(200 * time.Microsecond)
	}
}

// recvAll reads count datagrams, batchLen at a time, and checks that they
// arrive whole, in order, each with its sequence number and the sender's
// address.
func recvAll(t *testing.T, c dgram.Conn, from netip.AddrPort, count, size, batchLen int) {
	t.Helper()
	in := make([]dgram.Message, batchLen)
	for i := range in {
		in[i].Buf = make([]byte, 65536)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	for got := 0; got < count; {
		n, err := c.ReadBatch(in)
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d: %v", got, count, err)
		}
		for _, m := range in[:n] {
			if m.N != size || m.Addr != from || binary.BigEndian.Uint32(m.Buf) != uint32(got) {
				t.Fatalf("datagram %d: %d bytes (want %d), seq %d, from %v", got, m.N, size, binary.BigEndian.Uint32(m.Buf), m.Addr)
			}
			got++
		}
	}
}

// TestKernelBestUsesGSOAndGRO proves the kernel baseline really uses the
// offloads: the sender's batches leave as UDP_SEGMENT super-datagrams, the
// veth carries super-frames (its tx counter moves once per run of
// datagrams, and an AF_PACKET capture decoded by gopacket sees IPv4
// packets far above the MTU holding whole multiples of the datagram), and
// the receiver's UDP_GRO cmsg hands over several datagrams per buffer,
// which ReadBatch splits back exactly (contents and count checked, also
// when the caller's batch is smaller than a super-frame).
func TestKernelBestUsesGSOAndGRO(t *testing.T) {
	p := newPair(t)
	snd, rcv := dgram.Kernel(p.sa), dgram.Kernel(p.sb)
	defer snd.Close()
	defer rcv.Close()

	// Capture on the receiving end of the veth, before the stack.
	var capFD int
	if err := p.b.Do(func() (err error) {
		capFD, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_IP)))
		if err != nil {
			return err
		}
		return unix.Bind(capFD, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: p.lb.Attrs().Index})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(capFD)
	_ = unix.SetsockoptTimeval(capFD, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})
	_ = unix.SetsockoptInt(capFD, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)

	// One datagram first: it resolves the neighbour, so every batch after
	// it leaves as it was built.
	sendAll(t, snd, p.bAddr, 1, 1472)
	recvAll(t, rcv, p.aAddr, 1, 1472, 8)

	const count, size = 64 * 40, 1472
	tx0 := p.txPackets(t)
	st0, _ := dgram.Stats(rcv)
	sendAll(t, snd, p.bAddr, count, size)
	frames := p.txPackets(t) - tx0
	recvAll(t, rcv, p.aAddr, count, size, 5) // small batches: super-frames split across calls

	ss, _ := dgram.Stats(snd)
	rs, _ := dgram.Stats(rcv)
	t.Logf("sender %+v; veth tx frames %d for %d datagrams", ss, frames, count)
	t.Logf("receiver %+v", rs)
	if !ss.GSO || ss.GSOSends == 0 || ss.DatagramsSent != count+1 {
		t.Errorf("sender did not segment: %+v", ss)
	}
	// 64 datagrams of 1472 B exceed 65,507 B: at most 44 per send.
	if maxFrames := uint64(count/44 + count/64 + 2); frames > maxFrames {
		t.Errorf("veth carried %d frames for %d datagrams (super-frames would be <= %d)", frames, count, maxFrames)
	}
	bufs := rs.RecvBuffers - st0.RecvBuffers
	if !rs.GRO || rs.GROBuffers == 0 || rs.DatagramsReceived-st0.DatagramsReceived != count || bufs*4 > count {
		t.Errorf("receiver did not get super-frames: %d buffers for %d datagrams, %+v", bufs, count, rs)
	}
	if rs.RxQueueDrops != 0 {
		t.Errorf("receiver dropped %d", rs.RxQueueDrops)
	}

	// The capture: decode every frame it holds with gopacket.
	buf := make([]byte, 1<<17)
	super, seen := 0, 0
	for {
		n, _, err := unix.Recvfrom(capFD, buf, unix.MSG_DONTWAIT)
		if err != nil {
			break
		}
		pk := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
		ip, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		udp, _ := pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if ip == nil || udp == nil || udp.DstPort != layers.UDPPort(p.bAddr.Port()) {
			continue
		}
		seen++
		if n > 1514 && (n-42)%size == 0 {
			super++
		}
	}
	if super == 0 {
		t.Errorf("capture: %d frames of the test, none a super-frame", seen)
	}
	t.Logf("capture: %d frames, %d super-frames", seen, super)
}

// TestKernelPlainIsOneFramePerDatagram: the labelled plain mode uses
// neither offload.
func TestKernelPlainIsOneFramePerDatagram(t *testing.T) {
	p := newPair(t)
	snd, rcv := dgram.KernelPlainConn(p.sa), dgram.KernelPlainConn(p.sb)
	defer snd.Close()
	defer rcv.Close()
	sendAll(t, snd, p.bAddr, 1, 1472)
	recvAll(t, rcv, p.aAddr, 1, 1472, 8)
	const count = 64 * 10
	tx0 := p.txPackets(t)
	sendAll(t, snd, p.bAddr, count, 1472)
	frames := p.txPackets(t) - tx0
	recvAll(t, rcv, p.aAddr, count, 1472, 64)
	ss, _ := dgram.Stats(snd)
	rs, _ := dgram.Stats(rcv)
	if ss.GSOSends != 0 || rs.GRO || rs.GROBuffers != 0 || frames < count {
		t.Errorf("plain mode used offloads: %d frames, sender %+v, receiver %+v", frames, ss, rs)
	}
	if m, _ := dgram.ModeOf(snd); m.String() != "kernel-plain" {
		t.Errorf("mode %v", m)
	}
}

// TestKernelBestEdges: a shorter last datagram rides in its run; sizes
// above the MTU (which UDP_SEGMENT refuses) fall back to one datagram per
// send and still arrive; receive-queue overflow is counted.
func TestKernelBestEdges(t *testing.T) {
	p := newPair(t)
	snd, rcv := dgram.Kernel(p.sa), dgram.Kernel(p.sb)
	defer snd.Close()
	defer rcv.Close()
	sendAll(t, snd, p.bAddr, 1, 100)
	recvAll(t, rcv, p.aAddr, 1, 100, 8)

	// 10 x 1000 B and a 500 B tail: one super-datagram.
	out := make([]dgram.Message, 11)
	for i := range out {
		out[i] = dgram.Message{Buf: make([]byte, 1000), Addr: p.bAddr}
		out[i].Buf[0] = byte(i)
	}
	out[10].Buf = out[10].Buf[:500]
	before, _ := dgram.Stats(snd)
	if n, err := snd.WriteBatch(out); n != 11 || err != nil {
		t.Fatalf("WriteBatch: %d, %v", n, err)
	}
	after, _ := dgram.Stats(snd)
	if after.GSOSends-before.GSOSends != 1 || after.SendMessages-before.SendMessages != 1 {
		t.Errorf("11 datagrams with a short tail: %d messages, %d GSO", after.SendMessages-before.SendMessages, after.GSOSends-before.GSOSends)
	}
	in := make([]dgram.Message, 16)
	for i := range in {
		in[i].Buf = make([]byte, 2048)
	}
	rcv.SetReadDeadline(time.Now().Add(2 * time.Second))
	for got := 0; got < 11; {
		n, err := rcv.ReadBatch(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range in[:n] {
			want := 1000
			if got == 10 {
				want = 500
			}
			if m.N != want || m.Buf[0] != byte(got) {
				t.Fatalf("datagram %d: %d bytes, first byte %d", got, m.N, m.Buf[0])
			}
			got++
		}
	}

	// 128 x 64 B: one super-datagram, UDP_MAX_SEGMENTS of current
	// kernels (an older kernel refuses it and the Conn keeps to 64).
	small := make([]dgram.Message, 128)
	for i := range small {
		small[i] = dgram.Message{Buf: make([]byte, 64), Addr: p.bAddr}
		binary.BigEndian.PutUint32(small[i].Buf, uint32(i))
	}
	before, _ = dgram.Stats(snd)
	if n, err := snd.WriteBatch(small); n != 128 || err != nil {
		t.Fatalf("WriteBatch of 128 x 64 B: %d, %v", n, err)
	}
	recvAll(t, rcv, p.aAddr, 128, 64, 64)
	if after, _ := dgram.Stats(snd); after.GSOSends-before.GSOSends != 1 || after.SendMessages-before.SendMessages != 1 {
		t.Errorf("128 x 64 B: %d messages, %d GSO, want one of 128 (a kernel with UDP_MAX_SEGMENTS 64 sends two)", after.SendMessages-before.SendMessages, after.GSOSends-before.GSOSends)
	}

	// Above the MTU: the kernel refuses gso_size > MTU; the Conn learns
	// and IP-fragments them one by one instead.
	sendAll(t, snd, p.bAddr, 128, 4000)
	recvAll(t, rcv, p.aAddr, 128, 4000, 64)
	if s, _ := dgram.Stats(snd); !s.GSO {
		t.Errorf("one refused size turned UDP_SEGMENT off for all: %+v", s)
	}
	// A 1472 B batch still segments after that.
	before, _ = dgram.Stats(snd)
	sendAll(t, snd, p.bAddr, 64, 1472)
	recvAll(t, rcv, p.aAddr, 64, 1472, 64)
	if after, _ := dgram.Stats(snd); after.GSOSends == before.GSOSends {
		t.Error("1472 B datagrams no longer segmented after a refused 4000 B size")
	}

	// Overflow: shrink the receive buffer and send unread.
	_ = p.sb.SetReadBuffer(4096)
	if rc, err := p.sb.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4096) })
	}
	sendAll(t, snd, p.bAddr, 256, 1472)
	dgram.SetKernelBuffers(p.sb, 32<<20)
	sendAll(t, snd, p.bAddr, 1, 64) // carries the drop count
	rcv.SetReadDeadline(time.Now().Add(time.Second))
	for {
		if _, err := rcv.ReadBatch(in); err != nil {
			break
		}
	}
	if s, _ := dgram.Stats(rcv); s.RxQueueDrops == 0 {
		t.Errorf("overflow not counted: %+v", s)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestGSOBatch: whole super-datagrams, at least 64 datagrams.
func TestGSOBatch(t *testing.T) {
	for _, c := range []struct{ size, want int }{{1472, 88}, {64, 128}, {1000, 65}, {1024, 126}, {8972, 70}, {65507, 64}, {0, 64}} {
		if got := dgram.GSOBatch(c.size); got != c.want {
			t.Errorf("GSOBatch(%d) = %d, want %d", c.size, got, c.want)
		}
	}
}

// TestKernelBestLendsRuns: datagrams sent from one array (a run's
// adjacent buffers merged into one iovec) arrive whole and in order, and a
// KernelBest socket lends its UDP_GRO
// super-frames in place (dgram.Runs), as a user-level socket lends its
// ring, and the runs hold every datagram whole and in order, also after a
// ReadBatch that left part of a super-frame pending. A KernelPlain socket
// lends nothing: its ReadBatch is already the one copy.
func TestKernelBestLendsRuns(t *testing.T) {
	p := newPair(t)
	snd, rcv := dgram.Kernel(p.sa), dgram.Kernel(p.sb)
	defer snd.Close()
	defer rcv.Close()
	if dgram.Runs(dgram.KernelPlainConn(p.sa)) != nil {
		t.Fatal("a KernelPlain socket claims to lend runs")
	}
	rr := dgram.Runs(rcv)
	if rr == nil {
		t.Fatal("a KernelBest socket lends no runs")
	}
	sendAll(t, snd, p.bAddr, 1, 1472) // resolves the neighbour
	recvAll(t, rcv, p.aAddr, 1, 1472, 8)

	const count, size = 64 * 20, 1472
	sendContiguous(t, snd, p.bAddr, count, size)
	// Part of the first super-frame through ReadBatch, the rest as runs.
	recvAll(t, rcv, p.aAddr, 3, size, 3)
	got, multi := 3, 0
	runs := make([]stack.Run, 8)
	rcv.SetReadDeadline(time.Now().Add(5 * time.Second))
	for got < count {
		n, dgrams, err := rr.ReadRuns(runs)
		if err != nil {
			t.Fatalf("ReadRuns after %d of %d: %v", got, count, err)
		}
		sum := 0
		for _, r := range runs[:n] {
			if r.Addr != p.aAddr || r.Seg != size && r.Datagrams() != 1 {
				t.Fatalf("run from %v, segment %d", r.Addr, r.Seg)
			}
			if r.Datagrams() > 1 {
				multi++
			}
			for off := 0; off < len(r.Payload); off += size {
				d := r.Payload[off:min(off+size, len(r.Payload))]
				if len(d) != size || binary.BigEndian.Uint32(d) != uint32(got) {
					t.Fatalf("datagram %d: %d bytes, seq %d", got, len(d), binary.BigEndian.Uint32(d))
				}
				got++
				sum++
			}
		}
		if sum != dgrams {
			t.Fatalf("ReadRuns said %d datagrams, its runs hold %d", dgrams, sum)
		}
		rr.Release()
	}
	if multi == 0 {
		t.Error("no run held more than one datagram: UDP_GRO did not coalesce")
	}
	if rs, _ := dgram.Stats(rcv); rs.DatagramsReceived != count+1 {
		t.Errorf("stats count %d datagrams received, want %d", rs.DatagramsReceived, count+1)
	}
}

// runWriter is the kernel baseline's in-place run API (the bench sender's
// runWriter; stack.UDPConn has the same).
type runWriter interface {
	MaxRun(seg int) int
	BeginRun(dst netip.AddrPort, seg, count int) ([]byte, error)
	EndRun() (int, error)
}

// TestKernelRuns: a run written in place leaves as one UDP_SEGMENT
// message and arrives whole and in order, with no allocation per run; a
// socket that does not segment offers runs of one.
func TestKernelRuns(t *testing.T) {
	p := newPair(t)
	snd, rcv := dgram.Kernel(p.sa), dgram.Kernel(p.sb)
	defer snd.Close()
	defer rcv.Close()
	rw, ok := snd.(runWriter)
	if !ok {
		t.Fatal("the kernel Conn does not write runs")
	}
	if plain, ok := dgram.KernelPlainConn(p.sa).(runWriter); !ok || plain.MaxRun(64) != 1 {
		t.Fatal("a plain kernel Conn offers runs of more than one datagram")
	}
	sendAll(t, snd, p.bAddr, 1, 1472) // resolves the neighbour
	recvAll(t, rcv, p.aAddr, 1, 1472, 8)

	for _, size := range []int{1472, 64} {
		runLen := rw.MaxRun(size)
		if want := min(dgram.MaxGSOSegments, 65507/size); runLen != want {
			t.Fatalf("MaxRun(%d) = %d, want %d", size, runLen, want)
		}
		const runs = 20
		st0, _ := dgram.Stats(snd)
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			for r := range runs {
				buf, err := rw.BeginRun(p.bAddr, size, runLen)
				if err != nil {
					t.Error(err)
					return
				}
				for i := range runLen {
					binary.BigEndian.PutUint32(buf[i*size:], uint32(r*runLen+i))
				}
				if n, err := rw.EndRun(); n != runLen || err != nil {
					t.Errorf("EndRun = %d, %v", n, err)
					return
				}
				time.Sleep(200 * time.Microsecond)
			}
		}()
		recvAll(t, rcv, p.aAddr, runs*runLen, size, 64)
		<-sent // its counters move after the kernel took the run
		st, _ := dgram.Stats(snd)
		if st.GSOSends-st0.GSOSends != runs || st.DatagramsSent-st0.DatagramsSent != uint64(runs*runLen) {
			t.Fatalf("%d B: %d segmented sends and %d datagrams for %d runs of %d", size, st.GSOSends-st0.GSOSends, st.DatagramsSent-st0.DatagramsSent, runs, runLen)
		}
	}
	if _, err := rw.BeginRun(p.bAddr, 64, rw.MaxRun(64)+1); err == nil {
		t.Fatal("a run longer than MaxRun was begun")
	}
	if _, err := rw.EndRun(); err == nil {
		t.Fatal("EndRun without BeginRun succeeded")
	}
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := rw.BeginRun(p.bAddr, 64, 8); err != nil {
			t.Fatal(err)
		}
		if _, err := rw.EndRun(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 && !raceEnabled {
		t.Fatalf("%.1f allocations per run", allocs)
	}
}
