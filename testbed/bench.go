package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/internal/cpupin"
	"github.com/netstation/netstation/internal/ethtool"
	"github.com/netstation/netstation/internal/udpref"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/bench"
)

// BenchArgs shape one bench run between two peripherals on one stack.
type BenchArgs struct {
	From, To string
	Stack    string // user, kernel (UDP_SEGMENT + UDP_GRO) or kernel-plain
	Size     int
	Duration time.Duration
	Parallel int
	// Rate is the sender's target in bits/s: 0 = as fast as possible,
	// RateAuto = held by the receiver's credit (bench.DefaultWindow).
	Rate float64
	// RTTCount pings measure the round trip after the bulk run (0: none),
	// twice: both ends pinned to one CPU, then to two different CPUs.
	RTTCount int
	// RTTPoll, for the user stack's round trips, is how long each end's
	// reader drives the link itself before it sleeps (run to completion,
	// stack.UDPConn.SetPollBudget); 0: readers sleep until woken.
	RTTPoll time.Duration
	// NoGSO: one frame per datagram on every stack (the kernel's sockets
	// without UDP_SEGMENT/UDP_GRO).
	NoGSO bool
}

// RateAuto asks Bench for a sender held by its receiver: each stream
// stays at most bench.DefaultWindow datagrams ahead of what the receiving
// application has read (it reports its progress every quarter window), so
// the run measures what the receiver sustains, not how much an unpaced
// sender throws away at its buffers.
const RateAuto = -1

// Bench runs one test from a.From to a.To: a receiver on To, a sender on
// From, then (optionally) a request/response run; both sides run inside
// the peripherals, on their user-level stacks or, for the kernel baseline,
// on kernel sockets in the same namespaces. onInterval (may be nil) gets
// the receiver's figures as each interval ends.
func Bench(ctx context.Context, testbed string, a BenchArgs, onInterval func(bench.Interval)) (*bench.Report, error) {
	dir := Dir(testbed)
	plan, err := LoadPlan(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	from, err := plan.Node(a.From)
	if err != nil {
		return nil, err
	}
	to, err := plan.Node(a.To)
	if err != nil {
		return nil, err
	}
	if from == to {
		return nil, errors.New("bench needs two different peripherals")
	}
	if err := checkPath(from, to); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	dst := to.Addr.Addr()
	if a.Stack == peripherals.StackKernel || a.Stack == peripherals.StackKernelPlain {
		off, err := kernelAddrsOn(ctx, dir, from, to)
		defer off()
		if err != nil {
			return nil, err
		}
		dst = peripherals.KernelAddr(to.Addr).Addr()
	}
	pacing, window := "unpaced", 0
	switch {
	case a.Rate == RateAuto:
		a.Rate, window = 0, bench.DefaultWindow
		pacing = fmt.Sprintf("held by receiver credit: at most %d datagrams ahead of what the receiver read", window)
	case a.Rate > 0:
		pacing = fmt.Sprintf("paced at %.3f Gbit/s", a.Rate/1e9)
	}
	rep, err := benchOnce(ctx, dir, from, to, a, window, dst, onInterval)
	if err != nil {
		return nil, err
	}
	rep.Netstation.Pacing = pacing
	if a.RTTCount > 0 {
		if err := benchRTTPinned(ctx, dir, plan, from, to, a, dst, rep); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// benchOnce runs one bulk test: receiver on to, sender on from.
func benchOnce(ctx context.Context, dir string, from, to *NodePlan, a BenchArgs, window int, dst netip.Addr, onInterval func(bench.Interval)) (*bench.Report, error) {
	args := peripherals.BenchArgs{Stack: a.Stack, Size: a.Size, Duration: a.Duration, Parallel: a.Parallel, Rate: a.Rate, Window: window, NoGSO: a.NoGSO}

	// Receiver first; the sender starts once its socket is open.
	var recv bench.Result
	recvDone, ready := make(chan error, 1), make(chan struct{})
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	go func() {
		first := true
		recvDone <- nodeCall(rctx, dir, to.Name, peripherals.OpBenchRecv, args, &recv, func(m json.RawMessage) error {
			if first {
				first = false
				close(ready)
				return nil
			}
			var iv bench.Interval
			if onInterval != nil && json.Unmarshal(m, &iv) == nil {
				onInterval(iv)
			}
			return nil
		})
	}()
	select {
	case <-ready:
	case err := <-recvDone:
		return nil, fmt.Errorf("%s: receiver: %w", to.Name, err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	sargs := args
	sargs.Dst = netip.AddrPortFrom(dst, peripherals.BenchPort)
	var send bench.Result
	if err := nodeCall(ctx, dir, from.Name, peripherals.OpBenchSend, sargs, &send, nil); err != nil {
		return nil, fmt.Errorf("%s: sender: %w", from.Name, err)
	}
	select {
	case err := <-recvDone:
		if err != nil {
			return nil, fmt.Errorf("%s: receiver: %w", to.Name, err)
		}
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("%s: receiver did not finish", to.Name)
	}
	return bench.Merge(&send, &recv), nil
}

// benchRTT's pinnings: both ends on one CPU, then on two different ones
// (when there are two). Cross-CPU wake-ups decide a round trip on a VM,
// so a figure without its pinning cannot be compared.
func benchRTTPinned(ctx context.Context, dir string, plan *Plan, from, to *NodePlan, a BenchArgs, dst netip.Addr, rep *bench.Report) error {
	// Pinnings are leased: were this process killed mid-run, the
	// peripherals return to every CPU by themselves. renew keeps the
	// current pinning while the measurement runs.
	const lease = 15 * time.Second
	pin := func(node string, cpus []int) (peripherals.PinResult, error) {
		var r peripherals.PinResult
		err := nodeCall(ctx, dir, node, peripherals.OpPin, peripherals.PinArgs{CPUs: cpus, Lease: lease}, &r, nil)
		return r, err
	}
	renew := func(p []int, q []int) (stop func()) {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			t := time.NewTicker(lease / 3)
			defer t.Stop()
			for {
				select {
				case <-rctx.Done():
					return
				case <-t.C:
					_ = nodeCall(rctx, dir, from.Name, peripherals.OpPin, peripherals.PinArgs{CPUs: p, Lease: lease}, nil, nil)
					_ = nodeCall(rctx, dir, to.Name, peripherals.OpPin, peripherals.PinArgs{CPUs: q, Lease: lease}, nil, nil)
				}
			}
		}()
		return func() { cancel(); <-done }
	}
	unpin := func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = nodeCall(c, dir, from.Name, peripherals.OpPin, peripherals.PinArgs{}, nil, nil)
		_ = nodeCall(c, dir, to.Name, peripherals.OpPin, peripherals.PinArgs{}, nil, nil)
	}
	defer unpin()
	fr, err := pin(from.Name, nil)
	if err != nil {
		return fmt.Errorf("%s: pin: %w", from.Name, err)
	}
	tr, err := pin(to.Name, nil)
	if err != nil {
		return fmt.Errorf("%s: pin: %w", to.Name, err)
	}
	if len(fr.Allowed) == 0 || len(tr.Allowed) == 0 {
		return errors.New("pin: a peripheral reports no CPUs")
	}
	type pinning struct {
		from, to []int
		cross    bool
	}
	// The kernel at its best for latency busy-polls as long as the
	// user-level readers poll (like with like): a kernel run measures its
	// round trips twice, plain and busy-polling. A busy-polling run the
	// kernel refuses (SO_BUSY_POLL needs CAP_NET_ADMIN in the initial
	// user namespace: a rootless testbed) is reported as missing, with
	// why, rather than ending the bench.
	busyPoll := a.Stack == peripherals.StackKernel && !a.NoGSO && a.RTTPoll > 0
	if busyPoll {
		restore, err := napiPath(plan, from, to)
		if err != nil {
			busyPoll = false
			rep.Netstation.RTTBusyPollError = err.Error()
		} else {
			defer restore()
		}
	}
	runs := []pinning{{[]int{fr.Allowed[0]}, []int{fr.Allowed[0]}, false}}
	if len(tr.Allowed) > 1 {
		runs = append(runs, pinning{[]int{fr.Allowed[0]}, []int{tr.Allowed[1]}, true})
	}
	for _, p := range runs {
		if _, err := pin(from.Name, p.from); err != nil {
			return fmt.Errorf("%s: pin: %w", from.Name, err)
		}
		if _, err := pin(to.Name, p.to); err != nil {
			return fmt.Errorf("%s: pin: %w", to.Name, err)
		}
		stop := renew(p.from, p.to)
		rt, err := benchRTT(ctx, dir, from, to, a, dst)
		var busy *bench.RTTResult
		var busyErr error
		if err == nil && busyPoll {
			ba := a
			ba.Stack = peripherals.StackKernelBusyPoll
			busy, busyErr = benchRTT(ctx, dir, from, to, ba, dst)
		}
		stop()
		if err != nil {
			return err
		}
		label := cpupin.Label(p.from, p.to)
		if a.RTTPoll > 0 && (a.Stack == peripherals.StackUser || a.Stack == "") {
			label += fmt.Sprintf("; readers poll up to %v", a.RTTPoll)
		}
		f := rt.Figures(label)
		var bf *bench.RTTFigures
		if busy != nil {
			bf = busy.Figures(cpupin.Label(p.from, p.to) + fmt.Sprintf("; SO_BUSY_POLL %v", a.RTTPoll))
		}
		if busyErr != nil && rep.Netstation.RTTBusyPollError == "" {
			rep.Netstation.RTTBusyPollError = busyErr.Error()
		}
		if p.cross {
			rep.Netstation.RTTCrossCPU, rep.Netstation.RTTBusyPollCrossCPU = f, bf
		} else {
			rep.Netstation.RTT, rep.Netstation.RTTBusyPoll = f, bf
		}
	}
	return nil
}

// napiPath readies the fabric for busy-polling kernel sockets on the two
// nodes' ports: TSO off on the bridge's side of each port. A veth hands a
// frame to its peer's NAPI, which SO_BUSY_POLL polls, only when the
// sending side has TSO off (a forwarded frame; Linux's
// veth_skb_is_eligible_for_gro); the ports themselves turn GRO on (the
// peripherals do, peripherals.StackKernelBusyPoll). TSO does nothing for
// 64 B datagrams. restore puts back what was on. It needs the fabric
// namespace on this host, entered as root.
func napiPath(plan *Plan, nodes ...*NodePlan) (restore func(), err error) {
	if plan.Rootless {
		return nil, errors.New("a rootless testbed: SO_BUSY_POLL needs CAP_NET_ADMIN in the initial user namespace")
	}
	var ports []string
	for _, n := range nodes {
		if plan.MultiHost() && n.Host != plan.Local {
			return nil, fmt.Errorf("%s runs on another host: its port's offloads are not this host's to set", n.Name)
		}
		ports = append(ports, n.Port)
	}
	var undo []string
	restore = func() {
		_ = fabric.Do(plan.FabricNS, func() error {
			for _, p := range undo {
				_ = ethtool.Set(p, ethtool.TSO, true)
			}
			return nil
		})
	}
	err = fabric.Do(plan.FabricNS, func() error {
		for _, p := range ports {
			on, err := ethtool.Get(p, ethtool.TSO)
			if err != nil {
				return err
			}
			if !on {
				continue
			}
			if err := ethtool.Set(p, ethtool.TSO, false); err != nil {
				return fmt.Errorf("TSO off on %s (for busy polling): %w", p, err)
			}
			undo = append(undo, p)
		}
		return nil
	})
	if err != nil {
		restore()
		return nil, err
	}
	return restore, nil
}

func benchRTT(ctx context.Context, dir string, from, to *NodePlan, a BenchArgs, dst netip.Addr) (*bench.RTTResult, error) {
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		first := true
		done <- nodeCall(ectx, dir, to.Name, peripherals.OpBenchEcho, peripherals.BenchArgs{Stack: a.Stack, Poll: a.RTTPoll}, nil, func(json.RawMessage) error {
			if first {
				first = false
				close(ready)
			}
			return nil
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		return nil, fmt.Errorf("%s: echo: %w", to.Name, err)
	}
	var rt bench.RTTResult
	err := nodeCall(ctx, dir, from.Name, peripherals.OpBenchRTT, peripherals.BenchArgs{
		Stack: a.Stack, Dst: netip.AddrPortFrom(dst, peripherals.EchoPort), Size: 64, Count: a.RTTCount, Poll: a.RTTPoll,
	}, &rt, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: rtt: %w", from.Name, err)
	}
	return &rt, nil
}

// RefPort is the UDP port of the standalone reference pair.
const RefPort = 5303

// RefResult is the standalone kernel pair's figures, as the receiver
// counted them.
type RefResult struct {
	Size                     int     `json:"size"`
	BitsPerSecondReceived    float64 `json:"bits_per_second_received"`
	PacketsPerSecondReceived float64 `json:"packets_per_second_received"`
	PacketsPerSecondSent     float64 `json:"packets_per_second_sent"`
	DatagramsPerSend         float64 `json:"datagrams_per_send"`
	DatagramsPerReceive      float64 `json:"datagrams_per_receive"`
	// CPUNanosPerDatagram is both sides' thread CPU time per datagram
	// received, as bench's cpu_ns_per_datagram counts its processes'.
	CPUNanosPerDatagram float64 `json:"cpu_ns_per_datagram"`
}

// BenchReference runs the reference for bench's kernel baseline between
// the same two peripherals' ports: internal/udpref's standalone
// UDP_SEGMENT sender and UDP_GRO receiver (nothing of netstation's in
// their data path) on the kernel addresses bench's kernel runs use,
// unpaced, for d. It needs a root testbed on this host (it enters the
// peripherals' namespaces from this process).
func BenchReference(ctx context.Context, testbed, fromName, toName string, size int, d time.Duration) (*RefResult, error) {
	dir := Dir(testbed)
	plan, err := LoadPlan(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	if plan.Rootless {
		return nil, errors.New("the reference pair enters the peripherals' namespaces: it needs a testbed brought up by root")
	}
	from, err := plan.Node(fromName)
	if err != nil {
		return nil, err
	}
	to, err := plan.Node(toName)
	if err != nil {
		return nil, err
	}
	if from.Host != "" || to.Host != "" {
		return nil, errors.New("the reference pair runs only between peripherals of this host")
	}
	off, err := kernelAddrsOn(ctx, dir, from, to)
	defer off()
	if err != nil {
		return nil, err
	}
	dst := netip.AddrPortFrom(peripherals.KernelAddr(to.Addr).Addr(), RefPort)
	rx, err := udpref.Open(filepath.Join(fabric.NetnsDir, to.NS), dst, true)
	if err != nil {
		return nil, err
	}
	defer rx.Close()
	tx, err := udpref.Open(filepath.Join(fabric.NetnsDir, from.NS), netip.AddrPortFrom(peripherals.KernelAddr(from.Addr).Addr(), 0), false)
	if err != nil {
		return nil, err
	}
	defer tx.Close()
	// Resolve the neighbour first, so the measured sends do not wait in
	// its queue (as bench's sender probes first).
	if _, err := tx.Send(dst, 64, time.Millisecond); err != nil {
		return nil, err
	}
	if _, err := rx.Receive(50*time.Millisecond, time.Second); err != nil {
		return nil, err
	}
	type recv struct {
		r   udpref.Result
		err error
	}
	done := make(chan recv, 1)
	go func() {
		r, err := rx.Receive(500*time.Millisecond, d+5*time.Second)
		done <- recv{r, err}
	}()
	sent, err := tx.Send(dst, size, d)
	if err != nil {
		return nil, err
	}
	got := <-done
	if got.err != nil {
		return nil, got.err
	}
	res := &RefResult{Size: size, BitsPerSecondReceived: got.r.BitsPerSecond(),
		PacketsPerSecondReceived: got.r.PacketsPerSecond(), PacketsPerSecondSent: sent.PacketsPerSecond()}
	if sent.Calls > 0 {
		res.DatagramsPerSend = float64(sent.Datagrams) / float64(sent.Calls)
	}
	if got.r.Calls > 0 {
		res.DatagramsPerReceive = float64(got.r.Datagrams) / float64(got.r.Calls)
	}
	if got.r.Datagrams > 0 {
		res.CPUNanosPerDatagram = float64(sent.CPU+got.r.CPU) / float64(got.r.Datagrams)
	}
	if got.r.Datagrams == 0 {
		return nil, fmt.Errorf("reference pair: %s received nothing", to.Name)
	}
	return res, nil
}

// kernelAddrsOn turns on the kernel baseline's addresses of the nodes
// (bench's kernel runs and the reference pair use them) and returns what
// turns them off again; call it even when err is not nil.
func kernelAddrsOn(ctx context.Context, dir string, nodes ...*NodePlan) (off func(), err error) {
	off = func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, n := range nodes {
			_ = call(c, dir, n.Name, peripherals.OpKernel, false, nil)
		}
	}
	for _, n := range nodes {
		if err := call(ctx, dir, n.Name, peripherals.OpKernel, true, nil); err != nil {
			return off, err
		}
	}
	return off, nil
}
