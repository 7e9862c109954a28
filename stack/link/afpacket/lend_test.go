package afpacket

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/netstation/netstation/internal/linktest"
	"github.com/netstation/netstation/stack/link"
)

// TestLend: RxRecvmmsg lends its receive buffers. A held frame's bytes
// stay put while the link reads hundreds more frames into other buffers;
// the link lends at most lendLimit buffers and keeps receiving when it
// refuses; every buffer comes back on Release.
func TestLend(t *testing.T) {
	w := linktest.NewPair(t, 1500)
	la := open(t, w.A, "vA", Options{Tx: TxSendmmsg})
	lb := open(t, w.B, "vB", Options{})
	seq := uint32(0)
	send := func(n int) {
		t.Helper()
		batch := make([]link.Frame, n)
		for i := range batch {
			batch[i].Buf = linktest.Frame(lb.HardwareAddr(), la.HardwareAddr(), 60+int(seq)%1400, seq)
			seq++
		}
		if _, err := la.WriteBatch(batch); err != nil {
			t.Fatal(err)
		}
	}
	frames := make([]link.Frame, 64)
	// recv reads until want test frames came, calling fn on each.
	recv := func(want int, fn func(f *link.Frame)) {
		t.Helper()
		for got := 0; got < want; {
			n, err := lb.ReadBatch(frames)
			if err != nil {
				t.Fatal(err)
			}
			for i := range frames[:n] {
				if linktest.IsTest(frames[i].Buf) {
					fn(&frames[i])
					got++
				}
			}
		}
	}
	type held struct {
		loan, off uint32
		data      []byte
	}
	var out []held
	send(1)
	recv(1, func(f *link.Frame) {
		if f.Loan == 0 || !bytes.Equal(lb.LoanBuf(f.Loan)[f.LoanOff:int(f.LoanOff)+len(f.Buf)], f.Buf) {
			t.Fatalf("frame not where its loan says (loan %d off %d)", f.Loan, f.LoanOff)
		}
		if !lb.Hold(f.Loan, 2) {
			t.Fatal("the first hold was refused")
		}
		out = append(out, held{f.Loan, f.LoanOff, append([]byte(nil), f.Buf...)})
	})
	refused := 0
	for range 10 { // 640 frames: more than the pool's 256 buffers
		send(64)
		recv(64, func(f *link.Frame) {
			for _, h := range out {
				if f.Loan == h.loan {
					t.Fatalf("frame %d read into buffer %d, which is on loan", binary.BigEndian.Uint32(f.Buf[14:]), h.loan)
				}
			}
			if lb.Hold(f.Loan, 1) {
				out = append(out, held{f.Loan, f.LoanOff, append([]byte(nil), f.Buf...)})
			} else {
				refused++
			}
		})
	}
	if len(out) != lendLimit || refused != 640+1-lendLimit || lb.LentBuffers() != lendLimit {
		t.Fatalf("%d held, %d refused, %d on loan; want %d held", len(out), refused, lb.LentBuffers(), lendLimit)
	}
	for _, h := range out {
		if !bytes.Equal(lb.LoanBuf(h.loan)[h.off:int(h.off)+len(h.data)], h.data) {
			t.Fatalf("buffer %d was overwritten while on loan", h.loan)
		}
	}
	lb.Release(out[0].loan, 1) // the first has two holds
	for _, h := range out {
		lb.Release(h.loan, 1)
	}
	if n := lb.LentBuffers(); n != 0 {
		t.Fatalf("%d buffers on loan after every release", n)
	}
	send(64) // the freed buffers take frames again
	recv(64, func(f *link.Frame) {})
}

// TestBatchBytes: once recvmmsg has returned GSO super-frames, the next
// calls ask for no more than rxSockBatchBytes of them (a batch of 64
// would be 4 MiB, more than L2: the copy and the reader would miss),
// and every frame still arrives, in order.
func TestBatchBytes(t *testing.T) {
	w := linktest.NewPair(t, 1500)
	la := open(t, w.A, "vA", Options{})
	lb := open(t, w.B, "vB", Options{ReceiveBuffer: 64 << 20})
	const count, payload = 100, 44 * 1400
	var want []uint32
	for i := range count {
		f := linktest.UDPFrame(w.MACB, w.MACA, [4]byte{10, 1, 1, 1}, [4]byte{10, 1, 1, 2}, 1000, 2000, linktest.Pattern(payload, byte(i)), true, 1400)
		if _, err := la.WriteBatch([]link.Frame{f}); err != nil {
			t.Fatal(err)
		}
		want = append(want, uint32(i))
	}
	frames := make([]link.Frame, 64)
	got, batches := 0, 0
	for got < count {
		n, err := lb.ReadBatch(frames)
		if err != nil {
			t.Fatal(err)
		}
		bytes, big := 0, 0
		for _, f := range frames[:n] {
			if len(f.Buf) < payload {
				continue // not ours (IPv6 noise and the like)
			}
			if f.Buf[42] != byte(got) {
				t.Fatalf("frame %d: payload of frame %d", got, f.Buf[42])
			}
			bytes += len(f.Buf)
			big++
			got++
		}
		if batches > 0 && bytes > rxSockBatchBytes {
			t.Fatalf("batch %d: %d super-frames, %d bytes (at most %d after the first)", batches, big, bytes, rxSockBatchBytes)
		}
		if big > 0 {
			batches++
		}
	}
	// The first batch may take rxSockBatch frames (nothing told the link
	// they are big yet); the rest go rxSockBatchBytes at a time.
	if least := 1 + (count-rxSockBatch)*(payload+42)/rxSockBatchBytes; batches < least {
		t.Fatalf("%d super-frames in %d batches, want at least %d", count, batches, least)
	}
}
