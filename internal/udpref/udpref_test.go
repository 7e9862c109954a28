package udpref_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/privtest"
	"github.com/netstation/netstation/internal/udpref"
)

// TestPairOnLoopback runs the reference pair over loopback for a short
// while: the receiver counts what the sender sent (loopback does not
// lose below its buffers), in several datagrams per recvmsg.
func TestPairOnLoopback(t *testing.T) {
	privtest.Root(t) // SO_RCVBUFFORCE
	lo := netip.MustParseAddr("127.0.0.1")
	rx, err := udpref.Open("", netip.AddrPortFrom(lo, 0), true)
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	tx, err := udpref.Open("", netip.AddrPortFrom(lo, 0), false)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	done := make(chan udpref.Result, 1)
	go func() {
		r, err := rx.Receive(300*time.Millisecond, 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	sent, err := tx.Send(rx.LocalAddr(), 1472, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	got := <-done
	t.Logf("sent %d datagrams in %d calls (%.2f Gbit/s); received %d in %d calls (%.2f Gbit/s)",
		sent.Datagrams, sent.Calls, sent.BitsPerSecond()/1e9, got.Datagrams, got.Calls, got.BitsPerSecond()/1e9)
	if sent.Datagrams == 0 || sent.Calls*10 > sent.Datagrams {
		t.Errorf("sender: %d datagrams in %d calls", sent.Datagrams, sent.Calls)
	}
	if got.Datagrams == 0 || got.Datagrams > sent.Datagrams || got.Calls*2 > got.Datagrams {
		t.Errorf("receiver: %d datagrams in %d calls of %d sent", got.Datagrams, got.Calls, sent.Datagrams)
	}
}
