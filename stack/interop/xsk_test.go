package interop

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/nstest"
	"github.com/netstation/netstation/stack"
)

// TestXSKRunToCompletion: two of our stacks on the full AF_XDP link
// (afxdp.RxXSK) with a poll budget, as BenchmarkRR's user-xsk-poll rows
// run them, exchange TCP and UDP messages intact, and their readers take
// frames off the link themselves (PolledFrames), not only the receive
// goroutines. The budget is far above a round trip, so a poller is there
// when the answer comes even on a slow, loaded machine.
func TestXSKRunToCompletion(t *testing.T) { testRunToCompletion(t, "xsk") }

// TestFrameRingRunToCompletion: the same on afpacket's TPACKET_V2 ring
// (afpacket.RxFrameRing), as BenchmarkRR's user-ring-poll rows run it.
func TestFrameRingRunToCompletion(t *testing.T) { testRunToCompletion(t, "framering") }

// testRunToCompletion runs the exchange on openRRLink's kind of link.
func testRunToCompletion(t *testing.T, kind string) {
	a, b, la, lb := endpoints(t, false, "xk")
	for _, x := range []*nstest.NS{a, b} {
		x.Run(t, 5*time.Second, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
	}
	const budget = 20 * time.Millisecond
	open := func(ns *nstest.NS, ifname string, cfg stack.Config) *stack.Stack {
		var st *stack.Stack
		if err := ns.Do(func() error {
			l, err := openRRLink(kind, ifname)
			if err != nil {
				return err
			}
			if st, err = stack.New(l, cfg); err != nil {
				l.Close()
			}
			return err
		}); err != nil {
			t.Fatalf("stack on %s link in %s: %v", kind, ns.Name, err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	sa := open(a, "a0", stack.Config{MAC: la.Attrs().HardwareAddr, Addr: userAddr, MTU: 1500, PollBudget: budget})
	sb := open(b, "b0", stack.Config{MAC: lb.Attrs().HardwareAddr, Addr: user2Addr, MTU: 1500, PollBudget: budget})

	dst := netip.AddrPortFrom(user2Addr.Addr(), 7007)
	ln, err := sb.ListenTCP(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	us, err := sb.ListenUDP(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer us.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := us.ReadFrom(buf)
			if err != nil {
				return
			}
			us.WriteTo(buf[:n], from)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sa.DialTCP(ctx, netip.AddrPort{}, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uc, err := sa.ListenUDP(netip.AddrPortFrom(userAddr.Addr(), 0))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	const rounds = 200
	msg, got := make([]byte, 64), make([]byte, 64)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	for i := range rounds {
		msg[0], msg[63] = byte(i), byte(i>>8)
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("TCP round %d: %v", i, err)
		}
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("TCP round %d: %v, echo differs: %v", i, err, !bytes.Equal(got, msg))
		}
		if _, err := uc.WriteToUDPAddrPort(msg, dst); err != nil {
			t.Fatalf("UDP round %d: %v", i, err)
		}
		uc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := uc.ReadFromUDPAddrPort(got)
		if err != nil || !bytes.Equal(got[:n], msg) {
			t.Fatalf("UDP round %d: %v, echo differs", i, err)
		}
	}
	// Each side's readers wait for 2 x rounds answers with the budget;
	// the receive goroutine may take some, pollers must take the rest.
	for _, s := range []struct {
		name string
		st   *stack.Stack
	}{{"client", sa}, {"echo", sb}} {
		if p := s.st.Stats().PolledFrames; p == 0 {
			t.Errorf("%s: no frame taken by a polling reader in %d round trips", s.name, 2*rounds)
		}
	}
}
