package stacktest_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/stacktest"
)

func TestPairExchangesADatagram(t *testing.T) {
	p := stacktest.New(t, stacktest.Options{Warmup: true})
	srv, err := p.B.ListenUDP(netip.AddrPortFrom(stacktest.AddrB.Addr(), 9))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := p.A.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(stacktest.AddrB.Addr(), 9))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := srv.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if got := from.String(); got[:len("10.0.0.1:")] != "10.0.0.1:" {
		t.Fatalf("from %v, want stack A's address", from)
	}
}
