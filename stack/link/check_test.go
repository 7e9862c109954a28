package link

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheckFrames(t *testing.T) {
	const mtu = 1500
	frame := func(n int, v VNetHdr) Frame { return Frame{Buf: make([]byte, n), VNet: v} }
	gso := VNetHdr{Flags: VNetNeedsCsum, GSOType: GSOUDPL4, GSOSize: 1472}
	csum := VNetHdr{Flags: VNetNeedsCsum}
	for _, c := range []struct {
		name     string
		maxFrame int
		caps     Caps
		bad      Frame
		want     error
	}{
		{"runt", 65550, CapVNetHdr | CapGSO, frame(13, VNetHdr{}), ErrFrameTooShort},
		{"runt without caps", mtu + 14, 0, frame(0, VNetHdr{}), ErrFrameTooShort},
		{"above MaxFrame", 65550, CapVNetHdr | CapGSO, frame(65551, gso), ErrFrameTooLong},
		{"above MaxFrame without caps", mtu + 14, 0, frame(mtu+15, VNetHdr{}), ErrFrameTooLong},
		{"long without GSO", 65550, CapVNetHdr | CapGSO, frame(mtu+15, VNetHdr{}), ErrNotGSO},
		{"long with ECN bit only", 65550, CapVNetHdr | CapGSO, frame(mtu+15, VNetHdr{GSOType: GSOECN}), ErrNotGSO},
		{"partial checksum without CapVNetHdr", mtu + 14, 0, frame(100, csum), ErrNoOffload},
		{"GSO without CapVNetHdr", mtu + 14, 0, frame(100, VNetHdr{GSOType: GSOECN}), ErrNoOffload},
	} {
		good := frame(60, VNetHdr{})
		n, err := CheckFrames([]Frame{good, good, c.bad, good}, mtu, c.maxFrame, c.caps)
		if n != 2 || !errors.Is(err, c.want) {
			t.Errorf("%s: CheckFrames = %d, %v; want 2, %v", c.name, n, err, c.want)
		}
	}
	for _, c := range []struct {
		name     string
		maxFrame int
		caps     Caps
		frames   []Frame
	}{
		{"GSO super-frame", 65550, CapVNetHdr | CapGSO, []Frame{frame(65550, gso), frame(14, VNetHdr{})}},
		{"partial checksum", 65550, CapVNetHdr | CapGSO, []Frame{frame(mtu+14, csum)}},
		{"full-size plain", mtu + 14, 0, []Frame{frame(mtu+14, VNetHdr{}), frame(60, VNetHdr{Flags: VNetDataValid})}},
		{"empty batch", mtu + 14, 0, nil},
	} {
		if n, err := CheckFrames(c.frames, mtu, c.maxFrame, c.caps); n != len(c.frames) || err != nil {
			t.Errorf("%s: CheckFrames = %d, %v; want %d, nil", c.name, n, err, len(c.frames))
		}
	}
}

// TestTxBackoffBudget: Wait counts every retry, gives up with ErrTxStalled
// once the budget is spent, and starts afresh after Reset.
func TestTxBackoffBudget(t *testing.T) {
	var retries atomic.Uint64
	b := NewTxBackoff(20*time.Millisecond, &retries)
	start := time.Now()
	var err error
	for err == nil && time.Since(start) < 5*time.Second {
		err = b.Wait()
	}
	if !errors.Is(err, ErrTxStalled) {
		t.Fatalf("Wait kept returning %v for %v", err, time.Since(start))
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("gave up after %v, before the 20 ms budget", d)
	}
	if retries.Load() < 5 {
		t.Fatalf("%d retries counted before giving up", retries.Load())
	}
	b.Reset()
	if err := b.Wait(); err != nil {
		t.Fatalf("Wait after Reset: %v", err)
	}
	var zero TxBackoff // no counter: Wait must not need one
	if err := zero.Wait(); err != nil {
		t.Fatalf("zero TxBackoff, first Wait: %v", err)
	}
}
