package storage_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/storage"
	"github.com/netstation/netstation/internal/nstest"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/link/afpacket"
	"golang.org/x/sys/unix"
)

// processCPU is the CPU time of the whole process so far (RUSAGE_SELF,
// user and system): both stacks, the client and the disk run in it.
func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time spent since cpu0 per GiB moved: both
// ends' cost, so that a faster row is not bought with more CPU.
func reportCPU(b *testing.B, cpu0 time.Duration, bytes float64) float64 {
	if bytes <= 0 {
		return 0
	}
	v := (processCPU() - cpu0).Seconds() / (bytes / (1 << 30))
	b.ReportMetric(v, "CPU-s/GiB")
	return v
}

// userPair is two user-level stacks on the ends of a veth pair, each in a
// namespace of its own: the fabric without the bridge, in one process.
// serveDisk serves a disk of size bytes, open to all, on a temporary
// backing file over st's storage protocol port until the test ends.
func serveDisk(tb testing.TB, st *stack.Stack, size int64) *disk.Server {
	tb.Helper()
	srv, err := disk.NewServer(disk.Config{Path: filepath.Join(tb.TempDir(), "disk.img"), Size: size,
		Authorizer: disk.OpenAccess{}})
	if err != nil {
		tb.Fatal(err)
	}
	spc, err := st.ListenUDP(netip.AddrPortFrom(st.Addr(), diskproto.Port))
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(spc)
	tb.Cleanup(func() { srv.Close(); spc.Close() })
	return srv
}

func userPair(b testing.TB) (client, server *stack.Stack) {
	na, nb := nstest.New(b, "sc"), nstest.New(b, "ss")
	la, lb := nstest.Veth(b, na, "c0", nb, "s0", 1500)
	open := func(ns *nstest.NS, ifname string, l net.HardwareAddr, addr string) *stack.Stack {
		var st *stack.Stack
		if err := ns.Do(func() error {
			lk, err := afpacket.Open(ifname, afpacket.Options{})
			if err != nil {
				return err
			}
			st, err = stack.New(lk, stack.Config{MAC: l, Addr: netip.MustParsePrefix(addr)})
			if err != nil {
				lk.Close()
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	return open(na, "c0", la.Attrs().HardwareAddr, "10.78.0.1/24"), open(nb, "s0", lb.Attrs().HardwareAddr, "10.78.0.2/24")
}

// rawUDP sends 1472-byte datagrams in batches of 64 (GSO super-frames)
// from cst to a socket of sst for b.N batches and returns the goodput
// received (MiB/s) and the process's CPU-s per GiB received. With src nil
// the sender repeats one hot datagram and the receiver copies each into a
// hot 2 KiB buffer; otherwise the sender sends successive slices of src
// and the receiver copies each datagram into successive places of dst
// (both wrapping).
func rawUDP(b *testing.B, cst, sst *stack.Stack, src, dst []byte) (mibs, cpuGiB float64) {
	const seg, batch = 1472, 64
	rx, err := sst.ListenUDP(netip.AddrPortFrom(sst.Addr(), 9))
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	tx, err := cst.ListenUDP(netip.AddrPortFrom(cst.Addr(), 0))
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Close()
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		msgs := make([]stack.Message, batch)
		for i := range msgs {
			msgs[i].Buf = make([]byte, 2048)
		}
		at := 0 // where in dst the next datagram goes
		for {
			if dst != nil {
				at = successive(msgs, dst, at, seg)
			}
			n, err := rx.ReadBatch(msgs)
			for _, m := range msgs[:n] {
				got.Add(int64(m.N))
			}
			if dst != nil {
				at -= (len(msgs) - n) * seg // unfilled places are filled next time
				if at < 0 {
					at = 0
				}
			}
			if err != nil {
				return
			}
		}
	}()
	msgs := make([]stack.Message, batch)
	payload := make([]byte, seg)
	to := netip.AddrPortFrom(sst.Addr(), 9)
	for i := range msgs {
		msgs[i] = stack.Message{Buf: payload, Addr: to}
	}
	off := 0 // where in src the next batch starts
	b.SetBytes(int64(len(msgs) * seg))
	start, cpu0 := time.Now(), processCPU()
	for b.Loop() {
		if src != nil {
			off = successive(msgs, src, off, seg)
		}
		if _, err := tx.WriteBatch(msgs); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond) // the last frames land
	elapsed := time.Since(start)
	rx.Close()
	<-done
	mibs = float64(got.Load()) / (1 << 20) / elapsed.Seconds()
	b.ReportMetric(mibs, "MiB/s-received")
	return mibs, reportCPU(b, cpu0, float64(got.Load())) // per GiB received: what was sent and dropped is paid too
}

// successive points each message at the next seg bytes of buf from at,
// starting over at its beginning where seg bytes no longer fit, and
// returns where the next message would start.
func successive(msgs []stack.Message, buf []byte, at, seg int) int {
	for i := range msgs {
		if at+seg > len(buf) {
			at = 0
		}
		msgs[i].Buf = buf[at : at+seg]
		at += seg
	}
	return at
}

// BenchmarkUserStackStorage puts the storage protocol's goodput beside the
// raw peer-to-peer UDP throughput of the same two user-level stacks, in the
// same run: 1472-byte datagrams in batches of 64 (GSO super-frames), once
// repeating one hot datagram (issue 14's baseline, the row the 0.8 target
// is judged against) and once moving new data from a 256 MiB buffer into
// a 16 MiB one (what storage's bytes cost at the ends beyond the
// protocol's), then 1 MiB sequential WRITEs and READs at queue depth 16
// with no workload work (no data generation, no hashing) around them. Each
// row also reports the process's CPU time (both ends) per GiB, and the
// storage rows their goodput over each raw row's (of-raw-...). Root:
// namespaces.
func BenchmarkUserStackStorage(b *testing.B) {
	cst, sst := userPair(b)
	const size = 256 << 20
	srv := serveDisk(b, sst, size)
	srvAddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(sst.Addr(), diskproto.Port))

	// rate is each row's goodput (MiB/s received, or moved) and cpu its
	// CPU-s/GiB, for the ratios logged at the end.
	rate, cpu := map[string]float64{}, map[string]float64{}
	parent := b.Name()
	b.Run("raw-udp-1472", func(b *testing.B) {
		rate[b.Name()], cpu[b.Name()] = rawUDP(b, cst, sst, nil, nil)
	})
	// The same, moving new data as storage does: the sender sends
	// successive 1472-byte slices of a buffer the device's size (a READ
	// reply's data, from the disk's mapping), the receiver copies each
	// datagram into successive places of one the size of the callers'
	// sixteen 1 MiB buffers; the raw row above repeats one hot datagram
	// and copies into a hot 2 KiB buffer, so it measures no memory
	// traffic at either end. Both rows stay: issue 14's target is judged
	// against the first (the protocol must cost what moving the bytes
	// costs), this one says how much of the gap is the bytes.
	src, dst := make([]byte, size), make([]byte, 16<<20)
	for i := 0; i+8 <= len(src); i += 8 {
		binary.LittleEndian.PutUint64(src[i:], uint64(i)*0x9e3779b97f4a7c15)
	}
	clear(dst) // touched before the clock starts, as the callers' buffers are
	b.Run("raw-udp-1472-newdata", func(b *testing.B) {
		rate[b.Name()], cpu[b.Name()] = rawUDP(b, cst, sst, src, dst)
	})

	pc, err := cst.ListenUDP(netip.AddrPortFrom(cst.Addr(), 0))
	if err != nil {
		b.Fatal(err)
	}
	c, err := storage.Dial(pc, srvAddr, storage.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const qd, bs = 16, 1 << 20
	bufs := make([][]byte, qd)
	for i := range bufs {
		bufs[i] = randomBytes(uint64(i), bs)
	}
	written := false // the whole device: the rows run through the mapping, not the file's holes
	for _, mode := range []string{"write-1MiB-qd16", "read-1MiB-qd16"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(bs)
			if !written {
				// A fresh backing file is holes, which the disk fills
				// through the file (pwrite, blocks allocated), not the
				// mapping a device holds once written: a one-time cost of
				// the file, not of the protocol. Timed, it landed in
				// whichever run of the WRITE row first covered the device
				// (the reported one when the row ran alone with -benchtime
				// Nx), and run alone the READ row would read holes: write
				// it all first, untimed, and say what it cost.
				cpu0 := processCPU()
				for off := int64(0); off < size; off += bs {
					if _, err := c.WriteAt(context.Background(), bufs[0], off, false); err != nil {
						b.Fatal(err)
					}
				}
				written = true
				b.Logf("the device's holes filled first, untimed: %.2f CPU-s/GiB", (processCPU()-cpu0).Seconds()/(float64(size)/(1<<30)))
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			ctx := context.Background()
			s0 := c.Stats()
			b.ResetTimer()
			cpu0 := processCPU()
			for q := range qd {
				wg.Go(func() {
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						off := (i * bs) % size
						var err error
						if mode[0] == 'w' {
							_, err = c.WriteAt(ctx, bufs[q], off, false)
						} else {
							_, err = c.ReadAt(ctx, bufs[q], off)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			rate[b.Name()] = float64(b.N) * bs / (1 << 20) / b.Elapsed().Seconds()
			b.ReportMetric(rate[b.Name()], "MiB/s")
			cpu[b.Name()] = reportCPU(b, cpu0, float64(b.N)*bs)
			// One line per run of the row (go test keeps the first ten
			// lines of a benchmark's log): timer expiries, which on a
			// path that loses nothing are stalls (docs/ARCHITECTURE.md,
			// storage beside raw UDP), so that make bench's quiet-machine
			// run says whether it had them; and issue 14's ratio against
			// both raw rows of this run (when they ran), the goodput (also
			// a metric) and the CPU per byte the rows are bound by (raw's
			// CPU-s/GiB over this row's).
			s1 := c.Stats()
			line := fmt.Sprintf("%d requests, %d probes (retransmission timer expiries), %d datagrams resent, %d late replies",
				s1.Requests-s0.Requests, s1.Probes-s0.Probes, s1.ResentDgrams-s0.ResentDgrams, s1.LateReplies-s0.LateReplies)
			for _, raw := range []string{"raw-udp-1472", "raw-udp-1472-newdata"} {
				r := parent + "/" + raw
				if rate[r] > 0 && cpu[b.Name()] > 0 {
					b.ReportMetric(rate[b.Name()]/rate[r], "of-"+raw)
					line += fmt.Sprintf("; of %s: goodput %.2f, CPU per byte %.2f", raw, rate[b.Name()]/rate[r], cpu[r]/cpu[b.Name()])
				}
			}
			b.Log(line)
		})
	}
	b.Logf("client %+v", c.Stats())
	b.Logf("disk %+v", srv.Stats())
}
