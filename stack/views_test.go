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
		head := &rx.q.descs[rx.q.head.Load()&uint64(len(rx.q.descs)-1)]
		if from, _ := head.datagram(rx.q.part); &views[0].Payload[0] != &rx.q.arena[from] {
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

// readRunsAll reads runs until want datagrams came and returns them split
// into datagrams (copied), checking each run's shape on the way.
func readRunsAll(t *testing.T, rx *UDPConn, runs []Run, want int, check func(r *Run)) [][]byte {
	t.Helper()
	var got [][]byte
	for len(got) < want {
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, d, err := rx.ReadRuns(runs)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got), err)
		}
		sum := 0
		for i := range runs[:n] {
			r := &runs[i]
			if cap(r.Payload) != len(r.Payload) {
				t.Fatal("a run may be appended to, over the next one")
			}
			if check != nil {
				check(r)
			}
			sum += r.Datagrams()
			p := r.Payload
			for {
				k := min(max(r.Seg, 1), len(p))
				got = append(got, bytes.Clone(p[:k]))
				if p = p[k:]; len(p) == 0 {
					break
				}
			}
		}
		if sum != d {
			t.Fatalf("ReadRuns said %d datagrams, its runs hold %d", d, sum)
		}
		rx.Release()
	}
	return got
}

// TestReadRuns: a GSO super-frame comes out of ReadRuns as one run (its
// datagrams end to end, Seg bytes each, the last shorter), lone datagrams
// (an empty one too) as runs of one, all from the right sender and in
// order; a run a ReadViews took part of comes out as its rest; ReadBatch
// after ReadRuns takes what is left. On a mem pair (the ring) and on a
// lending link (the link's buffers).
func TestReadRuns(t *testing.T) {
	for _, lend := range []bool{false, true} {
		var tx, rx *UDPConn
		if lend {
			tx, rx, _ = lentConnected(t, 4)
		} else {
			tx, rx = connected(t, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Depth: 4096})
		}
		var want [][]byte
		out := make([]Message, 40)
		for i := range out {
			out[i].Buf = pattern(1000, byte(i))
			if i == len(out)-1 {
				out[i].Buf = pattern(999, byte(i)) // not the super-frame's size: a frame of its own
			}
			want = append(want, out[i].Buf)
		}
		if _, err := tx.WriteBatch(out); err != nil {
			t.Fatal(err)
		}
		for _, p := range [][]byte{pattern(7, 99), {}} {
			if _, err := tx.Write(p); err != nil {
				t.Fatal(err)
			}
			want = append(want, p)
		}
		// Everything queued first, so that each read below finds what it
		// expects (the receive goroutine may be slow, as under -race).
		for dl := time.Now().Add(5 * time.Second); rx.rxDatagrams.Load() < uint64(len(want)); {
			if time.Now().After(dl) {
				t.Fatalf("lend %v: %d of %d datagrams queued", lend, rx.rxDatagrams.Load(), len(want))
			}
			time.Sleep(time.Millisecond)
		}
		// Three datagrams as views first: the super-frame's run is then
		// read from its fourth datagram.
		views := make([]View, 3)
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := rx.ReadViews(views)
		if err != nil || n != 3 {
			t.Fatalf("ReadViews: %d, %v", n, err)
		}
		for i := range views[:n] {
			if !bytes.Equal(views[i].Payload, want[i]) {
				t.Fatalf("lend %v: view %d wrong", lend, i)
			}
		}
		rx.Release()
		runs := make([]Run, 2)
		first := true
		check := func(r *Run) {
			if r.Addr.Addr() != ipB || r.Addr.Port() != tx.laddr.Port() {
				t.Fatalf("run from %v", r.Addr)
			}
			if first {
				first = false
				if r.Seg != 1000 || len(r.Payload) != 36*1000 {
					t.Fatalf("lend %v: first run %d bytes of %d-byte datagrams, want the super-frame's last 36 of 1000", lend, len(r.Payload), r.Seg)
				}
			}
		}
		// Two runs (the super-frame's rest, the 999-byte datagram), then
		// one (7 bytes): the empty datagram stays queued.
		got := readRunsAll(t, rx, runs, 37, check)
		got = append(got, readRunsAll(t, rx, runs[:1], 1, check)...)
		for i := range got {
			if !bytes.Equal(got[i], want[3+i]) {
				t.Fatalf("lend %v: datagram %d: %d bytes, wrong content", lend, 3+i, len(got[i]))
			}
		}
		msgs := []Message{{Buf: make([]byte, 64)}}
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := rx.ReadBatch(msgs); err != nil || n != 1 || msgs[0].N != 0 {
			t.Fatalf("lend %v: ReadBatch after the runs: %d, %v, %d bytes (want the empty datagram)", lend, n, err, msgs[0].N)
		}
		rx.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, _, err := rx.ReadRuns(runs); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("empty socket: %v, want a deadline error", err)
		}
	}
}
