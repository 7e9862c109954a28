package tcp_test

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
	"github.com/netstation/netstation/stack/tcp"
)

func TestDataBothWays(t *testing.T) {
	for _, tc := range []struct {
		name string
		caps link.Caps
	}{{"plain", 0}, {"offload", link.CapVNetHdr}, {"gso", link.CapVNetHdr | link.CapGSO}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, worldOpts{mem: mem.Options{Caps: tc.caps}})
			c, s := w.connect(t, 80)
			transfer(t, c, s, pattern(3<<20, 1), false)
			transfer(t, s, c, pattern(3<<20, 2), false)
			transfer(t, c, s, []byte("x"), true)
			transfer(t, s, c, pattern(100000, 3), true)
			deadline := time.Now().Add(5 * time.Second)
			for c.State() != "TIME-WAIT" && c.State() != "CLOSED" {
				if time.Now().After(deadline) {
					t.Fatalf("client in %s, server in %s", c.State(), s.State())
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}

// TestLingerBuffersInfo: SetLinger(0) makes Close abortive; SetReadBuffer
// stops the receive ring from growing (it never shrinks below what was
// advertised); Info counts what moved.
func TestLingerBuffersInfo(t *testing.T) {
	w := newWorld(t, worldOpts{})
	c, s := w.connect(t, 80)
	s.SetReadBuffer(16 << 10)
	transfer(t, c, s, pattern(1<<20, 4), false)
	deadline := time.Now().Add(3 * time.Second)
	for c.Info().Unacked != 0 && time.Now().Before(deadline) { // the last ACK may be on its way
		time.Sleep(time.Millisecond)
	}
	ci, si := c.Info(), s.Info()
	if ci.BytesAcked != 1<<20 || si.BytesReceived != 1<<20 || si.RecvBuffer != tcp.DefaultInitialBuffer || ci.SendWindow > tcp.DefaultInitialBuffer {
		t.Fatalf("client %+v\nserver %+v", ci, si)
	}
	if !ci.SACK || !ci.Timestamps || !ci.WindowScale || ci.SRTT <= 0 || ci.State != "ESTABLISHED" {
		t.Fatalf("client %+v", ci)
	}
	c.SetLinger(0)
	c.Close()
	s.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("peer of an abortive close: %v", err)
	}
}
