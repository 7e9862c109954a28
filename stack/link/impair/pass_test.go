package impair

import (
	"errors"
	"net"
	"testing"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

// fastLink is a mem link that gathers and lends, recording the calls.
type fastLink struct {
	*mem.Link
	gathers, holds, releases int
}

func (f *fastLink) WriteGather(link.VNetHdr, [][]byte) error { f.gathers++; return nil }
func (f *fastLink) Hold(uint32, int) bool                    { f.holds++; return true }
func (f *fastLink) Release(uint32, int)                      { f.releases++ }
func (f *fastLink) LoanBuf(uint32) []byte                    { return nil }

// TestPassThrough: the wrapper passes gathered sends and buffer loans
// through to a link that offers them while nothing is impaired; impaired
// (or on a link that cannot), WriteGather says ErrNoGather so the sender
// assembles the frame for WriteBatch, which applies the impairments, and
// Hold refuses.
func TestPassThrough(t *testing.T) {
	a, b := mem.Pair(net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}, mem.Options{})
	defer a.Close()
	defer b.Close()
	f := &fastLink{Link: a}
	w := Wrap(f)
	if err := w.WriteGather(link.VNetHdr{}, [][]byte{make([]byte, 60)}); err != nil || f.gathers != 1 {
		t.Fatalf("unimpaired: %v, %d gathers", err, f.gathers)
	}
	if !w.Hold(1, 2) || f.holds != 1 {
		t.Fatal("a hold did not pass through")
	}
	w.Release(1, 2)
	if f.releases != 1 {
		t.Fatal("a release did not pass through")
	}
	for _, p := range []Params{{LossPPM: 1}, {CorruptPPM: 1}, {Delay: 1}, {Down: true}} {
		w.Set(p)
		if err := w.WriteGather(link.VNetHdr{}, [][]byte{make([]byte, 60)}); !errors.Is(err, link.ErrNoGather) || f.gathers != 1 {
			t.Fatalf("impaired %+v: %v, %d gathers", p, err, f.gathers)
		}
	}
	plain := Wrap(b)
	if err := plain.WriteGather(link.VNetHdr{}, [][]byte{make([]byte, 60)}); !errors.Is(err, link.ErrNoGather) {
		t.Fatalf("on a link that cannot gather: %v", err)
	}
	if plain.Hold(1, 1) {
		t.Fatal("a link that does not lend lent")
	}
}
