package stack

import (
	"bytes"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

// sendRunInPlace writes n datagrams of seg bytes in place with BeginRun
// and EndRun and returns them.
func sendRunInPlace(t *testing.T, tx *UDPConn, seg, n int, tag byte) [][]byte {
	t.Helper()
	area, err := tx.BeginRun(netip.AddrPort{}, seg, n)
	if err != nil {
		t.Fatalf("BeginRun %d x %d B: %v", n, seg, err)
	}
	if len(area) != seg*n {
		t.Fatalf("BeginRun %d x %d B: %d bytes to write, want %d", n, seg, len(area), seg*n)
	}
	want := make([][]byte, n)
	for i := range want {
		want[i] = pattern(seg, tag+byte(i))
		copy(area[i*seg:], want[i])
	}
	if got, err := tx.EndRun(); got != n || err != nil {
		t.Fatalf("EndRun %d x %d B: %d, %v", n, seg, got, err)
	}
	return want
}

// TestBeginRun: datagrams written in place with BeginRun/EndRun reach the
// peer intact and in order, a run as one GSO super-frame (read back as
// one run), a run of one as a plain frame; without GSO (on the link or
// the socket) a run is one datagram; CancelRun sends nothing and lets
// the next writer in; misuse is refused.
func TestBeginRun(t *testing.T) {
	tx, rx := connected(t, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Depth: 4096})
	runs := make([]Run, 4)
	for _, c := range []struct{ seg, n int }{{1472, 44}, {64, 122}, {1000, 3}, {1000, 1}} {
		if m := tx.MaxRun(c.seg); m < c.n {
			t.Fatalf("MaxRun(%d) = %d, want at least %d", c.seg, m, c.n)
		}
		gso0 := tx.s.Stats().GSOFramesOut
		want := sendRunInPlace(t, tx, c.seg, c.n, byte(c.n))
		got := readRunsAll(t, rx, runs, c.n, func(r *Run) {
			if r.Seg != c.seg {
				t.Fatalf("%d x %d B: a run of %d-byte datagrams", c.n, c.seg, r.Seg)
			}
		})
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("%d x %d B: datagram %d differs", c.n, c.seg, i)
			}
		}
		if d, w := tx.s.Stats().GSOFramesOut-gso0, uint64(min(c.n-1, 1)); d != w {
			t.Fatalf("%d x %d B: %d GSO frames, want %d", c.n, c.seg, d, w)
		}
	}
	if m := tx.MaxRun(1472); m != 44 {
		t.Errorf("MaxRun(1472) = %d, want 44 (one IP packet)", m)
	}
	if _, err := tx.BeginRun(netip.AddrPort{}, 1472, 45); !errors.Is(err, ErrMessageTooLong) {
		t.Errorf("a run of 45 x 1472 B: %v, want ErrMessageTooLong", err)
	}
	if _, err := tx.BeginRun(netip.AddrPort{}, 1473, 1); !errors.Is(err, ErrMessageTooLong) {
		t.Errorf("a run of 1473 B (over the MTU): %v, want ErrMessageTooLong", err)
	}
	if _, err := tx.EndRun(); !errors.Is(err, ErrConfig) {
		t.Errorf("EndRun without BeginRun: %v", err)
	}
	// CancelRun: nothing leaves, and the socket writes again.
	if _, err := tx.BeginRun(netip.AddrPort{}, 100, 5); err != nil {
		t.Fatal(err)
	}
	tx.CancelRun()
	tx.CancelRun() // a second one does nothing
	if _, err := tx.Write(pattern(9, 1)); err != nil {
		t.Fatal(err)
	}
	msgs := []Message{{Buf: make([]byte, 64)}}
	rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := rx.ReadBatch(msgs); err != nil || n != 1 || msgs[0].N != 9 {
		t.Fatalf("after CancelRun: %d, %v, %d bytes; want the 9-byte datagram alone", n, err, msgs[0].N)
	}
	// Without GSO on the socket, a run is one datagram.
	tx.SetGSO(false)
	if m := tx.MaxRun(100); m != 1 {
		t.Errorf("MaxRun without GSO = %d, want 1", m)
	}
	if _, err := tx.BeginRun(netip.AddrPort{}, 100, 2); !errors.Is(err, ErrMessageTooLong) {
		t.Errorf("a run of 2 without GSO: %v", err)
	}
	want := sendRunInPlace(t, tx, 100, 1, 7)
	if got := readRunsAll(t, rx, runs, 1, nil); !bytes.Equal(got[0], want[0]) {
		t.Fatal("a run of one without GSO differs")
	}
	tx.SetGSO(true)
	tx.Close()
	if _, err := tx.BeginRun(netip.AddrPort{}, 100, 2); !errors.Is(err, ErrClosed) {
		t.Errorf("BeginRun on a closed socket: %v", err)
	}
}

// TestBeginRunNoGSOLink: on a link without GSO, MaxRun is 1 and a run of
// one still goes.
func TestBeginRunNoGSOLink(t *testing.T) {
	tx, rx := connected(t, mem.Options{})
	if m := tx.MaxRun(100); m != 1 {
		t.Fatalf("MaxRun on a link without GSO = %d, want 1", m)
	}
	want := sendRunInPlace(t, tx, 100, 1, 3)
	if got := readRunsAll(t, rx, make([]Run, 2), 1, nil); !bytes.Equal(got[0], want[0]) {
		t.Fatal("the datagram differs")
	}
}

// TestBeginRunConcurrent: runs written in place and WriteBatch from other
// goroutines on one socket: every datagram arrives intact (run by -race).
func TestBeginRunConcurrent(t *testing.T) {
	tx, rx := connected(t, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Depth: 8192})
	const rounds = 50
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range rounds {
			area, err := tx.BeginRun(netip.AddrPort{}, 200, 10)
			if err != nil {
				t.Error(err)
				return
			}
			for j := range 10 {
				copy(area[j*200:], pattern(200, byte(i)))
			}
			if _, err := tx.EndRun(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		msgs := make([]Message, 10)
		for i := range rounds {
			for j := range msgs {
				msgs[j].Buf = pattern(300, byte(i))
			}
			if _, err := tx.WriteBatch(msgs); err != nil {
				t.Error(err)
				return
			}
		}
	})
	runs := make([]Run, 8)
	got := readRunsAll(t, rx, runs, 2*rounds*10, nil)
	wg.Wait()
	for _, d := range got {
		if len(d) != 200 && len(d) != 300 {
			t.Fatalf("a datagram of %d bytes", len(d))
		}
		if !bytes.Equal(d, pattern(len(d), d[0])) {
			t.Fatal("a datagram differs from the pattern it was written with")
		}
	}
}

// gatherPieces cuts n datagrams of seg bytes (the last one short bytes
// shorter) into pieces as a storage WRITE has them: a header of its own,
// then a slice of data that lies elsewhere. It returns the pieces and the
// datagrams they make.
func gatherPieces(seg, n, short int, tag byte) (pieces, want [][]byte) {
	for i := range n {
		d := pattern(seg, tag+byte(i))
		if i == n-1 {
			d = d[:seg-short]
		}
		want = append(want, d)
		h := min(32, len(d))
		pieces = append(pieces, bytes.Clone(d[:h]), bytes.Clone(d[h:]))
	}
	return pieces, want
}

// readDatagrams reads n datagrams with ReadBatch.
func readDatagrams(t *testing.T, rx *UDPConn, n int) [][]byte {
	t.Helper()
	var got [][]byte
	msgs := make([]Message, 64)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 2048)
	}
	for len(got) < n {
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, err := rx.ReadBatch(msgs)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", len(got), n, err)
		}
		for _, m := range msgs[:k] {
			got = append(got, bytes.Clone(m.Buf[:m.N]))
		}
	}
	return got
}

// TestWriteRunGather: datagrams gathered from pieces (headers of their
// own around data elsewhere, the last datagram short) reach the peer
// intact, in order and cut where they should be, a run as one GSO
// super-frame; a run of one sends a plain frame, and so does a socket
// without GSO, which takes runs of one only; misuse is refused. (The mem link does not gather: the frame is
// assembled; stack/interop's TestRunsStackToStack gathers on a veth.)
func TestWriteRunGather(t *testing.T) {
	tx, rx := connected(t, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Depth: 4096})
	for _, c := range []struct{ seg, n, short int }{{1472, 44, 0}, {1472, 44, 1000}, {1472, 3, 7}, {600, 1, 100}} {
		pieces, want := gatherPieces(c.seg, c.n, c.short, byte(c.n))
		gso0 := tx.s.Stats().GSOFramesOut
		if got, err := tx.WriteRunGather(netip.AddrPort{}, c.seg, pieces); got != c.n || err != nil {
			t.Fatalf("%d x %d B: %d, %v", c.n, c.seg, got, err)
		}
		got := readDatagrams(t, rx, c.n)
		if len(got) != c.n {
			t.Fatalf("%d x %d B: %d datagrams arrived", c.n, c.seg, len(got))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("%d x %d B: datagram %d differs (%d bytes, want %d)", c.n, c.seg, i, len(got[i]), len(want[i]))
			}
		}
		if d, w := tx.s.Stats().GSOFramesOut-gso0, uint64(min(c.n-1, 1)); d != w {
			t.Fatalf("%d x %d B: %d GSO frames, want %d", c.n, c.seg, d, w)
		}
	}
	if pieces, _ := gatherPieces(1472, 45, 0, 1); true {
		if _, err := tx.WriteRunGather(netip.AddrPort{}, 1472, pieces); !errors.Is(err, ErrMessageTooLong) {
			t.Errorf("45 x 1472 B: %v, want ErrMessageTooLong", err)
		}
	}
	if _, err := tx.WriteRunGather(netip.AddrPort{}, 1472, nil); !errors.Is(err, ErrMessageTooLong) {
		t.Errorf("nothing to send: %v, want ErrMessageTooLong", err)
	}
	tx.SetGSO(false)
	pieces, want := gatherPieces(500, 3, 20, 9)
	if _, err := tx.WriteRunGather(netip.AddrPort{}, 500, pieces); !errors.Is(err, ErrMessageTooLong) {
		t.Errorf("a run of 3 without GSO: %v, want ErrMessageTooLong", err)
	}
	if got, err := tx.WriteRunGather(netip.AddrPort{}, 500, pieces[:2]); got != 1 || err != nil {
		t.Fatalf("a run of one without GSO: %d, %v", got, err)
	}
	if g := readDatagrams(t, rx, 1); !bytes.Equal(g[0], want[0]) {
		t.Fatal("a run of one without GSO differs")
	}
	tx.Close()
	if _, err := tx.WriteRunGather(netip.AddrPort{}, 500, pieces); !errors.Is(err, ErrClosed) {
		t.Errorf("on a closed socket: %v", err)
	}
}

// TestWriteRunGatherAllocs: a gathered run allocates nothing.
func TestWriteRunGatherAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	tx, rx := connected(t, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Depth: 1 << 16})
	pieces, _ := gatherPieces(1472, 44, 100, 1)
	msgs := make([]Message, 64)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 2048)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := tx.WriteRunGather(netip.AddrPort{}, 1472, pieces); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < 44; {
			n, err := rx.ReadBatch(msgs)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per gathered run, want 0", allocs)
	}
}
