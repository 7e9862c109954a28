package mem

import (
	"errors"
	"net"
	"testing"

	"github.com/netstation/netstation/stack/link"
)

var macA, macB = net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}

func TestBatchAndContracts(t *testing.T) {
	var dropped int
	a, b := Pair(macA, macB, Options{Drop: func(f *link.Frame) bool {
		if len(f.Buf) == 3 {
			dropped++
			return true
		}
		return false
	}})
	out := []link.Frame{{Buf: []byte("one")}, {Buf: []byte("four"), VNet: link.VNetHdr{Flags: link.VNetNeedsCsum}}, {Buf: []byte("five!")}}
	if n, err := a.WriteBatch(out); err != nil || n != 3 {
		t.Fatalf("write %d %v", n, err)
	}
	out[1].Buf[0] = 'X' // the link copied: the caller may reuse its buffers
	in := make([]link.Frame, 8)
	n, err := b.ReadBatch(in)
	if err != nil || n != 2 || string(in[0].Buf) != "four" || in[0].VNet.Flags != link.VNetNeedsCsum || string(in[1].Buf) != "five!" {
		t.Fatalf("read %d %v %v", n, err, in[:n])
	}
	if dropped != 1 || a.Dropped.Load() != 1 {
		t.Fatalf("drop hook: %d / %d", dropped, a.Dropped.Load())
	}
	if _, err := a.WriteBatch([]link.Frame{{Buf: make([]byte, a.MaxFrame()+1)}}); err == nil {
		t.Fatal("oversized frame accepted")
	}
	a.Close()
	if _, err := b.ReadBatch(in); !errors.Is(err, link.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if _, err := b.WriteBatch(out); !errors.Is(err, link.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

func TestZeroAllocs(t *testing.T) {
	a, b := Pair(macA, macB, Options{})
	defer a.Close()
	out := []link.Frame{{Buf: make([]byte, 1514)}}
	in := make([]link.Frame, 4)
	a.WriteBatch(out)
	b.ReadBatch(in)
	if n := testing.AllocsPerRun(1000, func() {
		a.WriteBatch(out)
		b.ReadBatch(in)
	}); n != 0 {
		t.Fatalf("%v allocations per frame", n)
	}
}
