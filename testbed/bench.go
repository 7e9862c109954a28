package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/bench"
)

// BenchArgs shape one bench run between two peripherals on one stack.
type BenchArgs struct {
	From, To string
	Stack    string // user or kernel
	Size     int
	Duration time.Duration
	Parallel int
	Rate     float64 // bits/s, 0 = as fast as possible
	// RTTCount pings measure the round trip after the bulk run (0: none).
	RTTCount int
	// NoGSO: the user-level stack sends one frame per datagram.
	NoGSO bool
}

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
	dst := to.Addr.Addr()
	if a.Stack == "kernel" {
		defer func() {
			c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = call(c, dir, from.Name, peripherals.OpKernel, false, nil)
			_ = call(c, dir, to.Name, peripherals.OpKernel, false, nil)
		}()
		for _, n := range []*NodePlan{from, to} {
			if err := call(ctx, dir, n.Name, peripherals.OpKernel, true, nil); err != nil {
				return nil, err
			}
		}
		dst = peripherals.KernelAddr(to.Addr).Addr()
	}
	args := peripherals.BenchArgs{Stack: a.Stack, Size: a.Size, Duration: a.Duration, Parallel: a.Parallel, Rate: a.Rate, NoGSO: a.NoGSO}

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
	rep := bench.Merge(&send, &recv)
	if a.RTTCount > 0 {
		rt, err := benchRTT(ctx, dir, from, to, a, dst)
		if err != nil {
			return nil, err
		}
		rep.WithRTT(rt)
	}
	return rep, nil
}

func benchRTT(ctx context.Context, dir string, from, to *NodePlan, a BenchArgs, dst netip.Addr) (*bench.RTTResult, error) {
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		first := true
		done <- nodeCall(ectx, dir, to.Name, peripherals.OpBenchEcho, peripherals.BenchArgs{Stack: a.Stack}, nil, func(json.RawMessage) error {
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
		Stack: a.Stack, Dst: netip.AddrPortFrom(dst, peripherals.EchoPort), Size: 64, Count: a.RTTCount,
	}, &rt, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: rtt: %w", from.Name, err)
	}
	return &rt, nil
}
