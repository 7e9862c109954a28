package dgram

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/privtest"
)

// TestBusyPollConn: two busy-polling sockets on loopback exchange a
// datagram each way; a deadline and Close each end a waiting read. Loopback
// has no NAPI, so BusyPolled must say no.
func TestBusyPollConn(t *testing.T) {
	privtest.Root(t) // SO_BUSY_POLL above net.core.busy_read needs CAP_NET_ADMIN
	lo := netip.MustParseAddr("127.0.0.1")
	a, err := ListenBusyPoll(netip.AddrPortFrom(lo, 0), 50*time.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := ListenBusyPoll(netip.AddrPortFrom(lo, 0), 50*time.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bAddr := b.LocalAddr().(*net.UDPAddr).AddrPort()
	if bAddr.Port() == 0 {
		t.Fatal("no port bound")
	}

	if n, err := a.WriteBatch([]Message{{Buf: []byte("ping"), Addr: bAddr}}); n != 1 || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	in := []Message{{Buf: make([]byte, 64)}}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := b.ReadBatch(in); n != 1 || err != nil || string(in[0].Buf[:in[0].N]) != "ping" {
		t.Fatalf("read: %d, %v, %q", n, err, in[0].Buf[:in[0].N])
	}
	if want := a.LocalAddr().(*net.UDPAddr).AddrPort(); in[0].Addr != want {
		t.Fatalf("from %v, want %v", in[0].Addr, want)
	}
	if b.BusyPolled() {
		t.Fatal("loopback has no NAPI, yet BusyPolled says the datagram came through it")
	}

	// A round trip's write and read allocate nothing (the kernel
	// baseline must not pay a garbage collector the user stack does not).
	out := []Message{{Buf: []byte("ping"), Addr: bAddr}}
	if allocs := testing.AllocsPerRun(100, func() {
		if _, err := a.WriteBatch(out); err != nil {
			t.Fatal(err)
		}
		if _, err := b.ReadBatch(in); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("%v allocations per write and read", allocs)
	}

	// A deadline already set ends the read; one set from another
	// goroutine ends a read that is already waiting.
	b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := b.ReadBatch(in); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	b.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, err := b.ReadBatch(in); done <- err }()
	time.Sleep(30 * time.Millisecond)
	b.SetReadDeadline(time.Now())
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("waiting read after a deadline in the past: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a deadline set while a read waited did not end it")
	}

	// Close ends a waiting read, and the socket refuses further use.
	b.SetReadDeadline(time.Time{})
	go func() { _, err := b.ReadBatch(in); done <- err }()
	time.Sleep(30 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("waiting read after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a waiting read")
	}
	if _, err := b.WriteBatch([]Message{{Buf: []byte("x"), Addr: bAddr}}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
}
