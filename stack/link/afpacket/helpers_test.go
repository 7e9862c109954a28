package afpacket

import (
	"encoding/binary"
	"net"
	"os"

	"testing"
	"time"

	"github.com/netstation/netstation/internal/nstest"
	"github.com/netstation/netstation/stack/checksum"
	"github.com/netstation/netstation/stack/link"
)

// etherTest is the IEEE local-experimental EtherType: test frames use it so
// nothing else on the wire can be mistaken for them.
const etherTest = 0x88b5

// world is two test-owned namespaces joined by a veth pair vA (in a) / vB
// (in b), with IPv6 off so no router solicitation or MLD report adds noise.
type world struct {
	a, b   *nstest.NS
	va, vb int // interface indexes
	macA   net.HardwareAddr
	macB   net.HardwareAddr
}

func newWorld(t testing.TB, mtu int) *world {
	t.Helper()
	w := &world{a: nstest.New(t, "a"), b: nstest.New(t, "b")}
	for _, ns := range []*nstest.NS{w.a, w.b} {
		err := ns.Do(func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0)
		})
		if err != nil {
			t.Fatalf("disable IPv6: %v", err)
		}
	}
	la, lb := nstest.Veth(t, w.a, "vA", w.b, "vB", mtu)
	w.va, w.vb = la.Attrs().Index, lb.Attrs().Index
	w.macA, w.macB = la.Attrs().HardwareAddr, lb.Attrs().HardwareAddr
	return w
}

// open opens a link on ifname inside ns and closes it when the test ends
// (before the namespace goes).
func open(t testing.TB, ns *nstest.NS, ifname string, o Options) *Link {
	t.Helper()
	var l *Link
	err := ns.Do(func() (err error) {
		l, err = Open(ifname, o)
		return err
	})
	if err != nil {
		t.Fatalf("Open(%s): %v", ifname, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// received is a copy of a frame a collector read.
type received struct {
	buf  []byte
	vnet link.VNetHdr
}

// collector copies every frame a link reads into a channel until the link
// is closed.
type collector struct {
	ch   chan received
	done chan error
}

func collect(t testing.TB, l *Link) *collector {
	c := &collector{ch: make(chan received, 1<<15), done: make(chan error, 1)}
	go func() {
		frames := make([]link.Frame, 64)
		for {
			n, err := l.ReadBatch(frames)
			if err != nil {
				c.done <- err
				return
			}
			for _, f := range frames[:n] {
				select {
				case c.ch <- received{append([]byte(nil), f.Buf...), f.VNet}:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		l.Close()
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			t.Errorf("collector did not stop after Close")
		}
	})
	return c
}

// next returns the next frame that match accepts, or fails after timeout.
func (c *collector) next(t testing.TB, timeout time.Duration, match func(received) bool) received {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case r := <-c.ch:
			if match(r) {
				return r
			}
		case <-deadline:
			t.Fatalf("no matching frame within %v", timeout)
			return received{}
		}
	}
}

// testFrame builds an etherTest frame of size bytes whose payload starts
// with seq and continues with a pattern derived from it.
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

func isTest(r received) bool {
	return len(r.buf) >= 18 && binary.BigEndian.Uint16(r.buf[12:]) == etherTest
}

// udpFrame builds an Ethernet/IPv4/UDP frame. With partial, the UDP
// checksum field holds the pseudo-header sum and the returned VNetHdr asks
// for NEEDS_CSUM; otherwise the checksum is complete. gsoSize > 0 makes it
// a UDP_L4 GSO super-frame (partial implied).
func udpFrame(dst, src net.HardwareAddr, srcIP, dstIP [4]byte, sport, dport uint16, payload []byte, partial bool, gsoSize int) link.Frame {
	if gsoSize > 0 {
		partial = true
	}
	b := make([]byte, 42+len(payload))
	copy(b[0:], dst)
	copy(b[6:], src)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], 1)
	ip[8] = 64
	ip[9] = 17
	copy(ip[12:], srcIP[:])
	copy(ip[16:], dstIP[:])
	binary.BigEndian.PutUint16(ip[10:], checksum.Checksum(ip, 0))
	udp := b[34:]
	ulen := uint16(8 + len(payload))
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], ulen)
	copy(udp[8:], payload)
	ph := checksum.PseudoHeader(srcIP, dstIP, 17, ulen)
	f := link.Frame{Buf: b}
	if partial {
		binary.BigEndian.PutUint16(udp[6:], ph)
		f.VNet = link.VNetHdr{Flags: link.VNetNeedsCsum, CsumStart: 34, CsumOffset: 6}
		if gsoSize > 0 {
			f.VNet.GSOType = link.GSOUDPL4
			f.VNet.GSOSize = uint16(gsoSize)
			f.VNet.HdrLen = 42
		}
	} else {
		c := checksum.Checksum(udp, ph)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(udp[6:], c)
	}
	return f
}

// pattern returns n bytes of a recognisable pattern.
func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i) ^ seed
	}
	return p
}
