package disk

import "testing"

// TestInFlight: a transfer's window of unanswered tile windows halves on
// loss (never below one), grows back by one per clean frame, and never
// exceeds TransferInFlight.
func TestInFlight(t *testing.T) {
	w := inFlight{TransferInFlight}
	if w.windows() != TransferInFlight {
		t.Fatalf("starts at %d", w.windows())
	}
	w.clean()
	if w.windows() != TransferInFlight {
		t.Fatalf("grew past %d: %d", TransferInFlight, w.windows())
	}
	want := TransferInFlight
	for w.windows() > 1 {
		if !w.lost() {
			t.Fatal("a loss above one window did not cut it")
		}
		want = max(1, want/2)
		if w.windows() != want {
			t.Fatalf("after a loss: %d, want %d", w.windows(), want)
		}
	}
	if w.lost() || w.windows() != 1 {
		t.Fatalf("cut below one window: %d", w.windows())
	}
	for i := 2; i <= TransferInFlight; i++ {
		w.clean()
		if w.windows() != i {
			t.Fatalf("clean frame %d: %d windows, want %d", i-1, w.windows(), i)
		}
	}
}
