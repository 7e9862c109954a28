package stack

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/checksum"
	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	ipA  = netip.MustParseAddr("10.9.0.1")
	ipB  = netip.MustParseAddr("10.9.0.2")
)

// pair starts two stacks joined by a mem pair and closes them when the
// test ends.
func pair(t testing.TB, o mem.Options) (*Stack, *Stack) {
	t.Helper()
	la, lb := mem.Pair(macA, macB, o)
	return stacksOn(t, la, lb)
}

// stacksOn starts stack A (ipA) on la and stack B (ipB) on lb and closes
// them when the test ends.
func stacksOn(t testing.TB, la, lb link.Link) (*Stack, *Stack) {
	t.Helper()
	a, err := New(la, Config{Addr: netip.PrefixFrom(ipA, 24)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(lb, Config{Addr: netip.PrefixFrom(ipB, 24)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// recorder keeps a copy of every frame written on a mem pair.
type recorder struct {
	mu     sync.Mutex
	frames []link.Frame
}

func (r *recorder) hook(f *link.Frame) bool {
	r.mu.Lock()
	r.frames = append(r.frames, link.Frame{Buf: append([]byte(nil), f.Buf...), VNet: f.VNet})
	r.mu.Unlock()
	return false
}

func (r *recorder) take() []link.Frame {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.frames
	r.frames = nil
	return f
}

// rawPeer starts stack A (on ipA/macA) facing a raw mem end the test
// drives by hand, as macB.
func rawPeer(t testing.TB, cfg Config, o mem.Options) (*Stack, *mem.Link) {
	t.Helper()
	la, lb := mem.Pair(macA, macB, o)
	cfg.Addr = netip.PrefixFrom(ipA, 24)
	cfg.NoGratuitousARP = true
	a, err := New(la, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, lb
}

// inject writes frames from the raw end and waits until the stack has
// taken them all in.
func inject(t testing.TB, s *Stack, raw *mem.Link, frames ...[]byte) {
	t.Helper()
	before := s.Stats().RxFrames
	fs := make([]link.Frame, len(frames))
	for i, b := range frames {
		fs[i].Buf = b
	}
	if _, err := raw.WriteBatch(fs); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().RxFrames < before+uint64(len(frames)) {
		if time.Now().After(deadline) {
			t.Fatalf("stack took in %d of %d frames", s.Stats().RxFrames-before, len(frames))
		}
		time.Sleep(time.Millisecond)
	}
	// The counter moves before the frame is processed; let it finish.
	time.Sleep(2 * time.Millisecond)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// udpFrame builds a correct Ethernet/IPv4/UDP frame from B to A,
// independently of the stack's own encoder.
func udpFrame(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 42+len(payload))
	copy(b[0:6], macA)
	copy(b[6:12], macB)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(28+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], 77)
	ip[8] = 64
	ip[9] = 17
	a4, b4 := ipA.As4(), ipB.As4()
	copy(ip[12:16], b4[:])
	copy(ip[16:20], a4[:])
	binary.BigEndian.PutUint16(ip[10:], ^sum16(ip[:20]))
	u := ip[20:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	copy(u[8:], payload)
	ph := checksum.PseudoHeader(b4, a4, 17, uint16(8+len(payload)))
	c := ^checksum.Combine(ph, sum16(u[:8+len(payload)]))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return b
}

// sum16 is a deliberately naive RFC 1071 sum, independent of the
// optimised checksum package.
func sum16(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// fixIPChecksum recomputes the IPv4 header checksum of frame b.
func fixIPChecksum(b []byte) {
	ip := header.IPv4(b[14:])
	hl := ip.HeaderLength()
	b[24], b[25] = 0, 0
	binary.BigEndian.PutUint16(b[24:], ^sum16(b[14:14+hl]))
}

// expectBatch reads len(want) datagrams from c (5 s at most) and fails
// unless they are want's, in order.
func expectBatch(t testing.TB, c *UDPConn, want []Message) {
	t.Helper()
	in := make([]Message, len(want))
	for i := range in {
		in[i].Buf = make([]byte, 2048)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for got := 0; got < len(want); {
		k, err := c.ReadBatch(in[got:])
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", got, len(want), err)
		}
		got += k
	}
	for i := range in {
		if !bytes.Equal(in[i].Buf[:in[i].N], want[i].Buf) {
			t.Fatalf("datagram %d differs", i)
		}
	}
}

// patterns is n datagrams of size bytes, each a pattern of its own.
func patterns(n, size int) []Message {
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i].Buf = pattern(size, byte(i))
	}
	return msgs
}
