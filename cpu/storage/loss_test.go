package storage_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/storage"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/impair"
	"github.com/netstation/netstation/stack/link/mem"
	"github.com/netstation/netstation/stack/stacktest"
)

// lossyBed is a disk server and a client on two user-level stacks joined
// by an in-memory link with GSO (so runs of datagrams travel as one frame,
// as on the fabric's veths), the disk's end impaired: seeded loss of whole
// frames in both directions, as `netstation link set --loss` does on a
// rootless testbed. No root needed.
type lossyBed struct {
	cst, sst *stack.Stack
	imp      *impair.Link
	srv      *disk.Server
	addr     net.Addr
}

func newLossyBed(t testing.TB, size int64) *lossyBed {
	t.Helper()
	var imp *impair.Link
	p := stacktest.New(t, stacktest.Options{ // warm-up ping: ARP settled before any loss
		Mem:    mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Depth: 8192},
		A:      stack.Config{Addr: netip.MustParsePrefix("10.79.0.1/24")},
		B:      stack.Config{Addr: netip.MustParsePrefix("10.79.0.2/24")},
		WrapB:  func(l link.Link) link.Link { imp = impair.Wrap(l); return imp },
		Warmup: true})
	cst, sst := p.A, p.B
	srv := serveDisk(t, sst, size)
	return &lossyBed{cst: cst, sst: sst, imp: imp, srv: srv,
		addr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(sst.Addr(), diskproto.Port))}
}

func (b *lossyBed) dial(t testing.TB) *storage.Client {
	t.Helper()
	pc, err := b.cst.ListenUDP(netip.AddrPortFrom(b.cst.Addr(), 0))
	if err != nil {
		t.Fatal(err)
	}
	c, err := storage.Dial(pc, b.addr, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pipeline runs size bytes of I/O of bs bytes each with qd in flight:
// writes of data (at offset 0) or reads into got.
func pipeline(ctx context.Context, c *storage.Client, write bool, data, got []byte, bs, qd int) error {
	var wg sync.WaitGroup
	errs := make(chan error, qd)
	next := make(chan int, len(data)/bs)
	for off := 0; off < len(data); off += bs {
		next <- off
	}
	close(next)
	for range qd {
		wg.Go(func() {
			for off := range next {
				var err error
				if write {
					_, err = c.WriteAt(ctx, data[off:off+bs], int64(off), false)
				} else {
					_, err = c.ReadAt(ctx, got[off:off+bs], int64(off))
				}
				if err != nil {
					errs <- fmt.Errorf("at %d: %w", off, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// TestLossRecovery writes, flushes and reads back 8 MiB at 1 % and 10 %
// frame loss on the disk's link and checks every byte, that the requests
// stayed full-sized (no fallback to small ones: exactly one request per
// 256 KiB), and, at 10 %, that the disk's feedback drove resends (SACKs
// and READ reports) and that loss shrank the congestion window.
func TestLossRecovery(t *testing.T) {
	const size, bs, qd = 8 << 20, 1 << 20, 4
	for _, ppm := range []uint32{10_000, 100_000} {
		t.Run(fmt.Sprintf("loss-%gpct", float64(ppm)/1e4), func(t *testing.T) {
			bed := newLossyBed(t, 64<<20)
			c := bed.dial(t)
			bed.imp.Set(impair.Params{LossPPM: ppm, Seed: uint64(ppm)})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			data := randomBytes(uint64(ppm), size)
			if err := pipeline(ctx, c, true, data, nil, bs, qd); err != nil {
				t.Fatalf("write: %v", err)
			}
			if err := c.Flush(ctx); err != nil {
				t.Fatalf("flush: %v", err)
			}
			got := make([]byte, size)
			if err := pipeline(ctx, c, false, data, got, bs, qd); err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("data read back differs from data written")
			}
			st, ic := c.Stats(), bed.imp.Counters()
			ds := bed.srv.Stats()
			t.Logf("client %+v", st)
			t.Logf("disk: sacks %d, resent reads %d (%d datagrams); link dropped %d rx, %d tx",
				ds.SACKs, ds.ResentReads, ds.ResentSegments, ic.RxDropped, ic.TxDropped)
			maxIO := c.Info().MaxIO
			if want := uint64(2*size/maxIO + 1); st.Requests != want {
				t.Errorf("%d requests, want %d (full-sized, plus the flush)", st.Requests, want)
			}
			if ic.RxDropped+ic.TxDropped == 0 || st.Retransmits == 0 {
				t.Fatalf("the link dropped %+v, the client retransmitted %d: the test tested nothing", ic, st.Retransmits)
			}
			// At 10 % every kind of loss happens in 8 MiB; at 1 % a few
			// frames are lost (GSO frames carry up to 64 datagrams), and
			// which recovery they need is chance.
			if ppm >= 100_000 && (st.FeedbackResend == 0 || st.SACKs == 0 || ds.SACKs == 0 || ds.ResentReads == 0) {
				t.Errorf("no feedback-driven resends: client %+v, disk sacks %d, resent reads %d", st, ds.SACKs, ds.ResentReads)
			}
			if ppm >= 100_000 && st.LossEvents == 0 {
				t.Error("no loss event shrank the congestion window")
			}
		})
	}
}

// BenchmarkLossRecovery puts the goodput of 1 MiB WRITEs and READs (queue
// depth 8) at 1 % and 10 % frame loss beside the lossless goodput of the
// same run, on two user-level stacks over the in-memory link (no root).
// The lossy rows report ratio-to-lossless: issue 15's targets are >= 0.5
// at 1 % and >= 0.2 at 10 %. Every read is checked byte for byte.
func BenchmarkLossRecovery(b *testing.B) {
	const size, bs, qd = 16 << 20, 1 << 20, 8
	data := randomBytes(7, size)
	lossless := map[string]float64{}
	for _, ppm := range []uint32{0, 10_000, 100_000} {
		bed := newLossyBed(b, size)
		c := bed.dial(b)
		bed.imp.Set(impair.Params{LossPPM: ppm, Seed: 99})
		for _, dir := range []string{"write", "read"} {
			name := fmt.Sprintf("%s-loss-%gpct", dir, float64(ppm)/1e4)
			b.Run(name, func(b *testing.B) {
				got := make([]byte, size)
				ctx := context.Background()
				b.SetBytes(size)
				for b.Loop() {
					if err := pipeline(ctx, c, dir == "write", data, got, bs, qd); err != nil {
						b.Fatal(err)
					}
					if dir == "read" && !bytes.Equal(got, data) {
						b.Fatal("data read back differs from data written")
					}
				}
				mibs := float64(b.N) * size / (1 << 20) / b.Elapsed().Seconds()
				b.ReportMetric(mibs, "MiB/s")
				if ppm == 0 {
					lossless[dir] = mibs
				} else if l := lossless[dir]; l > 0 {
					b.ReportMetric(mibs/l, "ratio-to-lossless")
				}
			})
		}
		st, ds := c.Stats(), bed.srv.Stats()
		b.Logf("loss %d ppm: %d requests, %d retransmits (%d feedback, %d probes), %d loss events, cwnd %d, pace rate %d MiB/s; disk: %d READs paced, %d waited",
			ppm, st.Requests, st.Retransmits, st.FeedbackResend, st.Probes, st.LossEvents, st.Cwnd, st.PaceRate>>20,
			ds.PacedReads, ds.PaceWaits)
	}
}
