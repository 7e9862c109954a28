package interop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/nstest"
	"github.com/netstation/netstation/internal/privtest"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/link/afpacket"
	"github.com/netstation/netstation/stack/link/impair"
	"github.com/netstation/netstation/stack/tcp"
)

const tcpInteropBytes = 64 << 20

// exchange sends n bytes each way over c at once (full duplex) and checks
// both directions byte for byte through SHA-256 of a known stream.
func exchange(t *testing.T, c net.Conn, n int) {
	t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*131 + i>>12)
	}
	want := sha256.Sum256(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = closeWrite(c)
		}
		errc <- err
	}()
	h := sha256.New()
	got, err := io.Copy(h, c)
	if err != nil || got != int64(n) {
		t.Fatalf("read %d of %d bytes: %v", got, n, err)
	}
	if werr := <-errc; werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("received stream differs from the one sent")
	}
}

func closeWrite(c net.Conn) error {
	return c.(interface{ CloseWrite() error }).CloseWrite()
}

// kernelEcho runs in the kernel namespace: it sends n bytes, reads until
// EOF and checks what it read is the same stream.
func kernelPeer(c net.Conn, n int) error {
	defer c.Close()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*131 + i>>12)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = closeWrite(c)
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return io.ErrUnexpectedEOF
	}
	return <-errc
}

// TestTCPKernelClientToUs: a kernel client connects to our listener; 64
// MiB go each way at once, byte-exact.
func TestTCPKernelClientToUs(t *testing.T) {
	forBoth(t, func(t *testing.T, bridged bool) {
		w := newWorld(t, bridged)
		l, err := w.st.ListenTCP(netip.AddrPortFrom(userAddr.Addr(), 5001))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		kerr := make(chan error, 1)
		if err := w.kernel.Do(func() error {
			d := net.Dialer{Timeout: 5 * time.Second}
			kc, err := d.Dial("tcp4", netip.AddrPortFrom(userAddr.Addr(), 5001).String())
			if err != nil {
				return err
			}
			go func() { kerr <- kernelPeer(kc, tcpInteropBytes) }()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		exchange(t, c, tcpInteropBytes)
		if err := <-kerr; err != nil {
			t.Fatalf("kernel side: %v", err)
		}
		checkKernel(t, w)
	})
}

// TestTCPWeDialKernel: our Dial to a kernel listener, 64 MiB each way.
func TestTCPWeDialKernel(t *testing.T) {
	forBoth(t, func(t *testing.T, bridged bool) {
		w := newWorld(t, bridged)
		var kl net.Listener
		if err := w.kernel.Do(func() error {
			var err error
			kl, err = net.Listen("tcp4", netip.AddrPortFrom(kernelAddr.Addr(), 5002).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer kl.Close()
		kerr := make(chan error, 1)
		go func() {
			kc, err := kl.Accept()
			if err != nil {
				kerr <- err
				return
			}
			kerr <- kernelPeer(kc, tcpInteropBytes)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := w.st.DialTCP(ctx, netip.AddrPort{}, netip.AddrPortFrom(kernelAddr.Addr(), 5002))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		exchange(t, c, tcpInteropBytes)
		if err := <-kerr; err != nil {
			t.Fatalf("kernel side: %v", err)
		}
		checkKernel(t, w)
	})
}

// TestTCPKernelRefusedAndReset: the kernel's answers to a closed port and
// to an abort reach our API as the errors Go users expect.
func TestTCPKernelRefusedAndReset(t *testing.T) {
	w := newWorld(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := w.st.DialTCP(ctx, netip.AddrPort{}, netip.AddrPortFrom(kernelAddr.Addr(), 5999))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial to a closed kernel port: %v", err)
	}
	// Our listener's Close resets a connection the kernel made.
	l, err := w.st.ListenTCP(netip.AddrPortFrom(userAddr.Addr(), 5003))
	if err != nil {
		t.Fatal(err)
	}
	var kc net.Conn
	if err := w.kernel.Do(func() error {
		var err error
		kc, err = net.DialTimeout("tcp4", netip.AddrPortFrom(userAddr.Addr(), 5003).String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.(*tcp.Conn).Abort()
	kc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := kc.Read(make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("kernel read after our abort: %v", err)
	}
	l.Close()
}

func checkKernel(t *testing.T, w *world) {
	t.Helper()
	if n := kernelCsumErrors(t, w.kernel); n != 0 {
		t.Errorf("kernel InCsumErrors = %d", n)
	}
	out, err := w.kernel.Run(t, 5*time.Second, "nstat", "-az", "TcpInErrs", "TcpExtTCPCsumErrors")
	if err == nil {
		t.Logf("kernel nstat:\n%s", out)
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && (f[0] == "TcpInErrs") && f[1] != "0" {
				t.Errorf("kernel %s = %s", f[0], f[1])
			}
		}
	}
	s := w.st.Stats()
	t.Logf("our stack: %d TCP drops by reason %v; tcp %+v", s.TotalDrops(), nonZero(s.Drops[:]), tcpStats(w))
}

func nonZero(d []uint64) map[int]uint64 {
	m := map[int]uint64{}
	for i, v := range d {
		if v != 0 {
			m[i] = v
		}
	}
	return m
}

func tcpStats(w *world) string {
	st := w.st.TCP().Stats()
	return strings.Join([]string{
		"segsIn=" + itoa(st.SegsIn.Load()), "segsOut=" + itoa(st.SegsOut.Load()),
		"retrans=" + itoa(st.RetransSegs.Load()), "timeouts=" + itoa(st.Timeouts.Load()),
		"gsoOut=" + itoa(st.GSOOut.Load()), "gsoIn=" + itoa(st.GSOIn.Load()),
	}, " ")
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

// TestTCPKernelLossy: 16 MiB each way between a kernel socket and ours
// while our link loses 1 % of the frames in each direction; the two
// SACK implementations recover each other's losses.
func TestTCPKernelLossy(t *testing.T) {
	privtest.Tool(t, "ip")
	k, u := nstest.New(t, "k"), nstest.New(t, "u")
	kIf, uIf := nstest.Veth(t, k, "k0", u, "u0", 1500)
	k.AddrAdd(t, kIf, kernelAddr.String())
	var st *stack.Stack
	var il *impair.Link
	if err := u.Do(func() error {
		l, err := afpacket.Open("u0", afpacket.Options{})
		if err != nil {
			return err
		}
		il = impair.Wrap(l)
		st, err = stack.New(il, stack.Config{MAC: uIf.Attrs().HardwareAddr, Addr: userAddr, MTU: 1500})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var kl net.Listener
	if err := k.Do(func() error {
		var err error
		kl, err = net.Listen("tcp4", netip.AddrPortFrom(kernelAddr.Addr(), 5004).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	const n = 16 << 20
	kerr := make(chan error, 1)
	go func() {
		kc, err := kl.Accept()
		if err != nil {
			kerr <- err
			return
		}
		kc.SetDeadline(time.Now().Add(60 * time.Second))
		kerr <- kernelPeer(kc, n)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := st.DialTCP(ctx, netip.AddrPort{}, netip.AddrPortFrom(kernelAddr.Addr(), 5004))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	il.Set(impair.Params{LossPPM: 10000, Seed: 11})
	c.SetDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	exchange(t, c, n)
	if err := <-kerr; err != nil {
		t.Fatalf("kernel side: %v", err)
	}
	ts := st.TCP().Stats()
	t.Logf("%v for 16 MiB each way; impair %+v; we retransmitted %d (fast %d, timeouts %d, probes %d)",
		time.Since(start), il.Counters(), ts.RetransSegs.Load(), ts.FastRetransmits.Load(), ts.Timeouts.Load(), ts.TailLossProbes.Load())
	if il.Counters().TxDropped == 0 || il.Counters().RxDropped == 0 {
		t.Fatal("the link lost nothing: the test proved nothing")
	}
	if out, err := k.Run(t, 5*time.Second, "nstat", "-az", "TcpRetransSegs", "TcpExtTCPSackRecovery", "TcpExtTCPSACKReneging", "TcpInErrs"); err == nil {
		t.Logf("kernel:\n%s", out)
	}
	if n := kernelCsumErrors(t, k); n != 0 {
		t.Errorf("kernel InCsumErrors = %d", n)
	}
}
