package storage_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/storage"
)

const benchSize = 256 << 20

// BenchmarkSequential1MiB writes and reads 1 MiB I/Os over loopback kernel
// UDP, each split into the server's largest requests and pipelined.
func BenchmarkSequential1MiB(b *testing.B) {
	_, addr := startServer(b, benchSize, nil)
	c := dial(b, addr, nil, storage.Options{})
	ctx := context.Background()
	buf := randomBytes(3, 1<<20)
	for _, mode := range []string{"write", "read"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			off := int64(0)
			for b.Loop() {
				var err error
				if mode == "write" {
					_, err = c.WriteAt(ctx, buf, off, false)
				} else {
					_, err = c.ReadAt(ctx, buf, off)
				}
				if err != nil {
					b.Fatal(err)
				}
				off = (off + int64(len(buf))) % benchSize
			}
			b.ReportMetric(float64(b.N)*float64(len(buf))/(1<<20)/b.Elapsed().Seconds(), "MiB/s")
		})
	}
	b.Logf("client stats %+v", c.Stats())
}

// BenchmarkRandomRead4KiBQD32 issues 4 KiB reads at random aligned offsets
// from 32 goroutines: queue depth 32.
func BenchmarkRandomRead4KiBQD32(b *testing.B) {
	srv, addr := startServer(b, benchSize, nil)
	defer func() { b.Logf("server drops %v, duplicates %d", srv.Stats().Drops, srv.Stats().Duplicates) }()
	c := dial(b, addr, nil, storage.Options{})
	ctx := context.Background()
	var next atomic.Int64
	var lat []time.Duration
	var mu sync.Mutex
	b.ResetTimer()
	var wg sync.WaitGroup
	for q := range 32 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(q), 9))
			p := make([]byte, 4096)
			var mine []time.Duration
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if _, err := c.ReadAt(ctx, p, r.Int64N(benchSize/4096)*4096); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "IOPS")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
	}
	b.ReportMetric(float64(c.Stats().Retransmits), "retransmits")
}

// BenchmarkRead4KiBQD1 is one 4 KiB read at a time: the round-trip
// latency and the allocations of client and server together per request.
func BenchmarkRead4KiBQD1(b *testing.B) {
	_, addr := startServer(b, 1<<20, nil)
	c := dial(b, addr, nil, storage.Options{})
	ctx := context.Background()
	p := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.ReadAt(ctx, p, 8192); err != nil {
			b.Fatal(err)
		}
	}
}
