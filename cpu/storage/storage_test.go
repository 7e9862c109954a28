package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/storage"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/peripherals/disk/disktest"
)

func listenUDP(t testing.TB) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	// 32 outstanding 60 KiB requests overflow the default 208 KiB buffer.
	pc.SetReadBuffer(4 << 20)
	pc.SetWriteBuffer(4 << 20)
	return pc
}

// startServer serves a fresh disk of size bytes on loopback; wrap, if not
// nil, impairs the server's replies.
func startServer(t testing.TB, size int64, wrap func(net.PacketConn) net.PacketConn) (*disk.Server, net.Addr) {
	t.Helper()
	return startServerConfig(t, disk.Config{Path: filepath.Join(t.TempDir(), "disk.img"), Size: size,
		Authorizer: disk.OpenAccess{}}, wrap)
}

func startServerConfig(t testing.TB, cfg disk.Config, wrap func(net.PacketConn) net.PacketConn) (*disk.Server, net.Addr) {
	t.Helper()
	srv, err := disk.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pc := listenUDP(t)
	var served net.PacketConn = pc
	if wrap != nil {
		served = wrap(pc)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(served) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil && !errors.Is(err, disk.ErrClosed) {
			t.Errorf("server Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		pc.Close()
	})
	return srv, pc.LocalAddr()
}

func dial(t testing.TB, addr net.Addr, pc net.PacketConn, opts storage.Options) *storage.Client {
	t.Helper()
	if pc == nil {
		pc = listenUDP(t)
	}
	c, err := storage.Dial(pc, addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestRoundTripEveryOp(t *testing.T) {
	const size = 8 << 20
	srv, addr := startServer(t, size, nil)
	c := dial(t, addr, nil, storage.Options{})
	ctx := context.Background()

	info := c.Info()
	if info.Size != size || info.BlockSize != disk.DefaultBlockSize || info.Window != disk.DefaultWindow ||
		info.MaxIO != disk.DefaultMaxIO || !info.OpenAccess || info.Epoch != srv.Epoch() {
		t.Fatalf("Info = %+v", info)
	}

	data := randomBytes(1, 1<<20+123) // spans many requests, unaligned end
	if n, err := c.WriteAt(ctx, data, 4096+7, false); err != nil || n != len(data) {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	fua := randomBytes(2, 5000)
	if _, err := c.WriteAt(ctx, fua, size-5000, true); err != nil {
		t.Fatalf("FUA WriteAt: %v", err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	got := make([]byte, len(data))
	if n, err := c.ReadAt(ctx, got, 4096+7); err != nil || n != len(got) || !bytes.Equal(got, data) {
		t.Fatalf("ReadAt = %d, %v, equal %v", n, err, bytes.Equal(got, data))
	}
	got = make([]byte, len(fua))
	if _, err := c.ReadAt(ctx, got, size-5000); err != nil || !bytes.Equal(got, fua) {
		t.Fatalf("ReadAt of FUA data: %v, equal %v", err, bytes.Equal(got, fua))
	}

	if err := c.Trim(ctx, 8192, 200000); err != nil {
		t.Fatalf("Trim: %v", err)
	}
	got = make([]byte, 300000)
	if _, err := c.ReadAt(ctx, got, 4096); err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size) // what the disk should hold
	copy(model[4096+7:], data)
	copy(model[size-5000:], fua)
	clear(model[8192 : 8192+200000])
	want := model[4096 : 4096+300000]
	if !bytes.Equal(got, want) {
		t.Fatal("trimmed range does not read back as zeros with its neighbours intact")
	}

	if _, err := c.ReadAt(ctx, make([]byte, 10), size-5); !errors.Is(err, diskproto.CodeRange) {
		t.Fatalf("read past the end: %v, want CodeRange", err)
	}

	st := srv.Stats()
	for _, op := range []string{"info", "read", "write", "flush", "trim"} {
		if st.Requests[op] == 0 {
			t.Errorf("server counted no %s requests: %+v", op, st.Requests)
		}
	}
	if st.Syncs < 2 {
		t.Errorf("server syncs = %d, want >= 2 (FUA and FLUSH)", st.Syncs)
	}
	cs := c.Stats()
	if cs.BytesRead == 0 || cs.BytesWritten != uint64(len(data)+len(fua)) || cs.SRTT <= 0 {
		t.Errorf("client stats %+v", cs)
	}
	// The READs came after RTT samples: each carried the client's pace
	// rate (version 4) and the disk paced its reply at it.
	if cs.PaceRate == 0 || st.PacedReads == 0 || st.PacedReads > st.Requests["read"] {
		t.Errorf("pace rate %d B/s; the disk paced %d of %d READs", cs.PaceRate, st.PacedReads, st.Requests["read"])
	}
}

func TestDeviceReaderWriterAt(t *testing.T) {
	_, addr := startServer(t, 1<<20, nil)
	c := dial(t, addr, nil, storage.Options{})
	dev := c.Device(context.Background(), false)
	var _ io.ReaderAt = dev
	var _ io.WriterAt = dev
	if _, err := dev.WriteAt([]byte("hello"), 1<<20-5); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 10)
	n, err := dev.ReadAt(p, 1<<20-5)
	if n != 5 || err != io.EOF || string(p[:5]) != "hello" {
		t.Fatalf("ReadAt at the end = %d, %v, %q; want 5, EOF, hello", n, err, p[:n])
	}
	if _, err := dev.WriteAt(p, 1<<20-5); err == nil {
		t.Fatal("WriteAt past the end succeeded")
	}
}

// TestLossyByteExact runs concurrent writers and readers with 10 % loss,
// duplication and reordering in both directions.
func TestLossyByteExact(t *testing.T) {
	imp := func(seed uint64) disktest.Impairment {
		return disktest.Impairment{Loss: 0.10, Duplicate: 0.10, Reorder: 0.10, Seed: seed}
	}
	var serverSide *disktest.LossyConn
	srv, addr := startServer(t, 16<<20, func(pc net.PacketConn) net.PacketConn {
		serverSide = disktest.NewLossyConn(pc, imp(7))
		return serverSide
	})
	clientSide := disktest.NewLossyConn(listenUDP(t), imp(8))
	c := dial(t, addr, clientSide, storage.Options{MaxRequest: 16 << 10})
	ctx := context.Background()

	const workers, chunk = 8, 1 << 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			data := randomBytes(uint64(100+w), chunk)
			off := int64(w) * 2 * chunk
			if _, err := c.WriteAt(ctx, data, off, w%2 == 0); err != nil {
				errs <- err
				return
			}
			// Overwrite part of it: a stale duplicate of the first write
			// must not win.
			copy(data[1000:], randomBytes(uint64(200+w), 70000))
			if _, err := c.WriteAt(ctx, data[1000:71000], off+1000, false); err != nil {
				errs <- err
				return
			}
			got := make([]byte, chunk)
			if _, err := c.ReadAt(ctx, got, off); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, data) {
				errs <- errors.New("data mismatch")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cs := c.Stats()
	t.Logf("client %+v", cs)
	t.Logf("server %+v", srv.Stats())
	t.Logf("impaired: client sent %d dropped %d dup %d reordered %d; server sent %d dropped %d dup %d reordered %d",
		clientSide.Sent.Load(), clientSide.Dropped.Load(), clientSide.Duplicated.Load(), clientSide.Reordered.Load(),
		serverSide.Sent.Load(), serverSide.Dropped.Load(), serverSide.Duplicated.Load(), serverSide.Reordered.Load())
	if cs.Retransmits == 0 || clientSide.Dropped.Load() == 0 || serverSide.Duplicated.Load() == 0 {
		t.Error("the impairment did not bite: no retransmissions, losses or duplicates")
	}
}

// TestDialSilentCancelClose: Dial of an address where nothing answers
// fails with ErrDiskGone; a cancelled context and a closed client fail
// with their own errors.
func TestDialSilentCancelClose(t *testing.T) {
	_, addr := startServer(t, 1<<20, nil)
	c := dial(t, addr, nil, storage.Options{})
	hole := listenUDP(t) // reads nothing, answers nothing
	defer hole.Close()
	c2, err := storage.Dial(listenUDP(t), hole.LocalAddr(), storage.Options{InitialRTO: time.Millisecond, MaxRTO: 5 * time.Millisecond, MaxRetries: 3})
	if !errors.Is(err, storage.ErrDiskGone) || c2 != nil {
		t.Fatalf("Dial of a silent address = %v, %v; want ErrDiskGone", c2, err)
	}
	if _, err := c.ReadAt(context.Background(), make([]byte, 100), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.ReadAt(ctx, make([]byte, 100), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadAt with a cancelled context = %v", err)
	}
	if err := c.Flush(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Flush with a cancelled context = %v", err)
	}
	c.Close()
	if _, err := c.ReadAt(context.Background(), make([]byte, 100), 0); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("ReadAt after Close = %v", err)
	}
}

// TestServerRestartIsTransparent restarts the disk (same file, same
// socket, new epoch) while a write waits for it: the client reopens its
// session and the write completes.
func TestServerRestartIsTransparent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	pc := listenUDP(t)
	defer pc.Close()
	serve := func(size int64) (*disk.Server, chan error) {
		srv, err := disk.NewServer(disk.Config{Path: path, Size: size, Authorizer: disk.OpenAccess{}})
		if err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Time{})
		done := make(chan error, 1)
		go func() { done <- srv.Serve(pc) }()
		return srv, done
	}
	srv, done := serve(1 << 20)
	c := dial(t, pc.LocalAddr(), nil, storage.Options{})
	ctx := context.Background()
	a := randomBytes(5, 100000)
	if _, err := c.WriteAt(ctx, a, 0, true); err != nil {
		t.Fatal(err)
	}
	epoch := c.Info().Epoch
	srv.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	b := randomBytes(6, 100000)
	wrote := make(chan error, 1)
	go func() { _, err := c.WriteAt(ctx, b, 200000, false); wrote <- err }()
	time.Sleep(50 * time.Millisecond) // the write is lost on a dead disk meanwhile
	srv, done = serve(0)
	defer func() { srv.Close(); <-done }()
	if err := <-wrote; err != nil {
		t.Fatalf("write across the restart: %v", err)
	}
	got := make([]byte, 300000)
	if _, err := c.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:100000], a) || !bytes.Equal(got[200000:], b) {
		t.Fatal("data differs after the restart")
	}
	if c.Info().Epoch == epoch || c.Stats().Reopens == 0 {
		t.Fatalf("no reopen seen: epoch %x -> %x, stats %+v", epoch, c.Info().Epoch, c.Stats())
	}
}

// dropReplies drops the server's replies to one operation.
type dropReplies struct {
	net.PacketConn
	op diskproto.Op
}

func (d dropReplies) WriteTo(b []byte, addr net.Addr) (int, error) {
	if len(b) > 3 && diskproto.Op(b[3]&^0x80) == d.op {
		return len(b), nil
	}
	return d.PacketConn.WriteTo(b, addr)
}

func TestErrorKinds(t *testing.T) {
	srv, addr := startServer(t, 1<<20, func(pc net.PacketConn) net.PacketConn {
		return dropReplies{pc, diskproto.OpTrim}
	})
	fast := storage.Options{MinRTO: time.Millisecond, MaxRTO: 10 * time.Millisecond, InitialRTO: time.Millisecond, MaxRetries: 4}

	// A capability sent to a disk in open mode is refused with the code.
	_, err := storage.Dial(listenUDP(t), addr, storage.Options{Capability: [64]byte{9}})
	if !errors.Is(err, storage.ErrRefused) || !errors.Is(err, diskproto.CodeDenied) {
		t.Fatalf("Dial with a capability in open mode = %v, want ErrRefused + CodeDenied", err)
	}

	// A request the disk never answers while it answers others: ErrTimeout.
	// Dial's INFO gets the fast schedule too (1 ms, 4 tries): on a loaded
	// machine (CI's race run) every try can pass unanswered in time, so
	// Dial is tried again, bounded, on a fresh socket.
	var c *storage.Client
	for try := 0; c == nil; try++ {
		pc := listenUDP(t)
		c, err = storage.Dial(pc, addr, fast)
		if err != nil {
			pc.Close()
			if !errors.Is(err, storage.ErrDiskGone) || try == 50 {
				t.Fatalf("Dial with 1 ms RTOs, try %d: %v", try+1, err)
			}
		}
	}
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			c.ReadAt(ctx, make([]byte, 512), 0)
			time.Sleep(time.Millisecond)
		}
	})
	err = c.Trim(ctx, 0, 4096)
	close(stop)
	wg.Wait()
	if !errors.Is(err, storage.ErrTimeout) {
		t.Fatalf("Trim without replies = %v, want ErrTimeout", err)
	}

	// A disk that is gone: ErrDiskGone.
	srv.Close()
	if _, err := c.ReadAt(ctx, make([]byte, 512), 0); !errors.Is(err, storage.ErrDiskGone) {
		t.Fatalf("ReadAt from a closed disk = %v, want ErrDiskGone", err)
	}
	if c.Stats().Timeouts < 2 {
		t.Fatalf("timeouts not counted: %+v", c.Stats())
	}
}

// TestQueueFullRecovers overloads a disk with one worker and a queue of
// one: its drops are counted and retransmission completes every read.
func TestQueueFullRecovers(t *testing.T) {
	srv, addr := startServerConfig(t, disk.Config{Path: filepath.Join(t.TempDir(), "d.img"), Size: 4 << 20,
		Authorizer: disk.OpenAccess{}, Workers: 1, Queue: 2}, nil)
	c := dial(t, addr, nil, storage.Options{})
	want := randomBytes(8, 4<<20)
	if _, err := c.WriteAt(context.Background(), want, 0, false); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for q := range 16 {
		wg.Go(func() {
			p := make([]byte, 64<<10)
			off := int64(q) * (256 << 10)
			if _, err := c.ReadAt(context.Background(), p, off); err != nil {
				t.Error(err)
			} else if !bytes.Equal(p, want[off:off+int64(len(p))]) {
				t.Error("data mismatch")
			}
		})
	}
	wg.Wait()
	if srv.Stats().Drops["queue_full"] == 0 {
		t.Fatalf("no queue_full drops: %+v", srv.Stats())
	}
	t.Logf("server %+v; client %+v", srv.Stats(), c.Stats())
}

// TestContextAbandonFreesWindow abandons more reads than the window holds
// (the disk never answers them); the window must not leak.
func TestContextAbandonFreesWindow(t *testing.T) {
	_, addr := startServer(t, 1<<20, func(pc net.PacketConn) net.PacketConn {
		return dropReplies{pc, diskproto.OpRead}
	})
	c := dial(t, addr, nil, storage.Options{Window: 4})
	for i := range 3 * 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		_, err := c.ReadAt(ctx, make([]byte, 4096), int64(i)*4096)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("read %d: %v, want DeadlineExceeded", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.WriteAt(ctx, []byte("still works"), 0, false); err != nil {
		t.Fatalf("write after abandoned reads: %v", err)
	}
}

// TestWindowQueue: many more callers than the window holds, some giving
// up while they wait for room, others closing nothing: every caller that
// did not give up completes, in any order, and the window ends empty
// (a later request still goes at once). The callers wait first come,
// first served, each woken alone when room frees (run by -race).
func TestWindowQueue(t *testing.T) {
	_, addr := startServer(t, 1<<20, nil)
	c := dial(t, addr, nil, storage.Options{Window: 2})
	var wg sync.WaitGroup
	var done, gaveUp atomic.Int64
	for g := range 32 {
		wg.Go(func() {
			for i := range 20 {
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if (g+i)%5 == 0 {
					ctx, cancel = context.WithTimeout(ctx, time.Duration(i%3)*100*time.Microsecond)
				}
				_, err := c.WriteAt(ctx, []byte("queued"), int64(g*4096+i*8), false)
				cancel()
				switch {
				case err == nil:
					done.Add(1)
				case errors.Is(err, context.DeadlineExceeded):
					gaveUp.Add(1)
				default:
					t.Errorf("caller %d, write %d: %v", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if done.Load() == 0 || done.Load()+gaveUp.Load() != 32*20 {
		t.Fatalf("%d writes done, %d given up, of %d", done.Load(), gaveUp.Load(), 32*20)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.WriteAt(ctx, []byte("after"), 0, false); err != nil {
		t.Fatalf("write after the crowd: %v", err)
	}
	t.Logf("%d done, %d gave up; client %+v", done.Load(), gaveUp.Load(), c.Stats())
}
