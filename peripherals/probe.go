package peripherals

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/link/afpacket"
	"github.com/netstation/netstation/stack/link/impair"
)

// ProbePort is where probe-recv listens unless told otherwise.
const ProbePort = 5301

// ProbeSendArgs ask a peripheral to send Count UDP datagrams of Size bytes
// to Dst over its user-level stack, one per write (no GSO batching, so
// every datagram is one frame on the wire) at Rate datagrams per second
// (0: as fast as it can), or, with Duration set, batches of 64 for that
// long (a bulk flow, paced to Rate when set; Count is then ignored).
type ProbeSendArgs struct {
	Dst      netip.AddrPort `json:"dst"`
	Count    int            `json:"count,omitempty"`
	Size     int            `json:"size"`
	Rate     float64        `json:"rate,omitempty"`
	Duration time.Duration  `json:"duration,omitempty"`
}

// ProbeSendResult is what the sender did.
type ProbeSendResult struct {
	Sent    int     `json:"sent"`
	Errors  int     `json:"errors"`
	Seconds float64 `json:"seconds"`
}

// ProbeRecvArgs ask a peripheral to count the datagrams arriving on Port
// until Idle passes without one (after the first), or ctx ends.
type ProbeRecvArgs struct {
	Port uint16        `json:"port"`
	Idle time.Duration `json:"idle"`
}

// ProbeRecvResult counts what arrived. Seconds runs from the first
// datagram to the last.
type ProbeRecvResult struct {
	Datagrams int     `json:"datagrams"`
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`
	// Distinct counts different sequence numbers (the first 8 bytes of
	// each datagram), so a duplicate would not hide a loss.
	Distinct int `json:"distinct"`
	// SocketDrops counts datagrams that crossed the link but found the
	// probe socket's receive ring full (a receiver too slow, not a lossy
	// link).
	SocketDrops uint64 `json:"socket_drops"`
	// RingDrops counts frames the kernel dropped during the probe because
	// the peripheral's receive ring was full (its reader was descheduled
	// for longer than the ring holds), whatever their socket.
	RingDrops uint64 `json:"ring_drops"`
}

// ringDrops reads the receive-ring drop counter of the link under the
// impairment wrapper, when the link keeps one (AF_PACKET).
func (p *Runtime) ringDrops() uint64 {
	if l, ok := p.raw.(interface{ Stats() afpacket.Stats }); ok {
		return l.Stats().RingDrops
	}
	return 0
}

// SetImpairment sets the peripheral's link-layer impairment (as the
// "impair" op does).
func (p *Runtime) SetImpairment(ip impair.Params) { p.impair.Set(ip) }

// registerProbe adds the probe ops (probe-send, probe-recv) the link
// fidelity tests measure loss and rate with.
func (p *Runtime) registerProbe() {
	p.Handle(OpProbeRecv, func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
		var a ProbeRecvArgs
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		ring0 := p.ringDrops()
		res, err := probeRecv(ctx, p.stack, a, func() { _ = s.Send(BenchReady{Ready: true}) })
		if res != nil {
			res.RingDrops = p.ringDrops() - ring0
		}
		return res, err
	})
	p.Handle(OpProbeSend, func(ctx context.Context, req ctl.Request, _ *ctl.Stream) (any, error) {
		var a ProbeSendArgs
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		return probeSend(ctx, p.stack, a)
	})
}

func probeRecv(ctx context.Context, st *stack.Stack, a ProbeRecvArgs, ready func()) (*ProbeRecvResult, error) {
	if a.Port == 0 {
		a.Port = ProbePort
	}
	if a.Idle <= 0 {
		a.Idle = time.Second
	}
	c, err := st.ListenUDP(netip.AddrPortFrom(st.Addr(), a.Port))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ready()
	res := &ProbeRecvResult{}
	seen := map[uint64]bool{}
	msgs := make([]stack.Message, 64)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 65536)
	}
	var first, last time.Time
	for {
		wait := a.Idle
		if first.IsZero() {
			wait = 30 * time.Second
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			wait = time.Until(dl)
		}
		_ = c.SetReadDeadline(time.Now().Add(wait))
		n, err := c.ReadBatch(msgs)
		now := time.Now()
		for _, m := range msgs[:n] {
			if first.IsZero() {
				first = now
			}
			last = now
			res.Datagrams++
			res.Bytes += int64(m.N)
			if m.N >= 8 {
				seen[binary.BigEndian.Uint64(m.Buf[:8])] = true
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil {
				break
			}
			return res, err
		}
	}
	res.Distinct = len(seen)
	local := netip.AddrPortFrom(st.Addr(), a.Port)
	for _, u := range st.Stats().UDP {
		if u.Local == local {
			res.SocketDrops = u.RxDrops
		}
	}
	if !first.IsZero() {
		res.Seconds = last.Sub(first).Seconds()
	}
	return res, nil
}

func probeSend(ctx context.Context, st *stack.Stack, a ProbeSendArgs) (*ProbeSendResult, error) {
	if !a.Dst.Addr().Is4() {
		return nil, fmt.Errorf("probe: %v is not an IPv4 address", a.Dst)
	}
	if a.Size < 8 || a.Size > 1472 {
		return nil, fmt.Errorf("probe: size %d is not from 8 to 1472", a.Size)
	}
	c, err := st.ListenUDP(netip.AddrPortFrom(st.Addr(), 0))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	res := &ProbeSendResult{}
	start := time.Now()
	var seq uint64
	if a.Duration > 0 {
		msgs := make([]stack.Message, 64)
		for i := range msgs {
			msgs[i] = stack.Message{Buf: make([]byte, a.Size), Addr: a.Dst}
		}
		for time.Since(start) < a.Duration && ctx.Err() == nil {
			if a.Rate > 0 {
				due := start.Add(time.Duration(float64(res.Sent) / a.Rate * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
			}
			for i := range msgs {
				binary.BigEndian.PutUint64(msgs[i].Buf, seq)
				seq++
			}
			n, err := c.WriteBatch(msgs)
			res.Sent += n
			if err != nil {
				res.Errors++
				time.Sleep(100 * time.Microsecond)
			}
		}
		res.Seconds = time.Since(start).Seconds()
		return res, ctx.Err()
	}
	buf := make([]byte, a.Size)
	for i := 0; i < a.Count && ctx.Err() == nil; i++ {
		if a.Rate > 0 {
			due := start.Add(time.Duration(float64(i) / a.Rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
		}
		binary.BigEndian.PutUint64(buf, seq)
		seq++
		if _, err := c.WriteToUDPAddrPort(buf, a.Dst); err != nil {
			res.Errors++
			continue
		}
		res.Sent++
	}
	res.Seconds = time.Since(start).Seconds()
	return res, ctx.Err()
}

// pingError says in words why an echo got no reply.
func pingError(err error, a PingArgs) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("no reply from %v within %v", a.Dst, a.Timeout)
	}
	return err.Error()
}
