package dgram_test

import (
	"fmt"
	"testing"

	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/stack"
)

// BenchmarkKernelBestSend: what a KernelBest send of 128 datagrams costs
// the sender when its buffers are separate arrays (an iovec each) and
// when they are back to back in one (merged into an iovec per run). The
// receiver drains with UDP_GRO in place. ns/op is per batch.
func BenchmarkKernelBestSend(b *testing.B) {
	for _, size := range []int{64, 1472} {
		for _, layout := range []string{"separate", "contiguous"} {
			b.Run(fmt.Sprintf("%dB/%s", size, layout), func(b *testing.B) {
				p := newPair(b)
				snd, rcv := dgram.Kernel(p.sa), dgram.Kernel(p.sb)
				defer snd.Close()
				defer rcv.Close()
				msgs := make([]dgram.Message, 128)
				backing := make([]byte, len(msgs)*size)
				for i := range msgs {
					if layout == "separate" {
						msgs[i] = dgram.Message{Buf: make([]byte, size), Addr: p.bAddr}
					} else {
						msgs[i] = dgram.Message{Buf: backing[i*size : (i+1)*size], Addr: p.bAddr}
					}
				}
				done := make(chan struct{})
				go func() {
					defer close(done)
					rr := dgram.Runs(rcv)
					runs := make([]stack.Run, 16)
					for {
						if _, _, err := rr.ReadRuns(runs); err != nil {
							return
						}
						rr.Release()
					}
				}()
				b.SetBytes(int64(len(msgs) * size))
				b.ResetTimer()
				for range b.N {
					if _, err := dgram.WriteAll(snd, msgs); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				rcv.Close()
				<-done
			})
		}
	}
}
