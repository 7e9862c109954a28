package peripherals

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/netstation/netstation/internal/cpupin"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/ethtool"
	"github.com/netstation/netstation/peripherals/bench"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/link/afpacket"
)

// Bench ports: beside iperf3's 5201, which cpu peripherals serve with an
// iperf3-compatible server (cpu.StartIperf3).
const (
	BenchPort = 5301 // bulk data
	EchoPort  = 5302 // request/response
)

// The stacks a bench side can run on.
const (
	StackUser        = "user"
	StackKernel      = "kernel"       // kernel sockets at their best: UDP_SEGMENT + UDP_GRO
	StackKernelPlain = "kernel-plain" // kernel sockets, one frame per datagram
	// StackKernelBusyPoll is the kernel at its best for latency, for
	// round trips only (bench-echo, bench-rtt): blocking sockets with
	// SO_BUSY_POLL, the port's GRO on so its packets come through NAPI
	// (dgram.BusyPollConn).
	StackKernelBusyPoll = "kernel-busypoll"
)

// KernelBenchBuffer is the kernel sockets' receive and send buffer in a
// bench run (SO_RCVBUFFORCE): the standalone reference pair uses the
// same, so the two compare like with like.
const KernelBenchBuffer = 64 << 20

// BenchArgs drive one side of a bench run on a peripheral.
type BenchArgs struct {
	Stack    string         `json:"stack"` // user, kernel or kernel-plain
	Dst      netip.AddrPort `json:"dst,omitempty"`
	Size     int            `json:"size,omitempty"`
	Duration time.Duration  `json:"duration,omitempty"`
	Parallel int            `json:"parallel,omitempty"`
	Rate     float64        `json:"rate,omitempty"`
	// Window, if set, holds each stream to at most Window datagrams
	// ahead of what the receiving application read (receiver credit,
	// bench.SenderOptions.Window).
	Window int `json:"window,omitempty"`
	Count  int `json:"count,omitempty"` // rtt pings
	// NoGSO sends every datagram as a frame of its own (user stack; for
	// kernel sockets it means kernel-plain).
	NoGSO bool `json:"no_gso,omitempty"`
	// Poll, for the user stack's echo and rtt sockets, is how long a
	// reader with nothing queued drives the link itself before it sleeps
	// (stack.UDPConn.SetPollBudget: run to completion); 0: it sleeps.
	Poll time.Duration `json:"poll_ns,omitempty"`
}

// BenchReady is the first message a receiving or echoing side streams:
// its socket is open.
type BenchReady struct {
	Ready bool           `json:"ready"`
	Local netip.AddrPort `json:"local"`
}

// benchConn opens a socket on the chosen stack: the user-level one, or
// the kernel's on the baseline address (which must be on).
//
// A fixed port may still be held for a moment by the previous run's
// socket: the CLI cancels a receiver or echo and starts the next run at
// once, while this side's handler closes its socket only when it sees the
// cancellation. So an address in use is retried for up to benchBindWait.
func (p *Runtime) benchConn(stackName string, port uint16, noGSO bool, poll time.Duration, linkPoll bool) (bench.Conn, netip.AddrPort, error) {
	deadline := time.Now().Add(benchBindWait)
	for {
		c, ap, err := p.benchConnOnce(stackName, port, noGSO, poll, linkPoll)
		if err == nil || port == 0 || !(errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, engine.ErrInUse)) || time.Now().After(deadline) {
			return c, ap, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// benchLinkPoll is how long a bench socket's stack keeps polling its link
// after a batch while traffic flows (stack.UDPOptions.LinkPoll).
var benchLinkPoll = 50 * time.Microsecond

// benchBindWait bounds how long benchConn waits for a fixed port that the
// previous run's socket still holds.
const benchBindWait = 3 * time.Second

func (p *Runtime) benchConnOnce(stackName string, port uint16, noGSO bool, poll time.Duration, linkPoll bool) (bench.Conn, netip.AddrPort, error) {
	switch stackName {
	case StackUser, "":
		ap := netip.AddrPortFrom(p.cfg.Addr.Addr(), port)
		// The same buffer as the kernel baseline's socket (like with
		// like): a receiver descheduled for a while rides it out.
		o := stack.UDPOptions{QueueBytes: KernelBenchBuffer, QueueLen: KernelBenchBuffer / 256}
		if linkPoll {
			// A bulk receiver's socket (round trips have a reader's poll
			// budget instead): the receive goroutine polls while traffic
			// flows.
			o.LinkPoll = benchLinkPoll
		}
		c, err := p.stack.ListenUDPOptions(ap, o)
		if err != nil {
			return nil, ap, err
		}
		c.SetGSO(!noGSO)
		c.SetPollBudget(poll)
		return bench.User(c), netip.AddrPortFrom(ap.Addr(), uint16(c.LocalAddr().(*net.UDPAddr).Port)), nil
	case StackKernel, StackKernelPlain, StackKernelBusyPoll:
		p.kernel.mu.Lock()
		on := p.kernel.on
		p.kernel.mu.Unlock()
		if !on {
			return nil, netip.AddrPort{}, fmt.Errorf("kernel baseline address is not up on %s", p.cfg.Name)
		}
		ap := netip.AddrPortFrom(KernelAddr(p.cfg.Addr).Addr(), port)
		if stackName == StackKernelBusyPoll {
			if poll <= 0 {
				return nil, ap, fmt.Errorf("%s is for round trips with a poll budget, not bulk runs", StackKernelBusyPoll)
			}
			c, err := dgram.ListenBusyPoll(ap, poll)
			if err != nil {
				return nil, ap, err
			}
			return c, c.LocalAddr().(*net.UDPAddr).AddrPort(), nil
		}
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, ap, err
		}
		// The kernel's defaults (208 KiB) drop most of a burst at line rate.
		dgram.SetKernelBuffers(c, KernelBenchBuffer)
		mode := dgram.KernelBest
		if stackName == StackKernelPlain || noGSO {
			mode = dgram.KernelPlain
		}
		return dgram.KernelWith(c, mode), c.LocalAddr().(*net.UDPAddr).AddrPort(), nil
	}
	return nil, netip.AddrPort{}, fmt.Errorf("unknown stack %q (user, kernel or kernel-plain)", stackName)
}

// napiFor turns GRO on for the peripheral's port while a busy-polling
// kernel socket reads from it, and returns what puts it back. A veth
// receives through NAPI, which SO_BUSY_POLL polls, only with GRO on (Linux
// 5.13 and later); for the 64 B datagrams of a round trip GRO coalesces
// nothing. Other stacks need nothing: a no-op.
func (p *Runtime) napiFor(stackName string) (restore func(), err error) {
	if stackName != StackKernelBusyPoll {
		return func() {}, nil
	}
	if p.cfg.IfName == "" {
		return nil, fmt.Errorf("%s: %s's link is not a kernel interface", StackKernelBusyPoll, p.cfg.Name)
	}
	was, err := ethtool.Get(p.cfg.IfName, ethtool.GRO)
	if err != nil {
		return nil, err
	}
	if was {
		return func() {}, nil
	}
	if err := ethtool.Set(p.cfg.IfName, ethtool.GRO, true); err != nil {
		return nil, fmt.Errorf("GRO on %s (veth NAPI, for busy polling): %w", p.cfg.IfName, err)
	}
	return func() { _ = ethtool.Set(p.cfg.IfName, ethtool.GRO, false) }, nil
}

// errNoNAPI is a busy-polling run whose datagrams did not come through
// NAPI: its socket slept like a plain one, and its figure would be
// mislabelled.
var errNoNAPI = fmt.Errorf("%s: the datagrams did not come through NAPI, so the socket could not busy-poll", StackKernelBusyPoll)

// rxCounters are what the receiving end has counted so far: its drops
// for want of room (c's socket queue; for a user-level socket also the
// link's ring, in frames) and, to turn ring frames into datagrams, the
// frames and datagrams it took in.
type rxCounters struct {
	socket, ring, frames, datagrams uint64
}

func (p *Runtime) rxCounters(c bench.Conn) rxCounters {
	if ks, ok := dgram.Stats(c); ok {
		return rxCounters{socket: ks.RxQueueDrops}
	}
	var o rxCounters
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	for _, s := range p.stack.Stats().UDP {
		if s.Local == local {
			o.socket, o.datagrams = s.RxDrops, s.RxDatagrams+s.RxDrops
		}
	}
	if l, ok := p.raw.(interface{ Stats() afpacket.Stats }); ok {
		ls := l.Stats()
		o.ring, o.frames = ls.RingDrops, ls.RxFrames
	}
	return o
}

// overflowSince is the receiving end's drops between two snapshots.
func overflowSince(a, b rxCounters) bench.Overflow {
	o := bench.Overflow{Socket: b.socket - a.socket, Ring: b.ring - a.ring}
	if f := b.frames - a.frames; f > 0 && o.Ring > 0 {
		o.RingDatagrams = o.Ring * max(1, (b.datagrams-a.datagrams)/f)
	} else {
		o.RingDatagrams = o.Ring
	}
	return o
}

// offload sums what kernel sockets' batches became since before (nil
// for user-level sockets); send selects the sending side's counters.
func offload(conns []bench.Conn, before []dgram.KernelStats, send bool) *bench.Offload {
	var o *bench.Offload
	for i, c := range conns {
		ks, ok := dgram.Stats(c)
		if !ok {
			return nil
		}
		if o == nil {
			o = &bench.Offload{Mode: ks.Mode.String()}
		}
		b := before[i]
		if send {
			o.Messages += ks.SendMessages - b.SendMessages
			o.Segmented += ks.GSOSends - b.GSOSends
			o.Datagrams += ks.DatagramsSent - b.DatagramsSent
		} else {
			o.Messages += ks.RecvBuffers - b.RecvBuffers
			o.Segmented += ks.GROBuffers - b.GROBuffers
			o.Datagrams += ks.DatagramsReceived - b.DatagramsReceived
		}
	}
	return o
}

func kernelStats(conns []bench.Conn) []dgram.KernelStats {
	out := make([]dgram.KernelStats, len(conns))
	for i, c := range conns {
		out[i], _ = dgram.Stats(c)
	}
	return out
}

// PinArgs pin every thread of a peripheral's process to CPUs (empty:
// back to the CPUs it started with).
type PinArgs struct {
	CPUs []int `json:"cpus"`
	// Lease, with CPUs, returns the process to every CPU it may use
	// unless another pin comes within it: a bench killed mid-measurement
	// does not leave peripherals pinned. Zero: pinned until told.
	Lease time.Duration `json:"lease_ns,omitempty"`
}

// PinResult is where the process may run now, and where it could.
type PinResult struct {
	CPUs    []int `json:"cpus"`
	Allowed []int `json:"allowed"`
}

// registerBench adds the bench operations every peripheral serves:
// bench-recv (count a test), bench-send (send one), bench-echo (answer
// pings) and bench-rtt (ping a peer).
func (p *Runtime) registerBench() {
	_, _ = cpupin.Allowed() // remember the CPUs the process started with, for "pin" to restore
	p.Handle(OpBenchRecv, func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
		var a BenchArgs
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		c, local, err := p.benchConn(a.Stack, BenchPort, a.NoGSO, 0, true)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		ov0, ks0 := p.rxCounters(c), kernelStats([]bench.Conn{c})
		_ = s.Send(BenchReady{Ready: true, Local: local})
		cpu0 := bench.ProcessCPU()
		res, err := bench.RunReceiver(ctx, c, bench.ReceiverOptions{Stack: a.Stack, Batch: bench.MaxBatch, OnInterval: func(iv bench.Interval) { _ = s.Send(iv) }})
		if res != nil {
			res.CPU = bench.ProcessCPU().Sub(cpu0)
			res.Overflow = overflowSince(ov0, p.rxCounters(c))
			res.Offload = offload([]bench.Conn{c}, ks0, false)
		}
		return res, err
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
			// No link poll on a sender's socket: it reads only credits
			// (one datagram per 1,024 sent), which wait in the socket until
			// the window runs out and the stream blocks, and the Go
			// scheduler looks at the netpoller. Polling for them cost the
			// sender's process a fifth of its samples at 64 B (perf: the
			// receive goroutine's recvmmsg, clock reads and yields, on a
			// second CPU when sysmon hands it the P during a long sendmsg).
			c, _, err := p.benchConn(a.Stack, 0, a.NoGSO, 0, false)
			if err != nil {
				return nil, err
			}
			conns = append(conns, c)
		}
		ks0 := kernelStats(conns)
		// Whole super-datagrams per write, the same count for both
		// stacks (like with like): 2 x 44 of 1472 B, 128 of 64 B (the
		// sender cuts a batch to whole runs, 122 of 64 B on the user
		// level stack: stack.UDPConn.MaxRun). Without
		// segmentation offload (kernel-plain, --no-gso) the engine's
		// default.
		batch := 0
		if m, ok := dgram.ModeOf(conns[0]); (ok && m == dgram.KernelBest) || (!ok && !a.NoGSO) {
			batch = min(dgram.GSOBatch(a.Size), bench.MaxBatch)
		}
		cpu0 := bench.ProcessCPU()
		res, err := bench.RunSenderStreams(ctx, conns, a.Dst, bench.SenderOptions{
			Stack: a.Stack, Size: a.Size, Duration: a.Duration, Rate: a.Rate, Window: a.Window, Batch: batch,
			OnInterval: func(iv bench.Interval) { _ = s.Send(iv) },
		})
		if res != nil {
			res.CPU = bench.ProcessCPU().Sub(cpu0)
			res.Offload = offload(conns, ks0, true)
		}
		return res, err
	})
	p.Handle(OpBenchEcho, func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
		var a BenchArgs
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		restore, err := p.napiFor(a.Stack)
		if err != nil {
			return nil, err
		}
		defer restore()
		c, local, err := p.benchConn(a.Stack, EchoPort, a.NoGSO, a.Poll, false)
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
		restore, err := p.napiFor(a.Stack)
		if err != nil {
			return nil, err
		}
		defer restore()
		c, _, err := p.benchConn(a.Stack, 0, a.NoGSO, a.Poll, false)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		res, err := bench.RunRTT(ctx, c, a.Dst, bench.RTTOptions{Stack: a.Stack, Size: a.Size, Count: a.Count, Duration: a.Duration})
		if bp, ok := c.(*dgram.BusyPollConn); ok && err == nil && !bp.BusyPolled() {
			return nil, errNoNAPI
		}
		return res, err
	})
	p.Handle(OpPin, func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
		var a PinArgs
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		if err := p.pinLease.pin(a.CPUs, a.Lease); err != nil {
			return nil, err
		}
		var r PinResult
		var err error
		if r.CPUs, err = cpupin.Current(); err != nil {
			return nil, err
		}
		r.Allowed, err = cpupin.Allowed()
		return r, err
	})
	p.AddService(fmt.Sprintf("bench/udp:%d", BenchPort))
}

// pinLease pins the process and, for a leased pinning, undoes it when
// the lease runs out without another pin.
type pinLease struct {
	mu    sync.Mutex
	timer *time.Timer
	gen   uint64 // a timer that fired while a newer pin held mu stands down
}

func (l *pinLease) pin(cpus []int, lease time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.gen++
	if err := cpupin.Process(cpus); err != nil {
		return err
	}
	if len(cpus) > 0 && lease > 0 {
		gen := l.gen
		l.timer = time.AfterFunc(lease, func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.gen == gen {
				_ = cpupin.Process(nil) // every CPU the process may use
				l.timer = nil
			}
		})
	}
	return nil
}
