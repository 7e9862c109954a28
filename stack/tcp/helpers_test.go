package tcp_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
	"github.com/netstation/netstation/stack/stacktest"
	"github.com/netstation/netstation/stack/tcp"
)

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	ipA  = netip.MustParseAddr("10.9.0.1")
	ipB  = netip.MustParseAddr("10.9.0.2")
)

// world is two stacks on a mem pair; link is each stack's own end, in
// case a test wraps it.
type world struct {
	a, b   *stack.Stack
	la, lb link.Link
}

type worldOpts struct {
	mem      mem.Options
	tcp      tcp.Config
	wrapA    func(link.Link) link.Link
	wrapB    func(link.Link) link.Link
	noWarmup bool
}

func newWorld(t testing.TB, o worldOpts) *world {
	t.Helper()
	if o.mem.Depth == 0 {
		o.mem.Depth = 8192
	}
	if o.tcp.TimeWait == 0 {
		o.tcp.TimeWait = 100 * time.Millisecond
	}
	p := stacktest.New(t, stacktest.Options{Mem: o.mem, WrapA: o.wrapA, WrapB: o.wrapB, Warmup: !o.noWarmup,
		A: stack.Config{Addr: netip.PrefixFrom(ipA, 24), TCP: o.tcp},
		B: stack.Config{Addr: netip.PrefixFrom(ipB, 24), TCP: o.tcp}})
	return &world{a: p.A, b: p.B, la: p.LinkA, lb: p.LinkB}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// connect opens a listener on b:port and dials it from a; it returns
// (client on a, server on b).
func (w *world) connect(t testing.TB, port uint16) (*tcp.Conn, *tcp.Conn) {
	t.Helper()
	l, err := w.b.ListenTCP(netip.AddrPortFrom(ipB, port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	cc, err := w.a.DialTCP(ctxT(t, 5*time.Second), netip.AddrPort{}, netip.AddrPortFrom(ipB, port))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("accept: %v", r.err)
	}
	t.Cleanup(func() { cc.Close(); r.c.Close() })
	return cc, r.c.(*tcp.Conn)
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i>>8) + seed
	}
	return b
}

// transfer writes data on w and checks r reads exactly it, concurrently.
func transfer(t testing.TB, w io.WriteCloser, r io.Reader, data []byte, closeAfter bool) {
	t.Helper()
	var wg sync.WaitGroup
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, werr = w.Write(data)
		if closeAfter {
			if cw, ok := w.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
		}
	}()
	got := make([]byte, 0, len(data))
	buf := make([]byte, 256<<10)
	for len(got) < len(data) {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("read after %d of %d bytes: %v", len(got), len(data), err)
		}
	}
	wg.Wait()
	if werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if !bytes.Equal(got, data) {
		i := 0
		for i < len(got) && got[i] == data[i] {
			i++
		}
		t.Fatalf("data differs at byte %d of %d", i, len(data))
	}
	if closeAfter {
		n, err := r.Read(buf)
		if n != 0 || err != io.EOF {
			t.Fatalf("after FIN: %d, %v; want EOF", n, err)
		}
	}
}
