package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/fabric/tcbpf"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/node"
	"github.com/netstation/netstation/stack/link/impair"
)

// Link impairments, in brief (docs/ARCHITECTURE.md has the long form):
//
//   - rate: tbf on the fabric-side port's egress (traffic to the node) and
//     on the node's own port's egress (traffic from it). The node's
//     AF_PACKET link bypasses the qdisc unless it was opened "shaped", so a
//     rate set at run time on a node that came up without one restarts its
//     peripheral once, shaped (the restart is counted in status); from then
//     on the node stays shaped.
//   - loss, corrupt, down: a tc BPF program on the fabric-side port (both
//     directions, each drawing its own sequence) when the supervisor can
//     load BPF; otherwise the peripheral's link layer (stack/link/impair),
//     which also impairs both directions.
//   - delay: always the peripheral's link layer, on the frames it sends
//     (this kernel has no netem, and no qdisc honours BPF timestamps).
//
// What is in force is kept in nodes/<node>.link.json in the state
// directory, so that a peripheral restarted by the supervisor applies its
// link-layer part again at start (NodeConfig).

// LinkParams are the impairments in force on one node's link. Loss and
// corruption apply to each direction; delay to the frames the node sends.
type LinkParams struct {
	RateBits   uint64        `json:"rate_bits"`
	LossPPM    uint32        `json:"loss_ppm"`
	CorruptPPM uint32        `json:"corrupt_ppm"`
	Delay      time.Duration `json:"delay"`
	Seed       uint64        `json:"seed"`
	Down       bool          `json:"down"`
}

// LinkChange is a `link set/up/down` request: nil fields are left as they
// are.
type LinkChange struct {
	Node       string         `json:"node"`
	RateBits   *uint64        `json:"rate_bits,omitempty"`
	LossPPM    *uint32        `json:"loss_ppm,omitempty"`
	CorruptPPM *uint32        `json:"corrupt_ppm,omitempty"`
	Delay      *time.Duration `json:"delay,omitempty"`
	Seed       *uint64        `json:"seed,omitempty"`
	Down       *bool          `json:"down,omitempty"`
}

// Where an impairment is enforced.
const (
	EnforcedKernel    = "kernel"     // tc BPF on the fabric-side port
	EnforcedLinkLayer = "link-layer" // the peripheral's own link layer
)

// LinkStatus is one node's link as `link show` and `status -o json` report
// it: what is in force, where, and what it did.
type LinkStatus struct {
	Node   string     `json:"node"`
	Params LinkParams `json:"params"`
	// LossEnforcedBy says where loss, corruption and down act
	// (EnforcedKernel or EnforcedLinkLayer); delay is always link-layer.
	LossEnforcedBy string `json:"loss_enforced_by"`
	// Shaped: the peripheral's link keeps the qdisc, so a rate applies to
	// what it sends.
	Shaped bool `json:"shaped"`
	// Rx is the peripheral's receive path (link.rx, else the
	// supervisor's $NETSTATION_LINK_RX, else "recvmmsg"); in Status, the
	// one the running peripheral reports.
	Rx string `json:"rx"`
	// Template: a kernel-enforced transmit template guards the port.
	Template         bool                    `json:"template"`
	TemplateDrops    uint64                  `json:"template_drops"`
	TemplateCounters *tcbpf.TemplateCounters `json:"template_counters,omitempty"`
	Kernel           *tcbpf.Counters         `json:"kernel_impairment,omitempty"`
	LinkLayer        *impair.Counters        `json:"link_layer_impairment,omitempty"`
}

// linkFile is what nodes/<node>.link.json holds.
type linkFile struct {
	LinkParams
	// Shaped is sticky: once a node was restarted shaped it stays so.
	Shaped bool `json:"shaped"`
	// Kernel: loss/corrupt/down are enforced by tc BPF, so the link layer
	// must only delay.
	Kernel bool `json:"kernel"`
}

func linkPath(dir, node string) string { return filepath.Join(dir, "nodes", node+".link.json") }

func readLinkFile(dir, node string) (linkFile, error) {
	var f linkFile
	b, err := os.ReadFile(linkPath(dir, node))
	if err != nil {
		return f, err
	}
	return f, json.Unmarshal(b, &f)
}

func writeLinkFile(dir, node string, f linkFile) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	tmp := linkPath(dir, node) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, linkPath(dir, node))
}

// linkLayerParams is the part of f the peripheral's link layer enforces.
func (f linkFile) linkLayerParams() impair.Params {
	p := impair.Params{Delay: f.Delay}
	if !f.Kernel {
		p.LossPPM, p.CorruptPPM, p.Seed, p.Down = f.LossPPM, f.CorruptPPM, f.Seed, f.Down
	}
	return p
}

// seeded returns p ready for the link layer, whose generator is always
// seeded: an unseeded link (Seed 0) gets a random seed, as the kernel's
// unseeded draws are random.
func seeded(p impair.Params) impair.Params {
	if p.Seed == 0 && (p.LossPPM > 0 || p.CorruptPPM > 0) {
		p.Seed = rand.Uint64() | 1
	}
	return p
}

func (f linkFile) kernelParams() tcbpf.Params {
	return tcbpf.Params{LossPPM: f.LossPPM, CorruptPPM: f.CorruptPPM, Seed: f.Seed, Down: f.Down}
}

// linkManager is the supervisor's share of link state. Its zero value is
// ready: BPF availability is learnt at the first template attach.
type linkManager struct {
	// change serialises link changes (held across a peripheral restart).
	change sync.Mutex

	mu sync.Mutex
	// bpfOff is empty while BPF works, else a one-line reason.
	bpfOff   string
	bpfTried bool
	failed   int // ports whose template failed although BPF works

	workers chan struct{}  // bounds concurrent template attaches
	pending sync.WaitGroup // template attaches in flight
}

// TemplatesOn is the Status.Templates value when every port is guarded.
const TemplatesOn = "on"

func (m *linkManager) templates() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case !m.bpfTried:
		return "off: not attached yet"
	case m.bpfOff != "":
		return "off: " + m.bpfOff
	case m.failed > 0:
		return fmt.Sprintf("partial: %d ports failed (see the supervisor's log)", m.failed)
	}
	return TemplatesOn
}

func (m *linkManager) bpf() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bpfTried && m.bpfOff == ""
}

// bpfReason turns a BPF failure into one line for status.
func bpfReason(err error) string {
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, os.ErrPermission):
		return "BPF not permitted here (rootless, or unprivileged BPF disabled); spoofing is not blocked in the kernel"
	case errors.Is(err, syscall.ENOSYS), errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.EINVAL):
		return "this kernel cannot attach tc BPF programs; spoofing is not blocked in the kernel"
	}
	return "BPF unavailable; spoofing is not blocked in the kernel"
}

// setupLink is buildNode's link step: it guards the node's fabric-side port
// with a transmit template and the node's own port with a stack drop (when
// BPF works), applies the topology's loss
// and corruption there, and records the link state for the peripheral.
// Rates are applied by buildNode itself. Only a failure to record state
// fails the build: without BPF the testbed comes up without templates and
// impairs in the link layer instead.
//
// The first node's template is attached at once, to learn whether BPF
// works; the others' (a program load and verification each, ~10-20 ms)
// are attached by two workers while the build goes on, and the last
// node's setupLink waits for them, so every port is guarded before any
// peripheral starts. They count in the supervisor's WaitGroup, which
// RunSupervisor waits on before teardown.
func (s *supervisor) setupLink(n *NodePlan) error {
	m := &s.links
	f := linkFile{LinkParams: LinkParams{
		RateBits: n.RateBits, LossPPM: n.LossPPM, CorruptPPM: n.CorruptPPM, Delay: n.Delay, Seed: n.Seed,
	}, Shaped: n.RateBits > 0}
	mac, err := net.ParseMAC(n.MAC)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	m.mu.Lock()
	if !m.bpfTried && os.Getenv("NETSTATION_TCBPF") == "off" {
		// A switch for tests and for hosts where BPF misbehaves.
		m.bpfTried, m.bpfOff = true, "disabled by NETSTATION_TCBPF=off"
	}
	first := !m.bpfTried
	m.mu.Unlock()
	attach := func() error {
		t, err := tcbpf.AttachTemplate(s.plan.FabricNS, n.Port, mac, n.Addr.Addr())
		if err != nil {
			return err
		}
		t.Close()
		// The node's own port: its kernel is spared the frames of the
		// user-level stack, which it could only route and drop
		// (tcbpf.AttachStackDrop). Only a cost if it fails.
		if err := tcbpf.AttachStackDrop(n.NS, n.IfName, n.Addr.Addr()); err != nil {
			s.log.Warn("kernel stack drop off", "node", n.Name, "err", err)
		}
		return nil
	}
	switch {
	case first:
		err := attach()
		m.mu.Lock()
		m.bpfTried = true
		if err != nil {
			m.bpfOff = bpfReason(err)
			s.log.Warn("kernel transmit templates off", "node", n.Name, "err", err)
		}
		m.mu.Unlock()
	case m.bpf():
		m.mu.Lock()
		if m.workers == nil {
			m.workers = make(chan struct{}, 2)
		}
		m.mu.Unlock()
		m.pending.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer m.pending.Done()
			m.workers <- struct{}{}
			defer func() { <-m.workers }()
			if err := attach(); err != nil {
				s.log.Error("kernel transmit template", "node", n.Name, "err", err)
				m.mu.Lock()
				m.failed++
				m.mu.Unlock()
			}
		}()
	}
	f.Kernel = m.bpf()
	if f.Kernel && f.kernelParams() != (tcbpf.Params{}) {
		if err := setKernelImpairment(s.plan.FabricNS, n.Port, f.kernelParams()); err != nil {
			s.log.Warn("kernel impairment failed; using the link layer", "node", n.Name, "err", err)
			f.Kernel = false
		}
	}
	if err := writeLinkFile(s.dir, n.Name, f); err != nil {
		return err
	}
	if n == &s.plan.Nodes[len(s.plan.Nodes)-1] {
		m.pending.Wait()
	}
	return nil
}

// setKernelImpairment sets p on the port's tc BPF impairment, attaching it
// the first time.
func setKernelImpairment(ns, port string, p tcbpf.Params) error {
	imp, err := tcbpf.Open(ns, port)
	if errors.Is(err, tcbpf.ErrNotFound) {
		imp, err = tcbpf.Attach(ns, port)
	}
	if err != nil {
		return err
	}
	defer imp.Close()
	return imp.Set(p)
}

// handleLink serves the supervisor's "link" (change) and "link-show" ops.
func (s *supervisor) handleLink(ctx context.Context, req ctl.Request) (any, error) {
	switch req.Op {
	case "link":
		var c LinkChange
		if err := req.Decode(&c); err != nil {
			return nil, err
		}
		return s.changeLink(ctx, c)
	case "link-show":
		var node string
		if err := req.Decode(&node); err != nil {
			return nil, err
		}
		var out []LinkStatus
		for i := range s.plan.Nodes {
			n := &s.plan.Nodes[i]
			if node == "" || node == n.Name {
				out = append(out, s.linkStatus(ctx, n))
			}
		}
		if len(out) == 0 {
			_, err := s.plan.Node(node)
			return nil, err
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown op %q", req.Op)
}

func (s *supervisor) changeLink(ctx context.Context, c LinkChange) (*LinkStatus, error) {
	n, err := s.plan.Node(c.Node)
	if err != nil {
		return nil, err
	}
	st, err := s.changeLinkChecked(ctx, n, c)
	if err == nil && st != nil {
		s.nodeNote(n.Name, slog.LevelInfo, "link changed", "params", fmt.Sprintf("%+v", st.Params))
	}
	return st, err
}

func (s *supervisor) changeLinkChecked(ctx context.Context, n *NodePlan, c LinkChange) (*LinkStatus, error) {
	if c.LossPPM != nil && *c.LossPPM > tcbpf.PPM || c.CorruptPPM != nil && *c.CorruptPPM > tcbpf.PPM {
		return nil, fmt.Errorf("link %s: a rate above 100%% (%d ppm)", n.Name, tcbpf.PPM)
	}
	if c.RateBits != nil && *c.RateBits != 0 && *c.RateBits < fabric.MinRate {
		return nil, fmt.Errorf("link %s: rate below %d bit/s", n.Name, fabric.MinRate)
	}
	if c.Delay != nil && (*c.Delay < 0 || *c.Delay > 10*time.Second) {
		return nil, fmt.Errorf("link %s: delay %v is not from 0 to 10s", n.Name, *c.Delay)
	}
	s.links.change.Lock()
	defer s.links.change.Unlock()
	f, err := readLinkFile(s.dir, n.Name)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", n.Name, err)
	}
	old := f
	if c.RateBits != nil {
		f.RateBits = *c.RateBits
	}
	if c.LossPPM != nil {
		f.LossPPM = *c.LossPPM
	}
	if c.CorruptPPM != nil {
		f.CorruptPPM = *c.CorruptPPM
	}
	if c.Delay != nil {
		f.Delay = *c.Delay
	}
	if c.Seed != nil {
		f.Seed = *c.Seed
	}
	if c.Down != nil {
		f.Down = *c.Down
	}

	// Kernel side first: loss and down act at once for every frame.
	if f.Kernel && f.kernelParams() != old.kernelParams() {
		if err := setKernelImpairment(s.plan.FabricNS, n.Port, f.kernelParams()); err != nil {
			return nil, fmt.Errorf("link %s: %w", n.Name, err)
		}
	}
	restart := false
	if f.RateBits != old.RateBits {
		if err := fabric.SetRate(s.plan.FabricNS, n.Port, f.RateBits); err != nil {
			return nil, fmt.Errorf("link %s: %w", n.Name, err)
		}
		if err := fabric.SetRate(n.NS, n.IfName, f.RateBits); err != nil {
			return nil, fmt.Errorf("link %s: %w", n.Name, err)
		}
		if f.RateBits > 0 && !f.Shaped {
			f.Shaped, restart = true, true
		}
	}
	if err := writeLinkFile(s.dir, n.Name, f); err != nil {
		return nil, fmt.Errorf("link %s: %w", n.Name, err)
	}
	if restart {
		if err := s.restartNode(ctx, n.Name); err != nil {
			return nil, fmt.Errorf("link %s: restart the peripheral shaped: %w", n.Name, err)
		}
	} else if f.linkLayerParams() != old.linkLayerParams() {
		// A peripheral that is restarting applies the file at start.
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := ctl.Call(cctx, NodeSock(s.dir, n.Name), "impair", seeded(f.linkLayerParams()), nil, nil)
		cancel()
		if err != nil && s.nodeRunning(n.Name) {
			return nil, fmt.Errorf("link %s: %w", n.Name, err)
		}
	}
	st := s.linkStatus(ctx, n)
	return &st, nil
}

func (s *supervisor) nodeRunning(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes[name].state == StateRunning && s.nodes[name].pid != 0
}

// restartNode asks a peripheral to shut down and waits until the
// supervisor has started it again and it answers.
func (s *supervisor) restartNode(ctx context.Context, name string) error {
	s.mu.Lock()
	oldPID := s.nodes[name].pid
	s.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_ = ctl.Call(cctx, NodeSock(s.dir, name), "shutdown", nil, nil, nil)
	cancel()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		pid, state := s.nodes[name].pid, s.nodes[name].state
		s.mu.Unlock()
		// markRunningWhenReady flips the state once the new process
		// answers on its control socket.
		if pid != 0 && pid != oldPID && state == StateRunning {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("peripheral %s did not come back within 15 s", name)
}

// linkStatus reads what is in force on n's link and its counters.
func (s *supervisor) linkStatus(ctx context.Context, n *NodePlan) LinkStatus {
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	var ps peripherals.Status
	err := ctl.Call(cctx, NodeSock(s.dir, n.Name), "status", nil, &ps, nil)
	ls := s.linkStatusOf(n)
	if err == nil {
		ls.LinkLayer = &ps.ImpairCounters
	}
	return ls
}

// linkStatusOf is linkStatus without the peripheral's own counters (the
// caller has its status already).
func (s *supervisor) linkStatusOf(n *NodePlan) LinkStatus {
	ls := LinkStatus{Node: n.Name, LossEnforcedBy: EnforcedLinkLayer, Rx: node.LinkRx(n.LinkRx)}
	f, err := readLinkFile(s.dir, n.Name)
	if err == nil {
		ls.Params, ls.Shaped = f.LinkParams, f.Shaped
		if f.Kernel {
			ls.LossEnforcedBy = EnforcedKernel
		}
	}
	if t, err := tcbpf.OpenTemplate(s.plan.FabricNS, n.Port); err == nil {
		if c, err := t.Counters(); err == nil {
			ls.Template, ls.TemplateCounters, ls.TemplateDrops = true, &c, c.Dropped()
		}
		t.Close()
	}
	if imp, err := tcbpf.Open(s.plan.FabricNS, n.Port); err == nil {
		if c, err := imp.Counters(); err == nil {
			ls.Kernel = &c
		}
		imp.Close()
	}
	return ls
}

// nodeLink is NodeConfig's link step, taken before the peripheral starts:
// whether the link must keep the qdisc (shaped), the recorded link-layer
// impairment, and apply, which relaxes the port's template to the MAC alone
// while a kernel baseline address is up on the started peripheral (the
// kernel stack sends from another IP).
type nodeLink struct {
	shaped bool
	impair impair.Params
	apply  func(*peripherals.Runtime)
}

func startNodeLink(dir string, plan *Plan, n *NodePlan) nodeLink {
	f, err := readLinkFile(dir, n.Name)
	nl := nodeLink{shaped: n.RateBits > 0 || (err == nil && f.Shaped)}
	if err == nil {
		nl.impair = seeded(f.linkLayerParams())
	}
	nl.apply = func(p *peripherals.Runtime) {
		mac, merr := net.ParseMAC(n.MAC)
		if merr != nil {
			return
		}
		p.OnKernel(func(on bool, _ netip.Addr) {
			t, err := tcbpf.OpenTemplate(plan.FabricNS, n.Port)
			if err != nil {
				return // no template: nothing to relax
			}
			defer t.Close()
			ip := n.Addr.Addr()
			if on {
				ip = netip.Addr{}
			}
			_ = t.Set(mac, ip)
		})
	}
	return nl
}

// SetLink changes the link of a node of the named testbed (through its
// supervisor) and returns what is in force afterwards.
func SetLink(ctx context.Context, testbed string, c LinkChange) (*LinkStatus, error) {
	if plan, err := LoadPlan(Dir(testbed)); err == nil {
		if _, err := plan.Node(c.Node); err != nil {
			return nil, err
		}
	}
	var ls LinkStatus
	if host := remoteHost(Dir(testbed), c.Node); host != "" {
		return &ls, remoteCall(ctx, host, testbed, "supervisor", "link", c, &ls, nil)
	}
	if err := supervisorCall(ctx, testbed, "link", c, &ls); err != nil {
		return nil, err
	}
	return &ls, nil
}

// ShowLinks returns the links of every node of the testbed, or of one.
func ShowLinks(ctx context.Context, testbed, node string) ([]LinkStatus, error) {
	var out []LinkStatus
	if host := remoteHost(Dir(testbed), node); node != "" && host != "" {
		return out, remoteCall(ctx, host, testbed, "supervisor", "link-show", node, &out, nil)
	}
	if err := supervisorCall(ctx, testbed, "link-show", node, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func supervisorCall(ctx context.Context, testbed, op string, args, out any) error {
	dir := Dir(testbed)
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	if err := ctl.Call(ctx, supervisorSock(dir), op, args, out, nil); err != nil {
		return fmt.Errorf("testbed %s: %s: %w", testbed, op, err)
	}
	return nil
}
