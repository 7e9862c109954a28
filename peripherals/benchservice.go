package peripherals

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals/bench"
)

// Bench ports: beside iperf3's 5201, which cpu peripherals serve with an
// iperf3-compatible server (cpu.StartIperf3).
const (
	BenchPort = 5301 // bulk data
	EchoPort  = 5302 // request/response
)

// BenchArgs drive one side of a bench run on a peripheral.
type BenchArgs struct {
	Stack    string         `json:"stack"` // user or kernel
	Dst      netip.AddrPort `json:"dst,omitempty"`
	Size     int            `json:"size,omitempty"`
	Duration time.Duration  `json:"duration,omitempty"`
	Parallel int            `json:"parallel,omitempty"`
	Rate     float64        `json:"rate,omitempty"`
	Count    int            `json:"count,omitempty"` // rtt pings
	// NoGSO sends every datagram as a frame of its own (user stack).
	NoGSO bool `json:"no_gso,omitempty"`
}

// BenchReady is the first message a receiving or echoing side streams:
// its socket is open.
type BenchReady struct {
	Ready bool           `json:"ready"`
	Local netip.AddrPort `json:"local"`
}

// benchConn opens a socket on the chosen stack: the user-level one, or
// the kernel's on the baseline address (which must be on).
func (p *Runtime) benchConn(stackName string, port uint16, noGSO bool) (bench.Conn, netip.AddrPort, error) {
	switch stackName {
	case "user", "":
		ap := netip.AddrPortFrom(p.cfg.Addr.Addr(), port)
		c, err := p.stack.ListenUDP(ap)
		if err != nil {
			return nil, ap, err
		}
		c.SetGSO(!noGSO)
		return bench.User(c), netip.AddrPortFrom(ap.Addr(), uint16(c.LocalAddr().(*net.UDPAddr).Port)), nil
	case "kernel":
		p.kernel.mu.Lock()
		on := p.kernel.on
		p.kernel.mu.Unlock()
		if !on {
			return nil, netip.AddrPort{}, fmt.Errorf("kernel baseline address is not up on %s", p.cfg.Name)
		}
		ap := netip.AddrPortFrom(KernelAddr(p.cfg.Addr).Addr(), port)
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, ap, err
		}
		// The kernel's defaults (208 KiB) drop most of a burst at line rate:
		// give it the same room the user-level sockets have.
		_ = c.SetReadBuffer(8 << 20)
		_ = c.SetWriteBuffer(8 << 20)
		return bench.Kernel(c), c.LocalAddr().(*net.UDPAddr).AddrPort(), nil
	}
	return nil, netip.AddrPort{}, fmt.Errorf("unknown stack %q (user or kernel)", stackName)
}

// registerBench adds the bench operations every peripheral serves:
// bench-recv (count a test), bench-send (send one), bench-echo (answer
// pings) and bench-rtt (ping a peer).
func (p *Runtime) registerBench() {
	p.Handle(OpBenchRecv, func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
		var a BenchArgs
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		c, local, err := p.benchConn(a.Stack, BenchPort, a.NoGSO)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		_ = s.Send(BenchReady{Ready: true, Local: local})
		return bench.RunReceiver(ctx, c, bench.ReceiverOptions{Stack: a.Stack, OnInterval: func(iv bench.Interval) { _ = s.Send(iv) }})
	})
	p.Handle(OpBenchSend, func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
		var a BenchArgs
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		n := max(a.Parallel, 1)
		conns := make([]bench.Conn, 0, n)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for i := 0; i < n; i++ {
			c, _, err := p.benchConn(a.Stack, 0, a.NoGSO)
			if err != nil {
				return nil, err
			}
			conns = append(conns, c)
		}
		return bench.RunSenderStreams(ctx, conns, a.Dst, bench.SenderOptions{
			Stack: a.Stack, Size: a.Size, Duration: a.Duration, Rate: a.Rate,
			OnInterval: func(iv bench.Interval) { _ = s.Send(iv) },
		})
	})
	p.Handle(OpBenchEcho, func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
		var a BenchArgs
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		c, local, err := p.benchConn(a.Stack, EchoPort, a.NoGSO)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		_ = s.Send(BenchReady{Ready: true, Local: local})
		n, err := bench.RunEcho(ctx, c)
		if ctx.Err() != nil {
			err = nil
		}
		return n, err
	})
	p.Handle(OpBenchRTT, func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
		var a BenchArgs
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		c, _, err := p.benchConn(a.Stack, 0, a.NoGSO)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return bench.RunRTT(ctx, c, a.Dst, bench.RTTOptions{Stack: a.Stack, Size: a.Size, Count: a.Count, Duration: a.Duration})
	})
	p.AddService(fmt.Sprintf("bench/udp:%d", BenchPort))
}
