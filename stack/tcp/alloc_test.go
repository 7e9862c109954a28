package tcp_test

import (
	"testing"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

// TestZeroAllocsSteadyState: once a connection runs, moving data costs
// no allocation per segment, with and without GSO, both for bulk chunks
// and for small request/response messages.
func TestZeroAllocsSteadyState(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	for _, caps := range []link.Caps{0, link.CapVNetHdr | link.CapGSO} {
		for _, size := range []int{64, 64 << 10} {
			w := newWorld(t, worldOpts{mem: mem.Options{Caps: caps}})
			c, s := w.connect(t, 80)
			msg := pattern(size, 1)
			buf := make([]byte, size)
			run := func() {
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				for got := 0; got < size; {
					n, err := s.Read(buf[got:])
					if err != nil {
						t.Fatal(err)
					}
					got += n
				}
				// And back, so ACKs and data flow both ways.
				if _, err := s.Write(msg[:64]); err != nil {
					t.Fatal(err)
				}
				for got := 0; got < 64; {
					n, err := c.Read(buf[got:64])
					if err != nil {
						t.Fatal(err)
					}
					got += n
				}
			}
			for range 200 { // grow buffers, warm pools
				run()
			}
			if allocs := testing.AllocsPerRun(500, run); allocs != 0 {
				t.Errorf("caps %v, %d B: %.2f allocations per exchange", caps, size, allocs)
			}
		}
	}
}
