package stack

import (
	"io"
	"net/netip"
	"testing"

	"github.com/netstation/netstation/stack/link/mem"
)

// TestTCPStats: one connection, some data each way and a close show up in
// both stacks' TCP counters, the ones netstation status reports.
func TestTCPStats(t *testing.T) {
	a, b := pair(t, mem.Options{})
	ln, err := b.ListenTCP(netip.AddrPortFrom(b.Addr(), 9000))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(c, c) // echo until the client closes its side
		c.Close()
		done <- err
	}()
	c, err := a.DialTCP(ctxT(t), netip.AddrPort{}, netip.AddrPortFrom(b.Addr(), 9000))
	if err != nil {
		t.Fatal(err)
	}
	msg := pattern(100_000, 7)
	go func() {
		c.Write(msg)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || len(got) != len(msg) {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	as, bs := a.Stats().TCP, b.Stats().TCP
	if as.ActiveOpens != 1 || bs.PassiveOpens != 1 || as.OutSegs == 0 || as.InSegs == 0 || bs.InSegs == 0 {
		t.Fatalf("client %+v, server %+v", as, bs)
	}
}
