package interop

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/nstest"
	"github.com/netstation/netstation/internal/privtest"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/link/afpacket"
	"github.com/vishvananda/netlink"
)

// benchPair is a client and a server end of one TCP connection, on our
// stacks or on kernel sockets, across a veth pair between two namespaces.
type benchPair struct {
	client, server net.Conn
	segsOut        func() uint64 // segments both stacks sent (ours only)
}

func startStackTB(tb testing.TB, ns *nstest.NS, ifname string, mac net.HardwareAddr, addr netip.Prefix, o afpacket.Options) *stack.Stack {
	tb.Helper()
	return startStackCfg(tb, ns, ifname, o, stack.Config{MAC: mac, Addr: addr, MTU: 1500})
}

// startStackCfg is startStackTB with the whole stack configuration.
func startStackCfg(tb testing.TB, ns *nstest.NS, ifname string, o afpacket.Options, cfg stack.Config) *stack.Stack {
	tb.Helper()
	var st *stack.Stack
	err := ns.Do(func() error {
		l, err := afpacket.Open(ifname, o)
		if err != nil {
			return err
		}
		st, err = stack.New(l, cfg)
		if err != nil {
			l.Close()
		}
		return err
	})
	if err != nil {
		tb.Fatalf("start stack in %s: %v", ns.Name, err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// endpoints makes two namespaces joined by a veth pair, or each by a veth
// to a bridge in a third namespace; it returns the two ends.
func endpoints(tb testing.TB, bridged bool, label string) (a, b *nstest.NS, la, lb netlink.Link) {
	privtest.Root(tb)
	a, b = nstest.New(tb, label+"a"), nstest.New(tb, label+"b")
	if !bridged {
		la, lb = nstest.Veth(tb, a, "a0", b, "b0", 1500)
		return
	}
	br := nstest.New(tb, label+"br")
	if err := br.Handle.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		tb.Fatal(err)
	}
	bl, err := br.Handle.LinkByName("br0")
	if err != nil {
		tb.Fatal(err)
	}
	br.Handle.LinkSetUp(bl)
	la, _ = nstest.Veth(tb, a, "a0", br, "pa", 1500)
	lb, _ = nstest.Veth(tb, b, "b0", br, "pb", 1500)
	for _, n := range []string{"pa", "pb"} {
		l, _ := br.Handle.LinkByName(n)
		if err := br.Handle.LinkSetMaster(l, bl); err != nil {
			tb.Fatal(err)
		}
	}
	return
}

// userPair connects two of our stacks on a veth pair.
func userPair(tb testing.TB) benchPair { return userPairOpts(tb, false) }

// userPairBridged connects two of our stacks through a bridge.
func userPairBridged(tb testing.TB) benchPair { return userPairOpts(tb, true) }

func userPairOpts(tb testing.TB, bridged bool) benchPair {
	a, b, la, lb := endpoints(tb, bridged, "u")
	for _, x := range []*nstest.NS{a, b} {
		x.Run(tb, 5*time.Second, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
	}
	o := afpacket.Options{}
	sa := startStackTB(tb, a, "a0", la.Attrs().HardwareAddr, userAddr, o)
	sb := startStackTB(tb, b, "b0", lb.Attrs().HardwareAddr, user2Addr, o)
	l, err := sb.ListenTCP(netip.AddrPortFrom(user2Addr.Addr(), 5201))
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := sa.DialTCP(ctx, netip.AddrPort{}, netip.AddrPortFrom(user2Addr.Addr(), 5201))
	if err != nil {
		tb.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close(); s.Close() })
	return benchPair{c, s, func() uint64 { return sa.TCP().Stats().SegsOut.Load() + sb.TCP().Stats().SegsOut.Load() }}
}

// kernelPair connects two kernel sockets on a veth pair.
func kernelPair(tb testing.TB) benchPair { return kernelPairOpts(tb, false) }

// kernelPairBridged connects two kernel sockets through a bridge.
func kernelPairBridged(tb testing.TB) benchPair { return kernelPairOpts(tb, true) }

func kernelPairOpts(tb testing.TB, bridged bool) benchPair {
	a, b, la, lb := endpoints(tb, bridged, "k")
	a.AddrAdd(tb, la, "10.98.0.1/24")
	b.AddrAdd(tb, lb, "10.98.0.2/24")
	var l net.Listener
	if err := b.Do(func() error {
		var err error
		l, err = net.Listen("tcp4", "10.98.0.2:5201")
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	var c net.Conn
	if err := a.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", "10.98.0.2:5201", 5*time.Second)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close(); s.Close() })
	return benchPair{client: c, server: s}
}

// BenchmarkTCPBulk: one connection, client to server, 1 MiB writes, over
// a veth pair and through a bridge; our stacks and kernel sockets in the
// same run.
func BenchmarkTCPBulk(b *testing.B) {
	for _, side := range []struct {
		name string
		mk   func(testing.TB) benchPair
	}{{"user", userPair}, {"kernel", kernelPair}, {"user-bridge", userPairBridged}, {"kernel-bridge", kernelPairBridged}, {"kernel-to-user-bridge", kernelToUserPair}} {
		b.Run(side.name, func(b *testing.B) {
			p := side.mk(b)
			const chunk = 1 << 20
			buf := make([]byte, chunk)
			done := make(chan int64)
			go func() {
				n, _ := io.Copy(io.Discard, p.server)
				done <- n
			}()
			b.SetBytes(chunk)
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if _, err := p.client.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			p.client.(interface{ CloseWrite() error }).CloseWrite()
			n := <-done
			el := time.Since(start)
			b.StopTimer()
			if n != int64(b.N)*chunk {
				b.Fatalf("server read %d of %d bytes", n, int64(b.N)*chunk)
			}
			b.ReportMetric(float64(n)*8/el.Seconds()/1e9, "Gbit/s")
		})
	}
}

// kernelToUserPair is a kernel socket client sending to a server on our
// stack through a bridge: the direction of an NBD WRITE from a kernel
// client (fio, qemu) to a peripheral, where the kernel sends TSO/GSO
// super-frames and paces by our ACKs.
func kernelToUserPair(tb testing.TB) benchPair {
	a, b, la, lb := endpoints(tb, true, "x")
	for _, x := range []*nstest.NS{a, b} {
		x.Run(tb, 5*time.Second, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
	}
	a.AddrAdd(tb, la, "10.99.0.9/24")
	sb := startStackTB(tb, b, "b0", lb.Attrs().HardwareAddr, user2Addr, afpacket.Options{})
	l, err := sb.ListenTCP(netip.AddrPortFrom(user2Addr.Addr(), 5201))
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	var c net.Conn
	if err := a.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(user2Addr.Addr(), 5201).String(), 5*time.Second)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close(); s.Close() })
	return benchPair{client: c, server: s, segsOut: func() uint64 { return sb.TCP().Stats().SegsOut.Load() }}
}
