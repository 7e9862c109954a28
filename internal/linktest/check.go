package linktest

import (
	"errors"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
)

// CheckNoAllocs fails t unless a steady-state round (tx writes 16 EtherTest
// frames from src to dst, rx reads them all) allocates nothing.
func CheckNoAllocs(t testing.TB, tx, rx link.Link, dst, src net.HardwareAddr) {
	t.Helper()
	batch := make([]link.Frame, 16)
	for i := range batch {
		batch[i].Buf = Frame(dst, src, 60+i*90, uint32(i))
	}
	frames := make([]link.Frame, 64)
	round := func() {
		if _, err := tx.WriteBatch(batch); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(batch); {
			n, err := rx.ReadBatch(frames)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	}
	round()
	if a := testing.AllocsPerRun(200, round); a != 0 {
		t.Fatalf("%v allocations per write+read round", a)
	}
}

// CheckCloseUnblocksRead fails t unless Close wakes a ReadBatch blocked on
// the idle link l with link.ErrClosed, later calls return link.ErrClosed,
// and the goroutine count falls back to before (taken before l was
// opened).
func CheckCloseUnblocksRead(t testing.TB, l link.Link, before int) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		frames := make([]link.Frame, 8)
		for {
			if _, err := l.ReadBatch(frames); err != nil {
				errc <- err
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, link.ErrClosed) {
			t.Fatalf("ReadBatch after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock ReadBatch")
	}
	if _, err := l.WriteBatch([]link.Frame{{Buf: make([]byte, 60)}}); !errors.Is(err, link.ErrClosed) {
		t.Fatalf("WriteBatch after Close: %v", err)
	}
	if _, err := l.ReadBatch(make([]link.Frame, 1)); !errors.Is(err, link.ErrClosed) {
		t.Fatalf("ReadBatch after Close: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before {
		t.Fatalf("%d goroutines after Close, %d before Open", g, before)
	}
}
