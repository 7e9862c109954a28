package disk_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/transfer"
	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/peripherals/disk/disktest"
	"github.com/netstation/netstation/peripherals/display"
)

// transferWorld is a disk, a display and a processor on loopback UDP.
type transferWorld struct {
	srv     *disk.Server
	auth    *disk.CapabilityAuthorizer
	key     []byte
	diskAP  netip.AddrPort
	disp    *display.Display
	dispAP  netip.AddrPort
	cpu     net.PacketConn
	cpuAP   netip.AddrPort
	mu      sync.Mutex // guards lossy: the server's goroutines add to it
	lossy   []*disktest.LossyConn
	w, h    int
	frame   []byte // the stored frame, RGBA
	written int
}

func listen(t testing.TB) (net.PacketConn, netip.AddrPort) {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	pc.SetReadBuffer(8 << 20)
	return pc, pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func newTransferWorld(t testing.TB, imp disktest.Impairment) *transferWorld {
	return newTransferWorldSized(t, imp, 320, 180)
}

func newTransferWorldSized(t testing.TB, imp disktest.Impairment, w, h int) *transferWorld {
	tw := &transferWorld{w: w, h: h, key: capability.NewKey()}
	tw.auth = &disk.CapabilityAuthorizer{Key: tw.key, DiskID: 7}
	var seed uint64
	cfg := disk.Config{Path: filepath.Join(t.TempDir(), "d.img"), Size: 8 << 20, Authorizer: tw.auth,
		Listen: func() (net.PacketConn, error) {
			pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				return nil, err
			}
			i := imp
			seed++
			i.Seed += seed
			lc := disktest.NewLossyConn(pc, i)
			tw.mu.Lock()
			tw.lossy = append(tw.lossy, lc)
			tw.mu.Unlock()
			return lc, nil
		}}
	srv, err := disk.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	tw.srv = srv
	dpc, dap := listen(t)
	tw.diskAP = dap
	go srv.Serve(dpc)
	tw.disp, err = display.New(display.Config{Width: tw.w, Height: tw.h})
	if err != nil {
		t.Fatal(err)
	}
	vpc, vap := listen(t)
	tw.dispAP = vap
	go tw.disp.Serve(vpc)
	tw.cpu, tw.cpuAP = listen(t)
	// Store a frame of random pixels (opaque) through the disk's own
	// protocol path would need the client; write the backing file's
	// bytes via a WRITE-capable session instead: the server's file.
	rng := rand.New(rand.NewPCG(1, 2))
	tw.frame = make([]byte, tw.w*tw.h*4)
	for i := range tw.frame {
		tw.frame[i] = byte(rng.Uint32())
		if i%4 == 3 {
			tw.frame[i] = 0xff
		}
	}
	writeRaw(t, tw, tw.frame)
	return tw
}

// writeRaw stores p at offset 0 with WRITE requests under a write
// capability.
func writeRaw(t testing.TB, tw *transferWorld, p []byte) {
	t.Helper()
	pc, _ := listen(t)
	c := capability.Mint(tw.key, capability.Capability{DiskID: 7, Length: 8 << 20, Rights: capability.RightWrite,
		Expiry: time.Now().Add(time.Minute).Unix(), Nonce: capability.NewNonce()})
	buf := make([]byte, diskproto.MaxDatagram)
	do := func(r diskproto.Request) diskproto.Reply {
		n, err := r.Marshal(buf)
		if err != nil {
			t.Fatal(err)
		}
		pc.WriteTo(buf[:n], net.UDPAddrFromAddrPort(tw.diskAP))
		pc.SetReadDeadline(time.Now().Add(2 * time.Second))
		m, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := diskproto.ParseReply(buf[:m])
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	rep := do(diskproto.Request{Op: diskproto.OpInfo, Session: 99})
	epoch := rep.Epoch
	const chunk = 32 << 10
	for off, id := 0, uint64(1); off < len(p); off, id = off+chunk, id+1 {
		rep := do(diskproto.Request{Op: diskproto.OpWrite, Session: 99, ReqID: id, Low: id, Epoch: epoch,
			Offset: uint64(off), Capability: c, Payload: p[off:min(off+chunk, len(p))]})
		if rep.Status != diskproto.CodeOK {
			t.Fatalf("write at %d: %v", off, rep.Status)
		}
	}
}

func (tw *transferWorld) order(repeat uint16, dst netip.AddrPort, c [capability.Size]byte) transfer.Order {
	return transfer.Order{Disk: tw.diskAP, Capability: c, Offset: 0, Length: uint32(len(tw.frame)),
		TransferOrder: diskproto.TransferOrder{Dest: dst, Notify: tw.cpuAP, Width: uint16(tw.w), Height: uint16(tw.h),
			TileW: 20, TileH: 18, Repeat: repeat, Stream: 0x5eed, Frame: 1}}
}

func (tw *transferWorld) mint(dst netip.AddrPort, rights capability.Rights, length uint64) [capability.Size]byte {
	c := capability.Capability{DiskID: 7, Length: length, Rights: rights, Expiry: time.Now().Add(time.Minute).Unix(),
		Version: tw.auth.Version.Load(), Nonce: capability.NewNonce()}
	return capability.Mint(capability.TransferKey(tw.key, dst), c)
}

func (tw *transferWorld) mustMatch(t *testing.T) {
	t.Helper()
	im, _ := tw.disp.Snapshot()
	if !bytes.Equal(im.Pix, tw.frame) {
		bad := 0
		for i := range im.Pix {
			if im.Pix[i] != tw.frame[i] {
				bad++
			}
		}
		t.Fatalf("display differs from the stored frame in %d of %d bytes", bad, len(im.Pix))
	}
}

// TestTransferExact: the display shows the stored frame exactly, the
// processor is told of every frame, and the disk counts it all.
func TestTransferExact(t *testing.T) {
	tw := newTransferWorld(t, disktest.Impairment{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := transfer.Run(ctx, tw.cpu, tw.order(3, tw.dispAP, tw.mint(tw.dispAP, capability.RightRead, uint64(len(tw.frame)))))
	if err != nil {
		t.Fatal(err)
	}
	tw.mustMatch(t)
	if res.Disk.Frames != 3 || res.Notified != 3 || res.LastFrame != 3 {
		t.Errorf("result %+v", res)
	}
	st := tw.srv.Stats()
	if st.Transfers.Completed != 1 || st.Transfers.Frames != 3 || st.Transfers.Bytes != 3*uint64(len(tw.frame)) {
		t.Errorf("disk transfer stats %+v", st.Transfers)
	}
	if ds := tw.disp.Stats(); ds.Frames != 3 || ds.TilesLost != 0 {
		t.Errorf("display stats %+v", ds)
	}
}

// TestTransferLossy: with 10 % of the disk's datagrams lost, duplicated or
// reordered, every presented frame is still exact: lost tiles are sent
// again before the frame is shown.
func TestTransferLossy(t *testing.T) {
	tw := newTransferWorld(t, disktest.Impairment{Loss: 0.1, Duplicate: 0.02, Reorder: 0.02, Seed: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := transfer.Run(ctx, tw.cpu, tw.order(2, tw.dispAP, tw.mint(tw.dispAP, capability.RightRead, uint64(len(tw.frame)))))
	if err != nil {
		t.Fatal(err)
	}
	tw.mustMatch(t)
	tw.mu.Lock()
	dropped := tw.lossy[0].Dropped.Load()
	tw.mu.Unlock()
	if res.Disk.Resent == 0 || dropped == 0 {
		t.Errorf("nothing lost or resent: %+v, dropped %d", res.Disk, dropped)
	}
	if ds := tw.disp.Stats(); ds.Withheld == 0 || ds.Frames != 2 {
		t.Errorf("display stats %+v", ds)
	}
	if x := tw.srv.Stats().Transfers; x.WindowCuts == 0 {
		t.Errorf("loss did not cut the transfer's window: %+v", x)
	}
}

// TestTransferRefused: a capability for another destination, without the
// read right, or not covering the range is refused before anything is
// sent; a replayed order (its capability used up) is refused too.
func TestTransferRefused(t *testing.T) {
	tw := newTransferWorld(t, disktest.Impairment{})
	other := netip.AddrPortFrom(tw.dispAP.Addr(), tw.dispAP.Port()+1)
	n := uint64(len(tw.frame))
	for _, c := range []struct {
		name   string
		cap    [capability.Size]byte
		reason string
	}{
		{"another destination", tw.mint(other, capability.RightRead, n), "bad_mac"},
		{"plain read capability", capability.Mint(tw.key, capability.Capability{DiskID: 7, Length: n, Rights: capability.RightRead,
			Expiry: time.Now().Add(time.Minute).Unix(), Nonce: capability.NewNonce()}), "bad_mac"},
		{"write right only", tw.mint(tw.dispAP, capability.RightWrite, n), "rights"},
		{"short range", tw.mint(tw.dispAP, capability.RightRead, n-1), "range"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		before := tw.auth.Stats()[c.reason]
		_, err := transfer.Run(ctx, tw.cpu, tw.order(1, tw.dispAP, c.cap))
		cancel()
		if !errors.Is(err, diskproto.CodeDenied) {
			t.Errorf("%s: %v, want access denied", c.name, err)
		}
		if tw.auth.Stats()[c.reason] != before+1 {
			t.Errorf("%s: %s refusals %d -> %d", c.name, c.reason, before, tw.auth.Stats()[c.reason])
		}
	}
	if st := tw.srv.Stats(); st.Transfers.Orders != 0 || tw.disp.Stats().Datagrams != 0 {
		t.Errorf("refused orders ran: %+v, display saw %d datagrams", st.Transfers, tw.disp.Stats().Datagrams)
	}
	good := tw.order(1, tw.dispAP, tw.mint(tw.dispAP, capability.RightRead, n))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := transfer.Run(ctx, tw.cpu, good); err != nil {
		t.Fatal(err)
	}
	if _, err := transfer.Run(ctx, tw.cpu, good); !errors.Is(err, diskproto.CodeDenied) || tw.auth.Stats()["replay"] != 1 {
		t.Errorf("replayed order: %v, replay refusals %d", err, tw.auth.Stats()["replay"])
	}
}

// BenchmarkTransfer1280x720 runs third-party transfers of a 1280x720 RGBA
// frame, disk to display, over loopback kernel UDP sockets (the testbed's
// figure, over the peripherals' own stacks, comes from
// netstation demo transfer --frames N). One op is one frame presented.
func BenchmarkTransfer1280x720(b *testing.B) {
	tw := newTransferWorldSized(b, disktest.Impairment{}, 1280, 720)
	b.SetBytes(int64(len(tw.frame)))
	ctx := context.Background()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(b.N-done, 1000)
		o := tw.order(uint16(n), tw.dispAP, tw.mint(tw.dispAP, capability.RightRead, uint64(len(tw.frame))))
		o.Frame = uint32(done + 1)
		if _, err := transfer.Run(ctx, tw.cpu, o); err != nil {
			b.Fatal(err)
		}
		done += n
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
	st := tw.srv.Stats().Transfers
	b.ReportMetric(float64(st.Resent)/float64(b.N), "resent/frame")
	b.ReportMetric(float64(st.Timeouts)/float64(b.N), "timeouts/frame")
}

// TestTransferBadOrders: orders the disk cannot carry out are refused with
// their codes before anything is sent.
func TestTransferBadOrders(t *testing.T) {
	tw := newTransferWorld(t, disktest.Impairment{})
	for _, c := range []struct {
		name string
		mut  func(o *transfer.Order)
		want diskproto.Code
	}{
		{"not whole frames", func(o *transfer.Order) { o.Length-- }, diskproto.CodeInvalid},
		{"tile too big", func(o *transfer.Order) { o.TileW, o.TileH = 320, 180 }, diskproto.CodeInvalid},
		{"too many tiles", func(o *transfer.Order) {
			o.Width, o.Height, o.Length = 640, 360, 640*360*4 // 230,400 tiles of 1x1
			o.TileW, o.TileH = 1, 1
		}, diskproto.CodeInvalid},
		{"past the end", func(o *transfer.Order) { o.Offset = 8<<20 - uint64(o.Length) + 4 }, diskproto.CodeRange},
		{"frame too big", func(o *transfer.Order) {
			o.Width, o.Height, o.Length = 4096, 4096, 4096*4096*4
			o.TileW, o.TileH = 256, 256
		}, diskproto.CodeTooBig},
		{"bad format", func(o *transfer.Order) { o.Format = 9 }, diskproto.CodeBadRequest},
	} {
		o := tw.order(1, tw.dispAP, [capability.Size]byte{})
		c.mut(&o)
		key := capability.TransferKey(tw.key, o.Dest)
		o.Capability = capability.Mint(key, capability.Capability{DiskID: 7, Offset: o.Offset, Length: uint64(o.Length),
			Rights: capability.RightRead, Expiry: time.Now().Add(time.Minute).Unix(), Nonce: capability.NewNonce()})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := transfer.Run(ctx, tw.cpu, o)
		cancel()
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if st := tw.srv.Stats(); st.Transfers.Orders != 0 || tw.disp.Stats().Datagrams != 0 {
		t.Errorf("bad orders ran: %+v, display saw %d datagrams", st.Transfers, tw.disp.Stats().Datagrams)
	}
}
