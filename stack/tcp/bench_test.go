package tcp_test

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/impair"
	"github.com/netstation/netstation/stack/link/mem"
)

// BenchmarkBulkMem: one connection between two stacks on the in-memory
// link, 1 MiB writes, with and without GSO, with 0, 0.1 % and 1 % frame
// loss on the data direction (the mem link costs a copy per frame, so
// the figures measure the stack, not a wire).
func BenchmarkBulkMem(b *testing.B) {
	for _, caps := range []link.Caps{0, link.CapVNetHdr | link.CapGSO} {
		for _, ppm := range []uint32{0, 1000, 10000} {
			name := fmt.Sprintf("gso=%v/loss=%.1f%%", caps&link.CapGSO != 0, float64(ppm)/1e4)
			b.Run(name, func(b *testing.B) {
				var ia *impair.Link
				w := newWorld(b, worldOpts{mem: mem.Options{Caps: caps},
					wrapA: func(l link.Link) link.Link { ia = impair.Wrap(l); return ia }})
				c, s := w.connect(b, 80)
				ia.Set(impair.Params{LossPPM: ppm, Seed: 7})
				const chunk = 1 << 20
				buf := make([]byte, chunk)
				done := make(chan int64)
				go func() {
					n, _ := io.Copy(io.Discard, s)
					done <- n
				}()
				b.SetBytes(chunk)
				b.ResetTimer()
				start := time.Now()
				for range b.N {
					if _, err := c.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				c.CloseWrite()
				n := <-done
				el := time.Since(start)
				if n != int64(b.N)*chunk {
					b.Fatalf("read %d of %d", n, int64(b.N)*chunk)
				}
				st := w.a.TCP().Stats()
				b.ReportMetric(float64(n)*8/el.Seconds()/1e9, "Gbit/s")
				b.ReportMetric(float64(st.Timeouts.Load()), "timeouts")
			})
		}
	}
}
