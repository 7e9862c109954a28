package afpacket

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"
	"unsafe"

	"github.com/netstation/netstation/internal/linktest"
	"github.com/netstation/netstation/stack/link"
)

// frameRingPair opens a sender on vA and an RxFrameRing link with o on vB.
func frameRingPair(t *testing.T, o Options) (w *linktest.Pair, la, lb *Link) {
	w = linktest.NewPair(t, 1500)
	la = open(t, w.A, "vA", Options{Tx: TxSendmmsg})
	o.Rx = RxFrameRing
	lb = open(t, w.B, "vB", o)
	return w, la, lb
}

// gsoFrame is a UDP_L4 super-frame whose payload starts with seq.
func gsoFrame(w *linktest.Pair, seq uint32, payload int) link.Frame {
	p := linktest.Pattern(payload, byte(seq))
	binary.BigEndian.PutUint32(p, seq)
	return linktest.UDPFrame(w.MACB, w.MACA, [4]byte{10, 1, 1, 1}, [4]byte{10, 1, 1, 2}, 1000, 2000, p, true, 1400)
}

// TestFrameRingViewsAndLoans: RxFrameRing hands small frames over where
// the kernel wrote them in the ring (no loan: valid until the next
// ReadBatch) and frames longer than a slot, queued whole by the kernel
// (TP_STATUS_COPY), in lendable pool buffers; both kinds keep their order.
// A held super-frame's bytes stay put while many more arrive, and every
// buffer comes back on Release.
func TestFrameRingViewsAndLoans(t *testing.T) {
	w, la, lb := frameRingPair(t, Options{ReceiveBuffer: 64 << 20})
	const rounds, payload = 300, 20000
	frames := make([]link.Frame, 64)
	type held struct {
		loan, off uint32
		data      []byte
	}
	var out []held
	next := 0 // the sequence number expected next, small and big alternating
	for r := range rounds {
		batch := []link.Frame{
			{Buf: linktest.Frame(w.MACB, w.MACA, 60+r%1400, uint32(2*r))},
			gsoFrame(w, uint32(2*r+1), payload),
		}
		if _, err := la.WriteBatch(batch); err != nil {
			t.Fatal(err)
		}
		for next < 2*r+2 {
			n, err := lb.ReadBatch(frames)
			if err != nil {
				t.Fatal(err)
			}
			for i := range frames[:n] {
				f := &frames[i]
				switch {
				case linktest.IsTest(f.Buf):
					if seq := binary.BigEndian.Uint32(f.Buf[14:]); seq != uint32(next) {
						t.Fatalf("small frame %d where %d was due", seq, next)
					}
					if f.Loan != 0 {
						t.Fatalf("small frame %d lent (%d): it should be a view of the ring", next, f.Loan)
					}
					if p := uintptr(unsafe.Pointer(&f.Buf[0])); p < uintptr(unsafe.Pointer(&lb.fr.mem[0])) || p >= uintptr(unsafe.Pointer(&lb.fr.mem[0]))+uintptr(len(lb.fr.mem)) {
						t.Fatalf("small frame %d not in the ring", next)
					}
				case len(f.Buf) == 42+payload:
					if seq := binary.BigEndian.Uint32(f.Buf[42:]); seq != uint32(next) {
						t.Fatalf("super-frame %d where %d was due", seq, next)
					}
					if !bytes.Equal(f.Buf, batch[1].Buf) || f.VNet.GSOType != link.GSOUDPL4 || f.VNet.GSOSize != 1400 {
						t.Fatalf("super-frame %d: content or vnet header (%+v) differs", next, f.VNet)
					}
					if f.Loan == 0 || !bytes.Equal(lb.LoanBuf(f.Loan)[f.LoanOff:int(f.LoanOff)+len(f.Buf)], f.Buf) {
						t.Fatalf("super-frame not where its loan says (loan %d off %d)", f.Loan, f.LoanOff)
					}
					if r%3 == 0 && lb.Hold(f.Loan, 1) {
						out = append(out, held{f.Loan, f.LoanOff, append([]byte(nil), f.Buf...)})
					}
				default:
					continue // not ours
				}
				next++
			}
		}
	}
	// A burst of super-frames read after it all arrived: runs of
	// TP_STATUS_COPY slots, taken a run per recvmmsg, in order and whole.
	var burst []link.Frame
	for i := range 100 {
		burst = append(burst, gsoFrame(w, uint32(next+i), payload))
	}
	if _, err := la.WriteBatch(burst); err != nil {
		t.Fatal(err)
	}
	for got := 0; got < len(burst); {
		n, err := lb.ReadBatch(frames)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames[:n] {
			if len(f.Buf) != 42+payload {
				continue
			}
			if !bytes.Equal(f.Buf, burst[got].Buf) || f.Loan == 0 {
				t.Fatalf("burst frame %d: seq %d, loan %d", got, binary.BigEndian.Uint32(f.Buf[42:]), f.Loan)
			}
			got++
		}
	}
	if len(out) < 50 {
		t.Fatalf("only %d super-frames held", len(out))
	}
	for _, h := range out {
		if !bytes.Equal(lb.LoanBuf(h.loan)[h.off:int(h.off)+len(h.data)], h.data) {
			t.Fatalf("buffer %d was overwritten while on loan", h.loan)
		}
		lb.Release(h.loan, 1)
	}
	if n := lb.LentBuffers(); n != 0 {
		t.Fatalf("%d buffers on loan after every release", n)
	}
	if st := lb.Stats(); st.RxTruncated != 0 || st.RingDrops != 0 {
		t.Fatalf("truncated %d dropped %d", st.RxTruncated, st.RingDrops)
	}
}

// TestFrameRingCutFramesCounted: super-frames the kernel can neither fit
// in a slot nor queue (the receive buffer is full while the reader is
// away) arrive cut short: they are counted (RxTruncated), never
// delivered, and the frames around them still arrive intact and in order.
func TestFrameRingCutFramesCounted(t *testing.T) {
	w, la, lb := frameRingPair(t, Options{RingFrames: 64, ReceiveBuffer: 1})
	const big, payload = 40, 30000
	for i := range big { // the reader is away: the copies pile up
		if _, err := la.WriteBatch([]link.Frame{gsoFrame(w, uint32(i), payload)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := la.WriteBatch([]link.Frame{{Buf: linktest.Frame(w.MACB, w.MACA, 60, 7)}}); err != nil {
		t.Fatal(err)
	}
	frames := make([]link.Frame, 64)
	last := -1
	gotSmall := false
	deadline := time.Now().Add(5 * time.Second)
	for !gotSmall {
		if time.Now().After(deadline) {
			t.Fatal("the small frame after the super-frames did not arrive")
		}
		n, err := lb.ReadBatch(frames)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames[:n] {
			switch {
			case linktest.IsTest(f.Buf):
				gotSmall = true
			case len(f.Buf) == 42+payload:
				seq := int(binary.BigEndian.Uint32(f.Buf[42:]))
				if seq <= last || !bytes.Equal(f.Buf, gsoFrame(w, uint32(seq), payload).Buf) {
					t.Fatalf("super-frame %d after %d, or corrupt", seq, last)
				}
				last = seq
			case len(f.Buf) > 1514:
				t.Fatalf("a %d-byte frame delivered", len(f.Buf))
			}
		}
	}
	st := lb.Stats()
	if st.RxTruncated == 0 || st.RxTruncated+uint64(last+1) > big {
		t.Fatalf("%d super-frames cut, the last delivered %d, of %d", st.RxTruncated, last, big)
	}
	t.Logf("%d of %d super-frames cut and counted, %d delivered", st.RxTruncated, big, last+1)
}

// FuzzFrameRing feeds arbitrary bytes as the slots of a TPACKET_V2 ring,
// each slot's status word taken from the input: walking them must never
// read outside a slot, panic or deliver a frame that is not in the ring,
// and every walked slot must be counted either as delivered or as cut.
// TP_STATUS_COPY slots find no queued frame here (no socket) and count as
// cut.
func FuzzFrameRing(f *testing.F) {
	seed := make([]byte, 4*frameSlotSize)
	for i := range 3 {
		s := seed[i*frameSlotSize:]
		binary.LittleEndian.PutUint32(s[v2Status:], tpStatusUser)
		binary.LittleEndian.PutUint32(s[v2Len:], 60)
		binary.LittleEndian.PutUint32(s[v2Snaplen:], 60)
		binary.LittleEndian.PutUint16(s[v2Mac:], 90)
	}
	f.Add(seed)
	f.Add(seed[:frameSlotSize+40])
	f.Fuzz(func(t *testing.T, in []byte) {
		const slots = 4
		l := &Link{fr: frameRing{fd: -1}}
		l.fr.mem = make([]byte, slots*frameSlotSize)
		copy(l.fr.mem, in)
		l.fr.slots = slots
		frames := make([]link.Frame, 3)
		var held []int
		walked := 0
		for range 3 {
			n := l.takeFrames(frames, &held, true)
			if n > len(held) || len(held) > len(frames) {
				t.Fatalf("%d frames from %d slots", n, len(held))
			}
			lo := uintptr(unsafe.Pointer(&l.fr.mem[0]))
			for _, fr := range frames[:n] {
				p := uintptr(unsafe.Pointer(&fr.Buf[0]))
				if len(fr.Buf) < 14 || p < lo || p+uintptr(len(fr.Buf)) > lo+uintptr(len(l.fr.mem)) {
					t.Fatalf("frame of %d bytes at ring offset %d", len(fr.Buf), p-lo)
				}
				slotEnd := ((p-lo)/frameSlotSize + 1) * frameSlotSize
				if p-lo+uintptr(len(fr.Buf)) > slotEnd {
					t.Fatalf("frame crosses its slot")
				}
			}
			walked += len(held)
			if l.rxFrames.Load()+l.rxTrunc.Load() != uint64(walked) {
				t.Fatalf("%d slots walked, counted %d delivered and %d cut", walked, l.rxFrames.Load(), l.rxTrunc.Load())
			}
			l.fr.giveBackSlots(&held)
		}
	})
}

// TestFrameRingCloseWhilePolling: Close while pollers and the reader take
// small frames and super-frames (whose recvmmsg uses the socket) off the
// ring: Close waits for the pollers, which then get ErrClosed, and nothing
// reads the ring or the descriptor after (run with -race).
func TestFrameRingCloseWhilePolling(t *testing.T) {
	w, la, lb := frameRingPair(t, Options{ReceiveBuffer: 64 << 20})
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() { // sender until told to stop
		defer close(sent)
		for i := uint32(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			la.WriteBatch([]link.Frame{{Buf: linktest.Frame(w.MACB, w.MACA, 60, i)}, gsoFrame(w, i, 9000)})
		}
	}()
	done := make(chan error, 3)
	for range 2 {
		go func() {
			frames := make([]link.Frame, 8)
			for {
				if _, err := lb.PollBatch(frames, func([]link.Frame) {}); err != nil {
					done <- err
					return
				}
			}
		}()
	}
	go func() {
		frames := make([]link.Frame, 64)
		for {
			if _, err := lb.ReadBatch(frames); err != nil {
				done <- err
				return
			}
		}
	}()
	// Close with the pollers and the reader at work: wait until they
	// have received something (a fixed 200 ms could pass on a loaded
	// machine before the sender had sent a frame).
	for deadline := time.Now().Add(10 * time.Second); lb.Stats().RxFrames == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("nothing received in 10 s before Close")
		}
	}
	lb.Close()
	for range 3 {
		select {
		case err := <-done:
			if !errors.Is(err, link.ErrClosed) {
				t.Fatalf("after Close: %v, want link.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a poller or the reader did not stop after Close")
		}
	}
	close(stop)
	<-sent
}
