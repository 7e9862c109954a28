package peripherals

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
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

// Config describes one peripheral: its identity on the testbed, the link
// its stack runs on, and its kind with that kind's parameters.
type Config struct {
	Name string
	Kind string // a registered Kind's name
	// Link is the peripheral's port. A testbed's node process opens the
	// namespace's veth with AF_PACKET; in-process testbeds use
	// stack/link/mem. The runtime owns it from Start on and closes it.
	Link link.Link
	// IfName is the kernel interface behind Link, for the kernel-stack
	// baseline (the "kernel" op); empty when there is none (an in-memory
	// link), and the op then fails.
	IfName string
	MAC    net.HardwareAddr
	Addr   netip.Prefix // our address and subnet
	MTU    int
	// ControlPath is the control socket's path; empty: no control socket
	// (an in-process peripheral driven through Call).
	ControlPath string
	// Impair is the link-layer impairment in force from the first frame.
	Impair impair.Params
	// Params are the node's topology parameters, checked by its kind.
	Params Params
	// StateDir is the testbed's state directory: kinds keep their files
	// there (NodeFile).
	StateDir string
	// Testbed lists every node of the testbed, this one included, as the
	// plan has them.
	Testbed []Peer
	// Seeds are the membership's seeds; empty: the peripheral joins no
	// membership (and FindPeer finds nothing).
	Seeds []netip.AddrPort
	// Members is how many peripherals the membership should hold (the
	// nodes of this one's segment, itself included), so a view that
	// misses some keeps exchanging state until it has them; 0: unknown.
	Members int
	// Neighbors are the Ethernet addresses of the nodes on this one's
	// segment (from the plan), permanent in the stack's ARP cache
	// (stack.Config.Neighbors): n peers resolving each other by broadcast
	// is n² frames each of them reads, which at 1,000 drowned the
	// testbed (issue 16).
	Neighbors map[netip.Addr]net.HardwareAddr
	// DeferJoin: the membership answers others but joins its seeds only
	// when told (op join), as gossip.Config.Deferred; the supervisor
	// tells every peripheral once all of them answer.
	DeferJoin bool
	// Beat, if set, is called every gossip.BeatEvery while the
	// peripheral's membership runs (gossip.Config.Beat): the testbed
	// supervisor's watchdog reads it.
	Beat      func()
	BeatEvery time.Duration // 0: gossip.BeatEvery
	Logger    *slog.Logger
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
	Link afpacket.Stats `json:"link"` // the AF_PACKET rings, when the link is one: ring drops show here
	// LinkRx is the AF_PACKET link's receive path ("recvmmsg",
	// "framering"), when the link is one.
	LinkRx         string          `json:"link_rx,omitempty"`
	Impair         impair.Params   `json:"impair"`
	ImpairCounters impair.Counters `json:"impair_counters"`
	// Counters are the kind's own counters (Runtime.Counter).
	Counters map[string]uint64 `json:"counters,omitempty"`
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

// Runtime is a running peripheral: the stack, control socket, counters
// and membership every kind gets. A kind's Start receives it.
type Runtime struct {
	cfg    Config
	kind   Kind
	link   link.Link
	impair *impair.Link
	raw    link.Link // cfg.Link, under the impairment wrapper
	stack  *stack.Stack
	kernel kernelState
	opsMu  sync.Mutex
	ops    map[Op]ctl.Handler
	ctl    *ctl.Server
	// kindStarted is closed once the kind's Start returned: the control
	// socket answers nothing before (see serveControl).
	kindStarted chan struct{}
	started     time.Time
	services    []string
	counters    counterSet
	members     membership
	stops       []func() error // the kind's stop, then the runtime's own
	log         *slog.Logger
	stopOnce    sync.Once
	stop        chan struct{}
	ctx         context.Context
	cancel      context.CancelFunc
	pinLease    pinLease // the bench's CPU pinning (OpPin)
}

// ErrConfig: a peripheral's configuration is incomplete or wrong.
var ErrConfig = errors.New("peripheral configuration")

// Start brings a peripheral up on cfg.Link: the user-level stack, the
// control socket with the runtime's own ops (status, ping, bench, probes,
// impairment, kernel baseline), then the services of its kind, then the
// membership (last, so that its metadata lists every service). It
// returns once all of that is up; Wait serves until the end.
func Start(ctx context.Context, cfg Config) (_ *Runtime, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	if cfg.Link == nil {
		return nil, fmt.Errorf("%w: %s has no link", ErrConfig, cfg.Name)
	}
	k, ok := LookupKind(cfg.Kind)
	if !ok {
		cfg.Link.Close()
		return nil, fmt.Errorf("%w: %s: %w %q (registered: %s)", ErrConfig, cfg.Name, ErrUnknownKind, cfg.Kind, strings.Join(KindNames(), ", "))
	}
	if err := k.CheckParams(cfg.Params); err != nil {
		cfg.Link.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, cfg.Name, err)
	}
	il := impair.Wrap(cfg.Link)
	il.Set(cfg.Impair)
	st, err := stack.New(il, stack.Config{MAC: cfg.MAC, Addr: cfg.Addr, MTU: cfg.MTU, Neighbors: cfg.Neighbors,
		// Peers that know our address from the plan need no
		// announcement, and the fabric pins it on our port: at 1,000
		// peripherals the announcements alone were a million frames.
		NoGratuitousARP: len(cfg.Neighbors) > 0})
	if err != nil {
		il.Close()
		return nil, fmt.Errorf("start stack: %w", err)
	}
	p := &Runtime{cfg: cfg, kind: k, link: il, impair: il, raw: cfg.Link, stack: st, started: time.Now(), log: cfg.Logger,
		stop: make(chan struct{}), ops: map[Op]ctl.Handler{}, kindStarted: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(ctx)
	p.stops = append(p.stops, func() error { return errors.Join(p.stack.Close(), p.link.Close()) })
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if cfg.ControlPath != "" {
		srv, err := ctl.Listen(cfg.ControlPath, p.serveControl)
		if err != nil {
			return nil, err
		}
		p.ctl = srv
		p.stops = append(p.stops, func() error {
			err := srv.Close()
			_ = os.Remove(cfg.ControlPath)
			return err
		})
	}
	p.registerBench()
	p.registerProbe()
	stop, err := k.Start(p.ctx, p)
	if err != nil {
		return nil, fmt.Errorf("%s: start %s: %w", cfg.Name, k.Name, err)
	}
	if stop != nil {
		p.stops = append(p.stops, stop)
	}
	close(p.kindStarted)
	if len(cfg.Seeds) > 0 {
		if err := p.joinMembership(); err != nil {
			p.log.Error("gossip: not joining the membership", "err", err)
		}
	}
	p.log.Info("peripheral up", "node", cfg.Name, "kind", cfg.Kind, "addr", cfg.Addr, "mac", cfg.MAC.String())
	return p, nil
}

// Wait serves until ctx ends or a shutdown is requested, then stops the
// peripheral.
func (p *Runtime) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-p.Done():
	}
	p.log.Info("peripheral stopping", "node", p.cfg.Name)
	return p.Close()
}

// Stack is the peripheral's user-level stack, for its services.
func (p *Runtime) Stack() *stack.Stack { return p.stack }

// Addr is the peripheral's address on its stack.
func (p *Runtime) Addr() netip.Addr { return p.cfg.Addr.Addr() }

// Logger is the peripheral's logger.
func (p *Runtime) Logger() *slog.Logger { return p.log }

// Params are the node's topology parameters (checked by its kind).
func (p *Runtime) Params() Params { return p.cfg.Params }

// NodeFile is the path of the testbed's file ext for node (the disk's
// image "img", its capability key "key", ...), in the state directory.
func (p *Runtime) NodeFile(node, ext string) string { return NodeFile(p.cfg.StateDir, node, ext) }

// NodeFile is where a testbed in state directory dir keeps node's file of
// the given extension.
func NodeFile(dir, node, ext string) string { return filepath.Join(dir, "nodes", node+"."+ext) }

// Testbed lists the testbed's nodes as the plan has them, this one
// included.
func (p *Runtime) Testbed() []Peer { return p.cfg.Testbed }

// ServicePorts parses the services registered as "name:port" (e.g.
// "disk/udp:10810") into the map gossip publishes.
func (p *Runtime) ServicePorts() map[string]uint16 {
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

// AddService records a running service for status; a "name:port" service
// is also published in the membership's metadata (ServicePorts).
func (p *Runtime) AddService(name string) {
	p.opsMu.Lock()
	p.services = append(p.services, name)
	p.opsMu.Unlock()
	p.log.Info("service up", "service", name)
}

// Handle adds a control-socket operation (a service's own requests). See
// HandleArgs for ops whose arguments decode into a type.
func (p *Runtime) Handle(op Op, h ctl.Handler) {
	p.opsMu.Lock()
	p.ops[op] = h
	p.opsMu.Unlock()
}

// Config returns the peripheral's configuration.
func (p *Runtime) Config() Config { return p.cfg }

// Done is closed when the peripheral stops: a shutdown was requested over
// the control socket, or Close was called.
func (p *Runtime) Done() <-chan struct{} { return p.stop }

// Close stops everything: the membership, the kind's services, the
// control socket, the stack and the link, in that order.
func (p *Runtime) Close() error {
	var errs []error
	p.stopOnce.Do(func() {
		close(p.stop)
		p.cancel()
		if p.cfg.IfName != "" {
			_ = p.setKernel(false)
		}
		for i := len(p.stops) - 1; i >= 0; i-- {
			errs = append(errs, p.stops[i]())
		}
	})
	return errors.Join(errs...)
}

// Status reports the peripheral's identity and counters.
func (p *Runtime) Status() Status {
	s := p.stack.Stats()
	st := Status{
		Node: p.cfg.Name, Kind: p.cfg.Kind, PID: os.Getpid(),
		Addr: p.cfg.Addr.String(), MAC: p.cfg.MAC.String(),
		Uptime:         time.Since(p.started).Seconds(),
		Stack:          s,
		Counters:       p.counters.snapshot(),
		Impair:         p.impair.Params(),
		ImpairCounters: p.impair.Counters(),
	}
	if l, ok := p.raw.(*afpacket.Link); ok {
		st.Link, st.LinkRx = l.Stats(), l.Options().Rx.String()
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

// Call runs control op with args as the control socket would, streaming
// intermediate responses to stream (nil: dropped), and decodes the final
// result into out (when not nil). In-process testbeds drive peripherals
// with it.
func (p *Runtime) Call(ctx context.Context, op Op, args, out any, stream func(json.RawMessage) error) error {
	req := ctl.Request{Op: string(op)}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return err
		}
		req.Args = b
	}
	res, err := p.handle(ctx, req, ctl.NewStream(stream))
	if err != nil {
		return err
	}
	if out == nil || res == nil {
		return nil
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// serveControl answers the control socket. The socket exists before the
// kind has registered its operations, and whoever polls it (the
// supervisor's readiness check, a test right after `up` or after a
// restart) takes an answer to mean the peripheral is up: so every request,
// status included, waits until the kind has started.
func (p *Runtime) serveControl(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
	select {
	case <-p.kindStarted:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.ctx.Done():
		return nil, fmt.Errorf("%s: %w", p.cfg.Name, net.ErrClosed)
	}
	return p.handle(ctx, req, s)
}

func (p *Runtime) handle(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
	if Op(req.Op) != OpStatus { // status is polled (status -w, metrics): not logged
		p.log.Debug("control request", "op", req.Op) // `netstation logs NODE --level debug`
	}
	switch Op(req.Op) {
	case OpStatus:
		return p.Status(), nil
	case OpPing:
		var a PingArgs
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		return p.ping(ctx, a, s)
	case OpShutdown:
		p.stopOnce.Do(func() { close(p.stop) })
		return nil, nil
	case OpImpair:
		var a impair.Params
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		p.impair.Set(a)
		p.log.Info("link changed (link layer)", "params", fmt.Sprintf("%+v", a))
		return p.impair.Params(), nil
	case OpKernel:
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
	h := p.ops[Op(req.Op)]
	p.opsMu.Unlock()
	if h != nil {
		return h(ctx, req, s)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownOp, req.Op)
}

func (p *Runtime) ping(ctx context.Context, a PingArgs, s *ctl.Stream) (*PingSummary, error) {
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
			r.Error = pingError(err, a)
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
