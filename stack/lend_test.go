package stack

import (
	"bytes"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

// lendingLink is a mem link that lends its receive buffers as afpacket's
// RxRecvmmsg path does: every frame is copied into a slot of a small pool
// (standing in for the kernel's write) that no one holds and the current
// batch does not use; limit bounds the slots out on loan. With reorder,
// every batch's frames go up in pairs swapped (the second of each pair
// first), as a kernel sender transmitting from two CPUs delivers them.
type lendingLink struct {
	link.Link
	limit   int32
	reorder bool
	slots   [16]struct {
		buf   []byte
		refs  atomic.Int32
		batch bool // delivered by the last ReadBatch (receive goroutine only)
	}
	held  atomic.Int32
	next  int
	inner []link.Frame
}

var _ link.Lender = (*lendingLink)(nil)

func newLendingLink(l link.Link, limit int32) *lendingLink {
	w := &lendingLink{Link: l, limit: limit, inner: make([]link.Frame, 8)}
	for i := range w.slots {
		w.slots[i].buf = make([]byte, 70000)
	}
	return w
}

func (w *lendingLink) ReadBatch(frames []link.Frame) (int, error) {
	for i := range w.slots {
		w.slots[i].batch = false
	}
	n, err := w.Link.ReadBatch(w.inner[:min(len(frames), len(w.inner))])
	for i := range n {
		slot := -1
		for range len(w.slots) {
			j := w.next
			w.next = (w.next + 1) % len(w.slots)
			if !w.slots[j].batch && w.slots[j].refs.Load() == 0 {
				slot = j
				break
			}
		}
		if slot < 0 { // 8 per batch + limit on loan < 16
			panic("lendingLink: no free slot")
		}
		f := w.inner[i]
		w.slots[slot].batch = true
		b := w.slots[slot].buf[:3+len(f.Buf)]
		copy(b[3:], f.Buf)
		frames[i] = link.Frame{Buf: b[3:], VNet: f.VNet, Loan: uint32(slot + 1), LoanOff: 3}
	}
	if w.reorder {
		for i := 0; i+1 < n; i += 2 {
			frames[i], frames[i+1] = frames[i+1], frames[i]
		}
	}
	return n, err
}

func (w *lendingLink) Hold(loan uint32, n int) bool {
	s := &w.slots[loan-1]
	if s.refs.Load() == 0 {
		if w.held.Load() >= w.limit {
			return false
		}
		w.held.Add(1)
	}
	s.refs.Add(int32(n))
	return true
}

func (w *lendingLink) Release(loan uint32, n int) {
	switch r := w.slots[loan-1].refs.Add(-int32(n)); {
	case r == 0:
		w.held.Add(-1)
	case r < 0:
		panic("lendingLink: released more than held")
	}
}

func (w *lendingLink) LoanBuf(loan uint32) []byte { return w.slots[loan-1].buf }

// lentConnected is connected with rx's stack on a lendingLink.
func lentConnected(t *testing.T, limit int32) (tx, rx *UDPConn, l *lendingLink) {
	la, lb := mem.Pair(macA, macB, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Depth: 4096})
	l = newLendingLink(la, limit)
	a, err := New(l, Config{Addr: netip.PrefixFrom(ipA, 24)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(lb, Config{Addr: netip.PrefixFrom(ipB, 24)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	if rx, err = a.ListenUDP(netip.AddrPortFrom(ipA, 8000)); err != nil {
		t.Fatal(err)
	}
	if tx, err = b.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(ipA, 8000)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	tx.Write([]byte("warm")) // ARP both ways
	rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := rx.ReadFromUDPAddrPort(buf); err != nil {
		t.Fatal(err)
	}
	rx.SetReadDeadline(time.Time{})
	return tx, rx, l
}

// sendRun writes n datagrams of size bytes as one GSO super-frame.
func sendRun(t *testing.T, tx *UDPConn, n, size int, tag byte) []Message {
	out := make([]Message, n)
	for i := range out {
		out[i].Buf = pattern(size, tag+byte(i))
	}
	if _, err := tx.WriteBatch(out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLentViews: a GSO super-frame's datagrams are queued where the link
// received them (the views alias the link's buffer, not the ring), come
// out intact and in order through ReadViews and ReadBatch, and every hold
// goes back to the link once they are read.
func TestLentViews(t *testing.T) {
	tx, rx, l := lentConnected(t, 4)
	lent0 := rx.s.Stats().LentFramesIn
	out := sendRun(t, tx, 40, 1000, 0)
	views := make([]View, 16)
	got := 0
	for got < 20 {
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := rx.ReadViews(views[:min(len(views), 20-got)])
		if err != nil {
			t.Fatal(err)
		}
		for i := range views[:n] {
			if !bytes.Equal(views[i].Payload, out[got].Buf) {
				t.Fatalf("datagram %d: wrong content", got)
			}
			if cap(views[i].Payload) != len(views[i].Payload) {
				t.Fatal("a view may be appended to, over the next datagram")
			}
			got++
		}
		p := &views[0].Payload[0]
		in := false
		for i := range l.slots {
			b := l.slots[i].buf
			in = in || (p == &b[3+udpFrameHeaders+(got-n)*1000])
		}
		if !in {
			t.Fatal("the view is not where the link received the datagram")
		}
		rx.Release()
	}
	msgs := make([]Message, 64)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 2048)
	}
	for got < len(out) {
		n, err := rx.ReadBatch(msgs)
		if err != nil {
			t.Fatal(err)
		}
		for i := range msgs[:n] {
			if !bytes.Equal(msgs[i].Buf[:msgs[i].N], out[got].Buf) {
				t.Fatalf("datagram %d: wrong content", got)
			}
			got++
		}
	}
	if d := rx.s.Stats().LentFramesIn - lent0; d != 1 {
		t.Fatalf("%d super-frames lent, want 1", d)
	}
	if h := l.held.Load(); h != 0 {
		t.Fatalf("%d buffers still on loan after everything was read", h)
	}
}

// TestLentSmall: a run of small datagrams is copied, not lent.
func TestLentSmall(t *testing.T) {
	tx, rx, l := lentConnected(t, 4)
	out := sendRun(t, tx, 40, lendMinSegment-1, 0)
	msgs := make([]Message, 64)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 2048)
	}
	for got := 0; got < len(out); {
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := rx.ReadBatch(msgs)
		if err != nil {
			t.Fatal(err)
		}
		for i := range msgs[:n] {
			if !bytes.Equal(msgs[i].Buf[:msgs[i].N], out[got].Buf) {
				t.Fatalf("datagram %d: wrong content", got)
			}
			got++
		}
	}
	if lent := rx.s.Stats().LentFramesIn; lent != 0 || l.held.Load() != 0 {
		t.Fatalf("%d super-frames of %d B datagrams lent", lent, lendMinSegment-1)
	}
}

// TestLentRefused: when the link lends no more, datagrams are copied into
// the ring instead, intact; loans and copies interleave in order.
func TestLentRefused(t *testing.T) {
	tx, rx, l := lentConnected(t, 2)
	var want [][]byte
	for r := range 6 { // 2 lent, then copied
		for _, m := range sendRun(t, tx, 30, 700, byte(r*30)) {
			want = append(want, m.Buf)
		}
	}
	msgs := make([]Message, 7)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 2048)
	}
	for got := 0; got < len(want); {
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := rx.ReadBatch(msgs)
		if err != nil {
			t.Fatalf("after %d: %v", got, err)
		}
		for i := range msgs[:n] {
			if !bytes.Equal(msgs[i].Buf[:msgs[i].N], want[got]) {
				t.Fatalf("datagram %d: wrong content", got)
			}
			got++
		}
	}
	if lent := rx.s.Stats().LentFramesIn; lent < 2 || lent > 6 {
		t.Fatalf("%d super-frames lent", lent)
	}
	if h := l.held.Load(); h != 0 {
		t.Fatalf("%d buffers still on loan", h)
	}
}

// TestLentClose: a socket closed with lent datagrams queued, or with views
// out, gives every buffer back.
func TestLentClose(t *testing.T) {
	for _, viewsOut := range []bool{false, true} {
		tx, rx, l := lentConnected(t, 4)
		sendRun(t, tx, 40, 1000, 0)
		sendRun(t, tx, 40, 1000, 0)
		deadline := time.Now().Add(5 * time.Second)
		for l.held.Load() < 2 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if l.held.Load() < 2 {
			t.Fatalf("%d buffers lent, want 2", l.held.Load())
		}
		if viewsOut {
			views := make([]View, 4)
			if _, err := rx.ReadViews(views); err != nil {
				t.Fatal(err)
			}
			rx.Close() // the reader still holds rmu: it gives back at Release
			if l.held.Load() == 0 {
				t.Fatal("buffers given back under the reader's views")
			}
			rx.Release()
		} else {
			rx.Close()
		}
		if h := l.held.Load(); h != 0 {
			t.Fatalf("views out %v: %d buffers still on loan after Close", viewsOut, h)
		}
	}
}

// TestLentConcurrent: TestReadViewsConcurrent's readers on a lending link
// (run it with -race).
func TestLentConcurrent(t *testing.T) {
	tx, rx, l := lentConnected(t, 6)
	readViewsConcurrent(t, tx, rx, 600)
	deadline := time.Now().Add(5 * time.Second)
	for l.held.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if h := l.held.Load(); h != 0 {
		t.Fatalf("%d buffers on loan after Close", h)
	}
	if rx.s.Stats().LentFramesIn == 0 {
		t.Fatal("nothing was lent")
	}
}
