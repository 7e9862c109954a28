package nbd_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/peripherals/disk/nbd"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/stacktest"
)

var (
	ipClient = netip.MustParseAddr("10.9.0.1")
	ipServer = netip.MustParseAddr("10.9.0.2")
)

// serveStack is serve on the user-level stack, as in a disk peripheral:
// the NBD server listens on stack/tcp (whose connections lend their
// receive ring, so WRITEs are streamed into the file) on one stack of an
// in-memory pair, and clients dial from the other.
func serveStack(t testing.TB, size int64, cfg nbd.Config) *served {
	t.Helper()
	p := stacktest.New(t, stacktest.Options{Warmup: true,
		A: stack.Config{Addr: netip.PrefixFrom(ipClient, 24)},
		B: stack.Config{Addr: netip.PrefixFrom(ipServer, 24)}})
	path := filepath.Join(t.TempDir(), "disk.img")
	ds, err := disk.NewServer(disk.Config{Path: path, Size: size, Authorizer: disk.OpenAccess{}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Backend == nil {
		cfg.Backend = ds
	} else if w, ok := cfg.Backend.(*failingReads); ok {
		w.Server = ds
	}
	ns, err := nbd.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := p.B.ListenTCP(netip.AddrPortFrom(ipServer, nbd.Port))
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, ns, ds, ln)
	dial := func(t testing.TB) net.Conn {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := p.A.DialTCP(ctx, netip.AddrPort{}, netip.AddrPortFrom(ipServer, nbd.Port))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := netip.AddrPortFrom(ipServer, nbd.Port).String()
	return &served{addr: a, url: "nbd://" + a + "/", disk: ds, nbd: ns, path: path, dial: dial}
}

// connect opens a connection to s's export name, through s.dial when s
// runs on the user-level stack.
func (s *served) connect(t testing.TB, name string) *rawClient {
	t.Helper()
	if s.dial == nil {
		c, _ := connect(t, s.addr, name)
		return c
	}
	c := s.dial(t)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	r := &rawClient{t: t, c: c}
	if err := r.hello(3); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.goExport(name); err != nil {
		t.Fatal(err)
	}
	return r
}

// failingReads is the disk with pieces of READs failing at one offset.
type failingReads struct {
	*disk.Server
	at int64
}

func (f *failingReads) ReadPieceAt(p []byte, off int64) error {
	if off <= f.at && f.at < off+int64(len(p)) {
		return errors.New("injected read failure")
	}
	return f.Server.ReadPieceAt(p, off)
}

// TestStreamedReadFails: a READ streamed into the send ring that fails
// before any of its reply went out is answered with EIO and the
// connection goes on; one that fails after the header (which said
// success) went out closes the connection instead of sending wrong data.
func TestStreamedReadFails(t *testing.T) {
	const n = 1 << 20 // above the inline limit: streamed
	fr := &failingReads{at: 5 << 20}
	s := serveStack(t, 8<<20, nbd.Config{Backend: fr})
	c := s.connect(t, nbd.OpenExport)
	// Fails on its first piece: an error reply, then a good READ.
	if err := c.request(cmdRead, 0, 1, 5<<20, n, nil); err != nil {
		t.Fatal(err)
	}
	h, errno, _, err := c.reply(func(uint64) int { return 0 })
	if err != nil || h != 1 || errno != 5 {
		t.Fatalf("READ failing at once: handle %d errno %d, %v; want handle 1 errno 5 (EIO)", h, errno, err)
	}
	if err := c.request(cmdRead, 0, 2, 0, n, nil); err != nil {
		t.Fatal(err)
	}
	if h, errno, data, err := c.reply(func(uint64) int { return n }); err != nil || h != 2 || errno != 0 || len(data) != n {
		t.Fatalf("READ after the failure: handle %d errno %d, %d bytes, %v", h, errno, len(data), err)
	}
	// Fails past its start, 6 MiB long where the send ring holds at most
	// 4 MiB (tcp.DefaultMaxBuffer), so the header and the first pieces
	// went out: the connection closes short of 6 MiB.
	const long = 6 << 20
	if err := c.request(cmdRead, 0, 3, 0, long, nil); err != nil {
		t.Fatal(err)
	}
	var hdr [16]byte
	if _, err := io.ReadFull(c.c, hdr[:]); err != nil {
		t.Fatalf("no reply header: %v", err)
	}
	if binary.BigEndian.Uint32(hdr[4:]) != 0 {
		t.Fatalf("errno %d: the failure came before anything was sent", binary.BigEndian.Uint32(hdr[4:]))
	}
	c.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.Copy(io.Discard, c.c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after %d bytes of data the connection stayed open", got)
	}
	if err == nil && got >= long {
		t.Fatalf("read %d bytes of data after the header; want the connection closed short of %d", got, long)
	}
}
