package stack

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/arp"
	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/ipv4"
	"github.com/netstation/netstation/stack/link/mem"
)

// TestBadInputCounted injects malformed frames and checks each is dropped
// under its own reason, exactly once, and nothing reaches the socket.
func TestBadInputCounted(t *testing.T) {
	s, raw := rawPeer(t, Config{ICMPRateLimit: -1}, mem.Options{})
	c, err := s.ListenUDP(netip.AddrPortFrom(netip.Addr{}, 7000))
	if err != nil {
		t.Fatal(err)
	}
	good := func() []byte { return udpFrame(1234, 7000, []byte("hello")) }
	cases := []struct {
		name string
		want engine.DropReason
		make func() []byte
	}{
		{"truncated ethernet", engine.DropEthernetTruncated, func() []byte { return good()[:10] }},
		{"unknown ethertype", engine.DropUnknownEtherType, func() []byte { b := good(); b[12], b[13] = 0x88, 0xb5; return b }},
		{"not our MAC", engine.DropNotForUs, func() []byte { b := good(); b[5] ^= 0x40; return b }},
		{"ip truncated", engine.DropIPTruncated, func() []byte { return good()[:14+12] }},
		{"wrong version", engine.DropIPBadVersion, func() []byte { b := good(); b[14] = 0x65; fixIPChecksum(b); return b }},
		{"bad IHL", engine.DropIPBadIHL, func() []byte { b := good(); b[14] = 0x43; return b }},
		{"total length too long", engine.DropIPBadTotalLength, func() []byte {
			b := good()
			binary.BigEndian.PutUint16(b[16:], 9000)
			fixIPChecksum(b)
			return b
		}},
		{"bad ip checksum", engine.DropIPBadChecksum, func() []byte { b := good(); b[24] ^= 1; return b }},
		{"ttl zero", engine.DropIPBadTTL, func() []byte { b := good(); b[22] = 0; fixIPChecksum(b); return b }},
		{"not our address", engine.DropNotOurAddress, func() []byte { b := good(); b[33] = 99; fixIPChecksum(b); return b }},
		{"bad udp length", engine.DropUDPBadLength, func() []byte { b := good(); binary.BigEndian.PutUint16(b[38:], 200); return b }},
		{"bad udp checksum", engine.DropUDPBadChecksum, func() []byte { b := good(); b[len(b)-1] ^= 0xff; return b }},
		{"no socket", engine.DropNoSocket, func() []byte { return udpFrame(1, 7001, []byte("x")) }},
		{"frame shorter than its total length", engine.DropIPBadTotalLength, func() []byte {
			b := udpFrame(1234, 7000, make([]byte, 1472))
			return b[:len(b)-100] // the link cut it short of its total length
		}},
	}
	for _, tc := range cases {
		before := s.Stats().Drops
		inject(t, s, raw, tc.make())
		after := s.Stats().Drops
		for r := range after {
			want := before[r]
			if engine.DropReason(r) == tc.want {
				want++
			}
			if after[r] != want {
				t.Errorf("%s: %v went %d -> %d", tc.name, engine.DropReason(r), before[r], after[r])
			}
		}
	}
	// The good frame still gets through after all that.
	inject(t, s, raw, good())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, _, err := c.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("good frame: %q %v", buf[:n], err)
	}
	if c.q.tail.Load() != c.q.head.Load() {
		t.Fatal("a bad frame reached the socket")
	}
	// Ethernet padding after the IP packet is not part of the datagram.
	inject(t, s, raw, append(udpFrame(1234, 7000, []byte("x")), make([]byte, 17)...))
	n, _, err = c.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "x" {
		t.Fatalf("padded frame: %q %v", buf[:n], err)
	}
}

// fragmentFrames cuts a UDP frame into IP fragments of chunk bytes.
func fragmentFrames(frame []byte, chunk int, id uint16) [][]byte {
	payload := frame[34:]
	var out [][]byte
	for off := 0; off < len(payload); off += chunk {
		end := min(off+chunk, len(payload))
		b := make([]byte, 34+end-off)
		copy(b, frame[:34])
		copy(b[34:], payload[off:end])
		binary.BigEndian.PutUint16(b[16:], uint16(20+end-off))
		binary.BigEndian.PutUint16(b[18:], id)
		fo := uint16(off / 8)
		if end < len(payload) {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(b[20:], fo)
		fixIPChecksum(b)
		out = append(out, b)
	}
	return out
}

func TestOverlappingFragmentsDropDatagram(t *testing.T) {
	s, raw := rawPeer(t, Config{}, mem.Options{})
	c, _ := s.ListenUDP(netip.AddrPortFrom(netip.Addr{}, 7000))
	msg := pattern(3000, 3)
	frags := fragmentFrames(udpFrame(1, 7000, msg), 1000, 42)
	// A fragment overlapping the first: same bytes shifted by 8.
	evil := append([]byte(nil), frags[1]...)
	binary.BigEndian.PutUint16(evil[20:], 0x2000|uint16((1000-8)/8))
	fixIPChecksum(evil)
	inject(t, s, raw, frags[0], evil, frags[1], frags[2], frags[3])
	st := s.Stats()
	if st.Drops[engine.DropFragmentOverlap] != 2 {
		t.Fatalf("overlap drops %d, want 2 (the held fragment and the overlapping one)", st.Drops[engine.DropFragmentOverlap])
	}
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := c.ReadFromUDPAddrPort(make([]byte, 4000)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a poisoned datagram was delivered (err %v)", err)
	}
	// The same fragments without the overlap reassemble.
	inject(t, s, raw, fragmentFrames(udpFrame(1, 7000, msg), 1000, 43)...)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4000)
	n, _, err := c.ReadFromUDPAddrPort(buf)
	if err != nil || n != len(msg) || string(buf[:n]) != string(msg) {
		t.Fatalf("clean datagram: %d bytes, %v", n, err)
	}
}

func TestFragmentFloodStaysBounded(t *testing.T) {
	const bound = 64 << 10
	s, raw := rawPeer(t, Config{Reassembly: ipv4.ReassemblerConfig{MaxBytes: bound}}, mem.Options{})
	for round := range 20 {
		var batch [][]byte
		for i := range 50 {
			// First fragments of datagrams that never complete.
			f := fragmentFrames(udpFrame(1, 7000, make([]byte, 3000)), 1000, uint16(round*50+i))
			batch = append(batch, f[0])
		}
		inject(t, s, raw, batch...)
		if st := s.Stats().Reassembly; st.Bytes > bound {
			t.Fatalf("round %d: reassembly holds %d bytes, bound %d", round, st.Bytes, bound)
		}
	}
	if s.Stats().Drops[engine.DropFragmentMemory] == 0 {
		t.Fatal("flood evicted nothing")
	}
}

func TestReadDeadline(t *testing.T) {
	a, _ := pair(t, mem.Options{})
	c, _ := a.ListenUDP(netip.AddrPort{})
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	start := time.Now()
	_, _, err := c.ReadFrom(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err %v, want a timeout", err)
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("returned before the deadline")
	}
	// A deadline moved into the past wakes a blocked reader.
	c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, _, err := c.ReadFrom(make([]byte, 10)); done <- err }()
	time.Sleep(20 * time.Millisecond)
	c.SetReadDeadline(time.Now().Add(-time.Second))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reader not woken by SetReadDeadline")
	}
	c.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := c.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(ipB, 9))); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past deadline: %v", err)
	}
}

func TestCloseUnblocksAndStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	la, lb := mem.Pair(macA, macB, mem.Options{})
	defer lb.Close()
	s, err := New(la, Config{Addr: netip.PrefixFrom(ipA, 24)})
	if err != nil {
		t.Fatal(err)
	}
	c1, _ := s.ListenUDP(netip.AddrPort{})
	c2, _ := s.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(ipB, 9))
	errs := make(chan error, 2)
	for _, c := range []*UDPConn{c1, c2} {
		go func() { _, _, err := c.ReadFrom(make([]byte, 10)); errs <- err }()
	}
	time.Sleep(10 * time.Millisecond)
	s.Close()
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("reader got %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close left a reader blocked")
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines %d -> %d\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := s.ListenUDP(netip.AddrPort{}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ListenUDP after Close: %v", err)
	}
}

func TestPortUnreachableRateLimited(t *testing.T) {
	a, b := pair(t, mem.Options{})
	if _, err := b.Ping(ctxT(t), ipA, 8); err != nil { // resolve first: the ARP queue holds only 64
		t.Fatal(err)
	}
	cb, _ := b.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(ipA, 9999))
	for range 100 {
		cb.Write([]byte("anyone?"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.Stats().Drops[engine.DropNoSocket] < 100 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	sa := a.Stats()
	if sa.Drops[engine.DropNoSocket] != 100 {
		t.Fatalf("no-socket drops %d, want 100", sa.Drops[engine.DropNoSocket])
	}
	if sa.PortUnreachableSent == 0 || sa.PortUnreachableLimited == 0 || sa.PortUnreachableSent > 50 {
		t.Fatalf("unreachable sent %d, limited %d", sa.PortUnreachableSent, sa.PortUnreachableLimited)
	}
	for b.Stats().ICMPErrorsIn < sa.PortUnreachableSent && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := b.Stats().ICMPErrorsIn; got != sa.PortUnreachableSent {
		t.Fatalf("peer saw %d ICMP errors, %d sent", got, sa.PortUnreachableSent)
	}
}

func TestARPRetriesThenGivesUp(t *testing.T) {
	// The raw end never answers.
	s, _ := rawPeer(t, Config{ARP: arp.Config{RetryInterval: 30 * time.Millisecond}}, mem.Options{})
	c, _ := s.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(ipB, 9))
	for range 3 {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Drops[engine.DropARPUnresolved] < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("pending frames never dropped: %+v", s.Stats().ARP)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := s.Stats()
	if st.ARPRequestsOut != 3 || st.ARP.Retries != 2 || st.ARP.Failed != 1 {
		t.Fatalf("requests %d retries %d failed %d, want 3/2/1", st.ARPRequestsOut, st.ARP.Retries, st.ARP.Failed)
	}
}

// TestLoneFragmentExpiresWithIdleTimer: the stack's timer sleeps while
// nothing is pending and wakes for a fragment, which it drops once the
// reassembly timeout passes.
func TestLoneFragmentExpiresWithIdleTimer(t *testing.T) {
	s, raw := rawPeer(t, Config{Reassembly: ipv4.ReassemblerConfig{Timeout: 100 * time.Millisecond}}, mem.Options{})
	time.Sleep(50 * time.Millisecond) // the timer has gone to sleep
	frags := fragmentFrames(udpFrame(1, 7000, make([]byte, 3000)), 1000, 43)
	inject(t, s, raw, frags[0])
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Drops[engine.DropFragmentTimeout] < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("lone fragment never expired: %+v", s.Stats().Reassembly)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p := s.Stats().Reassembly.Pending; p != 0 {
		t.Fatalf("%d datagrams still held", p)
	}
}
