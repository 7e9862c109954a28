package impair

import (
	"net"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

func pair(t *testing.T) (*Link, *mem.Link) {
	a, b := mem.Pair(net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}, mem.Options{Depth: 1 << 16})
	t.Cleanup(func() { a.Close() })
	return Wrap(a), b
}

func frame(i int) link.Frame {
	b := make([]byte, 100)
	b[99] = byte(i)
	b[98] = byte(i >> 8)
	return link.Frame{Buf: b}
}

// drain reads everything the peer received until quiet.
func drain(t *testing.T, b *mem.Link, want int) [][]byte {
	var got [][]byte
	frames := make([]link.Frame, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(got) < want {
			n, err := b.ReadBatch(frames)
			if err != nil {
				return
			}
			for _, f := range frames[:n] {
				got = append(got, append([]byte(nil), f.Buf...))
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	return got
}

func TestLossRateAndDeterminism(t *testing.T) {
	const n = 20000
	var counts []uint64
	for run := 0; run < 2; run++ {
		w, _ := pair(t)
		w.Set(Params{LossPPM: 50_000, Seed: 7})
		// Discard the peer's reads; only count drops.
		for i := 0; i < n; i++ {
			if _, err := w.WriteBatch([]link.Frame{frame(i)}); err != nil {
				t.Fatal(err)
			}
		}
		counts = append(counts, w.Counters().TxDropped)
	}
	if counts[0] != counts[1] {
		t.Errorf("same seed, different drops: %v", counts)
	}
	rate := float64(counts[0]) / n
	if rate < 0.04 || rate > 0.06 {
		t.Errorf("loss %.3f, want 0.05 +/- 0.01", rate)
	}
}

func TestDownAndUp(t *testing.T) {
	w, b := pair(t)
	w.Set(Params{Down: true})
	w.WriteBatch([]link.Frame{frame(1)})
	w.Set(Params{})
	w.WriteBatch([]link.Frame{frame(2)})
	got := drain(t, b, 1)
	if len(got) != 1 || got[0][99] != 2 {
		t.Fatalf("got %d frames", len(got))
	}
}

func TestDelayKeepsOrderAndTime(t *testing.T) {
	w, b := pair(t)
	w.Set(Params{Delay: 20 * time.Millisecond})
	t0 := time.Now()
	for i := 0; i < 100; i++ {
		w.WriteBatch([]link.Frame{frame(i)})
	}
	got := drain(t, b, 100)
	el := time.Since(t0)
	if len(got) != 100 {
		t.Fatalf("got %d frames", len(got))
	}
	for i, g := range got {
		if int(g[99])|int(g[98])<<8 != i {
			t.Fatalf("frame %d out of order", i)
		}
	}
	if el < 20*time.Millisecond {
		t.Errorf("delivered after %v, want >= 20ms", el)
	}
}

func TestCorruptFlipsPayload(t *testing.T) {
	w, b := pair(t)
	w.Set(Params{CorruptPPM: 1_000_000, Seed: 1})
	f := frame(0)
	orig := append([]byte(nil), f.Buf...)
	w.WriteBatch([]link.Frame{f})
	got := drain(t, b, 1)
	if len(got) != 1 {
		t.Fatal("no frame")
	}
	diff := 0
	for i := range orig {
		if orig[i] != got[0][i] {
			if i < 42 {
				t.Errorf("header byte %d corrupted", i)
			}
			diff++
		}
	}
	if diff != 1 {
		t.Errorf("%d bytes differ, want 1", diff)
	}
	if string(orig) != string(f.Buf) {
		t.Error("caller's buffer was modified")
	}
}

// TestPollPassesThrough: with nothing impaired on receive, pollers take
// frames from the wrapped link; with loss, corruption or the link down
// they are told no (link.ErrNoPoll), so every frame goes through
// ReadBatch's impairments.
func TestPollPassesThrough(t *testing.T) {
	a, b := mem.Pair(net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}, mem.Options{})
	t.Cleanup(func() { a.Close() })
	w := Wrap(b)
	if _, err := a.WriteBatch([]link.Frame{frame(1)}); err != nil {
		t.Fatal(err)
	}
	frames := make([]link.Frame, 4)
	got := 0
	fn := func(f []link.Frame) { got += len(f) }
	if n, err := w.PollBatch(frames, fn); n != 1 || err != nil || got != 1 {
		t.Fatalf("unimpaired: %d %v, fn saw %d", n, err, got)
	}
	for _, p := range []Params{{LossPPM: 1}, {CorruptPPM: 1}, {Down: true}} {
		w.Set(p)
		if _, err := w.PollBatch(frames, fn); err != link.ErrNoPoll {
			t.Errorf("%+v: %v, want ErrNoPoll", p, err)
		}
	}
	w.Set(Params{Delay: time.Millisecond}) // a delay is on transmit only
	if _, err := w.PollBatch(frames, fn); err != nil {
		t.Errorf("transmit delay only: %v", err)
	}
}
