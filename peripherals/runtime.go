package peripherals

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/afpacket"
	"github.com/netstation/netstation/stack/link/impair"
)

// Config describes one peripheral process.
type Config struct {
	Name        string
	Kind        string
	IfName      string // the namespace's veth, e.g. eth0
	MAC         net.HardwareAddr
	Addr        netip.Prefix // our address and subnet
	MTU         int
	ControlPath string // unix socket path
	// Shaped: a rate limit sits on this port's egress qdisc, so the link
	// must not bypass the qdisc.
	Shaped bool
	Logger *slog.Logger
}

// Status is what a peripheral reports on its control socket.
type Status struct {
	Node     string   `json:"node"`
	Kind     string   `json:"kind"`
	PID      int      `json:"pid"`
	Addr     string   `json:"addr"`
	MAC      string   `json:"mac"`
	Uptime   float64  `json:"uptime_s"`
	Services []string `json:"services"`
	RX       uint64   `json:"rx_frames"`
	TX       uint64   `json:"tx_frames"`
	Drops    uint64   `json:"drops"`
	// DropReasons names every non-zero drop counter of the engine.
	DropReasons map[string]uint64 `json:"drop_reasons,omitempty"`
	Stack       stack.Stats       `json:"stack"`
	// Impair is the link-layer impairment in force and what it did.
	Link           afpacket.Stats  `json:"link"` // the AF_PACKET rings: ring drops show here
	Impair         impair.Params   `json:"impair"`
	ImpairCounters impair.Counters `json:"impair_counters"`
}

// PingArgs ask a peripheral to ping an address over its own stack.
type PingArgs struct {
	Dst      netip.Addr    `json:"dst"`
	Count    int           `json:"count"`
	Size     int           `json:"size"`
	Interval time.Duration `json:"interval"`
	Timeout  time.Duration `json:"timeout"`
}

// PingReply is one echo result, streamed as it arrives.
type PingReply struct {
	Seq   int     `json:"seq"`
	RTTus float64 `json:"rtt_us,omitempty"`
	Error string  `json:"error,omitempty"`
}

// PingSummary ends a ping.
type PingSummary struct {
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	MinUs    float64 `json:"min_us"`
	AvgUs    float64 `json:"avg_us"`
	MaxUs    float64 `json:"max_us"`
}

// Peripheral is a running peripheral.
type Peripheral struct {
	cfg      Config
	link     link.Link
	impair   *impair.Link
	raw      *afpacket.Link
	stack    *stack.Stack
	kernel   kernelState
	opsMu    sync.Mutex
	ops      map[string]ctl.Handler
	ctl      *ctl.Server
	started  time.Time
	services []string
	log      *slog.Logger
	stopOnce sync.Once
	stop     chan struct{}
}

// Start opens the link, brings the stack up and serves the control socket.
// The caller must already be in the peripheral's network namespace.
func Start(cfg Config) (*Peripheral, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	l, err := afpacket.Open(cfg.IfName, afpacket.Options{NoQdiscBypass: cfg.Shaped, Accept: cfg.Addr})
	if err != nil {
		return nil, fmt.Errorf("open link %s: %w", cfg.IfName, err)
	}
	il := impair.Wrap(l)
	st, err := stack.New(il, stack.Config{MAC: cfg.MAC, Addr: cfg.Addr, MTU: cfg.MTU})
	if err != nil {
		il.Close()
		return nil, fmt.Errorf("start stack: %w", err)
	}
	p := &Peripheral{cfg: cfg, link: il, impair: il, raw: l, stack: st, started: time.Now(), log: cfg.Logger,
		stop: make(chan struct{}), ops: map[string]ctl.Handler{}}
	srv, err := ctl.Listen(cfg.ControlPath, p.handle)
	if err != nil {
		st.Close()
		l.Close()
		return nil, err
	}
	p.ctl = srv
	p.registerBench()
	p.log.Info("peripheral up", "node", cfg.Name, "kind", cfg.Kind, "addr", cfg.Addr, "mac", cfg.MAC.String())
	return p, nil
}

// Stack is the peripheral's user-level stack, for its services.
func (p *Peripheral) Stack() *stack.Stack { return p.stack }

// AddService records a running service for status.
// ServicePorts parses the services registered as "name:port" (e.g.
// "disk/udp:10810") into the map gossip publishes.
func (p *Peripheral) ServicePorts() map[string]uint16 {
	p.opsMu.Lock()
	defer p.opsMu.Unlock()
	out := map[string]uint16{}
	for _, s := range p.services {
		i := strings.LastIndexByte(s, ':')
		if i < 0 {
			continue
		}
		if port, err := strconv.ParseUint(s[i+1:], 10, 16); err == nil {
			out[s[:i]] = uint16(port)
		}
	}
	return out
}

func (p *Peripheral) AddService(name string) {
	p.opsMu.Lock()
	p.services = append(p.services, name)
	p.opsMu.Unlock()
}

// Handle adds a control-socket operation (a service's own requests).
func (p *Peripheral) Handle(op string, h ctl.Handler) {
	p.opsMu.Lock()
	p.ops[op] = h
	p.opsMu.Unlock()
}

// Config returns the peripheral's configuration.
func (p *Peripheral) Config() Config { return p.cfg }

// Done is closed when a shutdown was requested over the control socket.
func (p *Peripheral) Done() <-chan struct{} { return p.stop }

// Close stops everything.
func (p *Peripheral) Close() error {
	p.stopOnce.Do(func() { close(p.stop) })
	p.setKernel(false)
	errs := []error{p.ctl.Close(), p.stack.Close(), p.link.Close()}
	_ = os.Remove(p.cfg.ControlPath)
	return errors.Join(errs...)
}

// Status reports the peripheral's identity and counters.
func (p *Peripheral) Status() Status {
	s := p.stack.Stats()
	st := Status{
		Node: p.cfg.Name, Kind: p.cfg.Kind, PID: os.Getpid(),
		Addr: p.cfg.Addr.String(), MAC: p.cfg.MAC.String(),
		Uptime:         time.Since(p.started).Seconds(),
		Stack:          s,
		Link:           p.raw.Stats(),
		Impair:         p.impair.Params(),
		ImpairCounters: p.impair.Counters(),
	}
	p.opsMu.Lock()
	st.Services = append([]string{"ping"}, p.services...)
	p.opsMu.Unlock()
	st.RX, st.TX, st.Drops = s.RxFrames, s.TxFrames, s.TotalDrops()
	for r, n := range s.Drops {
		if n > 0 {
			if st.DropReasons == nil {
				st.DropReasons = map[string]uint64{}
			}
			st.DropReasons[engine.DropReason(r).String()] = n
		}
	}
	return st
}

func (p *Peripheral) handle(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
	switch req.Op {
	case "status":
		return p.Status(), nil
	case "ping":
		var a PingArgs
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		return p.ping(ctx, a, s)
	case "shutdown":
		p.stopOnce.Do(func() { close(p.stop) })
		return nil, nil
	case "impair":
		var a impair.Params
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		p.impair.Set(a)
		return p.impair.Params(), nil
	case "kernel":
		var on bool
		if err := req.Decode(&on); err != nil {
			return nil, err
		}
		if err := p.setKernel(on); err != nil {
			return nil, err
		}
		return KernelAddr(p.cfg.Addr), nil
	}
	p.opsMu.Lock()
	h := p.ops[req.Op]
	p.opsMu.Unlock()
	if h != nil {
		return h(ctx, req, s)
	}
	return nil, fmt.Errorf("unknown op %q", req.Op)
}

func (p *Peripheral) ping(ctx context.Context, a PingArgs, s *ctl.Stream) (*PingSummary, error) {
	if !a.Dst.Is4() {
		return nil, fmt.Errorf("ping: %v is not an IPv4 address", a.Dst)
	}
	if a.Count <= 0 {
		a.Count = 3
	}
	if a.Size <= 0 {
		a.Size = 56
	}
	if a.Timeout <= 0 {
		a.Timeout = time.Second
	}
	if a.Interval <= 0 {
		a.Interval = 200 * time.Millisecond
	}
	sum := &PingSummary{}
	var total time.Duration
	for i := 0; i < a.Count; i++ {
		if i > 0 {
			select {
			case <-time.After(a.Interval):
			case <-ctx.Done():
				return sum, ctx.Err()
			}
		}
		pctx, cancel := context.WithTimeout(ctx, a.Timeout)
		rtt, err := p.stack.Ping(pctx, a.Dst, a.Size)
		cancel()
		sum.Sent++
		r := PingReply{Seq: i + 1}
		if err != nil {
			r.Error = err.Error()
		} else {
			sum.Received++
			us := float64(rtt.Nanoseconds()) / 1e3
			r.RTTus = us
			total += rtt
			if sum.MinUs == 0 || us < sum.MinUs {
				sum.MinUs = us
			}
			if us > sum.MaxUs {
				sum.MaxUs = us
			}
		}
		_ = s.Send(r)
	}
	if sum.Received > 0 {
		sum.AvgUs = float64(total.Nanoseconds()) / 1e3 / float64(sum.Received)
	}
	return sum, nil
}
