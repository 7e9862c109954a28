package nbd_test

import (
	"context"
	"net"
	"net/netip"
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
	cfg.Backend = ds
	ns, err := nbd.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := p.B.ListenTCP(netip.AddrPortFrom(ipServer, nbd.Port))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ns.Serve(ln) }()
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("nbd close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if err := ds.Close(); err != nil {
			t.Errorf("disk close: %v", err)
		}
	})
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
