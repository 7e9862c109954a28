package stack

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

// TestReadViews: datagrams (single frames and a GSO super-frame) come out
// of ReadViews intact, from the right sender, without a copy (the views
// alias the ring), in order across Release, and a deadline and Close
// still end a waiting ReadViews.
func TestReadViews(t *testing.T) {
	tx, rx := connected(t, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Depth: 4096})
	out := make([]Message, 40)
	for i := range out {
		out[i].Buf = pattern(1000, byte(i))
	}
	if _, err := tx.WriteBatch(out); err != nil { // one super-frame
		t.Fatal(err)
	}
	if _, err := tx.Write(pattern(7, 99)); err != nil { // one frame
		t.Fatal(err)
	}
	views := make([]View, 16)
	got := 0
	for got < len(out)+1 {
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := rx.ReadViews(views)
		if err != nil {
			t.Fatalf("after %d: %v", got, err)
		}
		for i := range views[:n] {
			want := pattern(7, 99)
			if got < len(out) {
				want = out[got].Buf
			}
			if !bytes.Equal(views[i].Payload, want) {
				t.Fatalf("datagram %d: %d bytes, wrong content", got, len(views[i].Payload))
			}
			if views[i].Addr.Addr() != ipB || views[i].Addr.Port() != tx.laddr.Port() {
				t.Fatalf("datagram %d from %v", got, views[i].Addr)
			}
			if cap(views[i].Payload) != len(views[i].Payload) {
				t.Fatal("a view may be appended to, over the next datagram")
			}
			got++
		}
		if &views[0].Payload[0] != &rx.q.arena[rx.q.descs[rx.q.head.Load()&uint64(len(rx.q.descs)-1)].off] {
			t.Fatal("the view does not alias the ring")
		}
		rx.Release()
		rx.Release() // a second Release does nothing
	}
	rx.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := rx.ReadViews(views); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("empty socket: %v, want a deadline error", err)
	}
	rx.SetReadDeadline(time.Time{})
	done := make(chan error)
	go func() {
		_, err := rx.ReadViews(views)
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	rx.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestReadViewsConcurrent: a writer, a view reader and a copying reader on
// one socket (run it with -race): every datagram is seen once, intact.
func TestReadViewsConcurrent(t *testing.T) {
	tx, rx := connected(t, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Depth: 4096})
	readViewsConcurrent(t, tx, rx, 64)
}

func readViewsConcurrent(t *testing.T, tx, rx *UDPConn, size int) {
	const total = 20000
	seen := make(chan int, total)
	check := func(b []byte) {
		if len(b) != size || !bytes.Equal(b[8:], pattern(size-8, b[0])) {
			t.Errorf("corrupt datagram % x", b)
		}
		seen <- int(b[0]) | int(b[1])<<8
	}
	readers := make(chan struct{}, 2)
	go func() {
		defer func() { readers <- struct{}{} }()
		views := make([]View, 8)
		for {
			n, err := rx.ReadViews(views)
			if err != nil {
				return
			}
			for _, v := range views[:n] {
				check(v.Payload)
			}
			rx.Release()
		}
	}()
	go func() {
		defer func() { readers <- struct{}{} }()
		msgs := make([]Message, 8)
		for i := range msgs {
			msgs[i].Buf = make([]byte, 2048)
		}
		for {
			n, err := rx.ReadBatch(msgs)
			if err != nil {
				return
			}
			for _, m := range msgs[:n] {
				check(m.Buf[:m.N])
			}
		}
	}()
	msgs := make([]Message, 32)
	for i := range msgs {
		msgs[i].Buf = make([]byte, size)
	}
	for sent := 0; sent < total; {
		for i := range msgs {
			b := msgs[i].Buf
			b[0], b[1] = byte(sent+i), byte((sent+i)>>8)
			copy(b[8:], pattern(size-8, b[0]))
		}
		if _, err := tx.WriteBatch(msgs); err != nil {
			t.Fatal(err)
		}
		sent += len(msgs)
		for sent-len(seen) > 1024 { // stay within the ring
			time.Sleep(100 * time.Microsecond)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < total && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	rx.Close()
	<-readers
	<-readers
	close(seen)
	counts := make(map[int]int)
	for id := range seen {
		counts[id]++
	}
	// Identifiers wrap at 65536 > total: each must be seen exactly once.
	if len(counts) != total {
		t.Fatalf("%d distinct datagrams of %d (drops %v)", len(counts), total, rx.s.Stats().Drops)
	}
	for id, c := range counts {
		if c != 1 {
			t.Fatalf("datagram %d seen %d times", id, c)
		}
	}
}

// TestListenUDPOptions: a socket's own ring size overrides the stack's,
// zero fields keep it, and absurd sizes are capped.
func TestListenUDPOptions(t *testing.T) {
	a, _ := pair(t, mem.Options{})
	for _, c := range []struct {
		o            UDPOptions
		bytes, descs int
	}{
		{UDPOptions{}, DefaultUDPQueueBytes, DefaultUDPQueueLen},
		{UDPOptions{QueueBytes: 64 << 20, QueueLen: 100000}, 64 << 20, 1 << 17},
		{UDPOptions{QueueBytes: 10}, 65507, DefaultUDPQueueLen},
		{UDPOptions{QueueLen: 1 << 30}, DefaultUDPQueueBytes, maxUDPQueueLen},
	} {
		u, err := a.ListenUDPOptions(netip.AddrPort{}, c.o)
		if err != nil {
			t.Fatal(err)
		}
		if b, d := u.ReceiveBuffer(); b != c.bytes || d != c.descs {
			t.Errorf("%+v: ring of %d bytes, %d datagrams; want %d, %d", c.o, b, d, c.bytes, c.descs)
		}
		u.Close()
	}
}
