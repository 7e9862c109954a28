package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/testbed"
	"github.com/vishvananda/netlink"
)

// Default ports and periods.
const (
	DefaultGossipPort = 7946 // memberlist's usual port
	DefaultRPCPort    = 7947
	// DefaultReconcileInterval is how often FDB entries are reconciled
	// from membership even when no event came.
	DefaultReconcileInterval = 3 * time.Second
	// DefaultRejoinInterval is how often an agent re-joins its seeds and
	// the hosts it saw that are not alive now.
	DefaultRejoinInterval = 5 * time.Second
)

// Member states as Members reports them.
const (
	StateAlive = "alive"
	StateDead  = "dead" // failed: stopped answering probes
	StateLeft  = "left" // left the cluster on purpose (agent stopped)
)

// Sentinel errors.
var (
	// ErrNoAgent: a host the topology places nodes on has no live agent.
	ErrNoAgent = errors.New("no agent for host")
	// ErrNotRunning: no agent answers on this host's control socket.
	ErrNotRunning = errors.New("no agent running")
	// ErrNotFound: no host has the testbed.
	ErrNotFound = errors.New("no host has the testbed")
)

// The sentinels keep their identity across the CLI's control socket and
// the agents' RPC (ctl.RegisterCode).
func init() {
	ctl.RegisterCode("cluster.no_agent", ErrNoAgent)
	ctl.RegisterCode("cluster.not_running", ErrNotRunning)
	ctl.RegisterCode("cluster.not_found", ErrNotFound)
}

var hostNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,14}$`)

// Config configures an agent.
type Config struct {
	Name       string     // host name, as topologies' hosts lists name it
	Bind       netip.Addr // underlay address: gossip, RPC and VXLAN endpoint
	GossipPort int        // 0: DefaultGossipPort
	RPCPort    int        // 0: DefaultRPCPort
	// Join lists seeds: other agents' underlay addresses, with or without
	// ":port" (default: GossipPort).
	Join []string
	// ReconcileInterval and RejoinInterval default to the constants above.
	ReconcileInterval time.Duration
	RejoinInterval    time.Duration
	Log               *slog.Logger
	// Socket is the control socket for the CLI; "": SockPath().
	Socket string
	// Key, when set, is the secret every agent of the cluster shares:
	// gossip is encrypted (AES-256-GCM, memberlist's) and every request
	// between agents carries an HMAC-SHA256 of it. Without a key the
	// underlay is trusted.
	Key []byte
}

// Member is one host of the cluster as this agent sees it.
type Member struct {
	Name       string     `json:"name"`
	Addr       netip.Addr `json:"addr"`
	GossipPort int        `json:"gossip_port"`
	RPCPort    int        `json:"rpc_port"`
	MTU        int        `json:"mtu"` // of the underlay interface
	State      string     `json:"state"`
	Since      time.Time  `json:"since"` // when it entered State, as seen here
	Self       bool       `json:"self,omitempty"`
}

// meta is a member's memberlist metadata (well below its 512 bytes).
type meta struct {
	RPC int `json:"rpc"`
	MTU int `json:"mtu"`
	// Leaving is set just before a graceful leave: memberlist's leave
	// event does not say whether a member left or failed.
	Leaving bool `json:"leaving,omitempty"`
}

// Agent is one host's member of the cluster.
type Agent struct {
	cfg Config
	log *slog.Logger
	mtu int

	ml     *memberlist.Memberlist
	rpc    *ctl.Server
	ctl    *ctl.Server
	kick   chan struct{}
	stop   chan struct{}
	closed sync.Once
	wg     sync.WaitGroup

	mu      sync.Mutex
	leaving bool
	hosts   map[string]*Member
	// tombs: testbeds downed, by name, with when; carried to other hosts
	// in memberlist's push/pull state.
	tombs map[string]time.Time
}

// SockPath is the agent's control socket in the state root.
func SockPath() string { return testbed.AgentSock() }

// Start runs an agent: RPC port, memberlist, control socket, and the
// reconcile and rejoin loops. It returns once the agent serves; seeds that
// do not answer yet are retried by the rejoin loop.
func Start(cfg Config) (*Agent, error) {
	if !hostNameRE.MatchString(cfg.Name) {
		return nil, fmt.Errorf("agent name %q: want 1-15 lower-case letters, digits or '-' starting with a letter", cfg.Name)
	}
	if !cfg.Bind.Is4() {
		return nil, fmt.Errorf("agent bind address %v: want an IPv4 address of this host on the underlay", cfg.Bind)
	}
	if cfg.GossipPort == 0 {
		cfg.GossipPort = DefaultGossipPort
	}
	if cfg.RPCPort == 0 {
		cfg.RPCPort = DefaultRPCPort
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = DefaultReconcileInterval
	}
	if cfg.RejoinInterval == 0 {
		cfg.RejoinInterval = DefaultRejoinInterval
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	mtu, err := underlayMTU(cfg.Bind)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg: cfg, log: cfg.Log, mtu: mtu,
		kick: make(chan struct{}, 1), stop: make(chan struct{}),
		hosts: map[string]*Member{}, tombs: map[string]time.Time{},
	}
	if err := os.MkdirAll(testbed.StateRoot(), 0o755); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(cfg.Bind, uint16(cfg.RPCPort)).String())
	if err != nil {
		return nil, fmt.Errorf("agent RPC port: %w", err)
	}
	a.rpc = ctl.Serve(ln, a.handlePeer)

	conf := memberlist.DefaultLANConfig()
	conf.Name = cfg.Name
	conf.BindAddr = cfg.Bind.String()
	conf.BindPort = cfg.GossipPort
	conf.AdvertiseAddr = cfg.Bind.String()
	conf.AdvertisePort = cfg.GossipPort
	conf.Delegate = (*delegate)(a)
	conf.Events = (*events)(a)
	// A host that was declared dead may come back with the same name
	// (the partition healed) at once.
	conf.DeadNodeReclaimTime = time.Second
	conf.Logger = log.New(&logWriter{a.log}, "", 0)
	if len(cfg.Key) > 0 {
		conf.SecretKey = gossipKey(cfg.Key)
	} else {
		a.log.Warn("no cluster key: gossip and agent RPC are unauthenticated (trusted underlay only; see --key-file)")
	}
	ml, err := memberlist.Create(conf)
	if err != nil {
		a.rpc.Close()
		return nil, fmt.Errorf("agent memberlist: %w", err)
	}
	a.ml = ml
	if seeds := a.seeds(); len(seeds) > 0 {
		if n, err := ml.Join(seeds); err != nil {
			a.log.Warn("join: seeds not answering yet (retried)", "seeds", seeds, "joined", n, "err", err)
		}
	}
	if cfg.Socket == "" {
		cfg.Socket = SockPath()
		a.cfg.Socket = cfg.Socket
	}
	a.ctl, err = ctl.Listen(cfg.Socket, a.handleCtl)
	if err != nil {
		a.Close()
		return nil, err
	}
	a.wg.Add(2)
	go a.reconcileLoop()
	go a.rejoinLoop()
	a.log.Info("agent up", "name", cfg.Name, "bind", cfg.Bind, "gossip", cfg.GossipPort, "rpc", cfg.RPCPort, "underlay_mtu", mtu)
	return a, nil
}

// Close leaves the cluster (others see this host "left") and stops
// serving. Testbeds keep running: their supervisors are not the agent's
// children.
func (a *Agent) Close() error {
	a.closed.Do(func() {
		close(a.stop)
		a.wg.Wait()
		if a.ctl != nil {
			a.ctl.Close()
		}
		if a.ml != nil {
			a.mu.Lock()
			a.leaving = true
			a.mu.Unlock()
			_ = a.ml.UpdateNode(500 * time.Millisecond)
			_ = a.ml.Leave(time.Second)
			_ = a.ml.Shutdown()
		}
		a.rpc.Close()
	})
	return nil
}

// Members returns every host this agent knows, itself included, by name.
func (a *Agent) Members() []Member {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []Member{{
		Name: a.cfg.Name, Addr: a.cfg.Bind, GossipPort: a.cfg.GossipPort, RPCPort: a.cfg.RPCPort,
		MTU: a.mtu, State: StateAlive, Self: true,
	}}
	for _, m := range a.hosts {
		if m.Name != a.cfg.Name {
			out = append(out, *m)
		}
	}
	slices.SortFunc(out, func(x, y Member) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// member returns the named live host.
func (a *Agent) member(name string) (Member, bool) {
	m, ok := a.known(name)
	return m, ok && m.State == StateAlive
}

// known returns the named host in whatever state it was last seen.
func (a *Agent) known(name string) (Member, bool) {
	for _, m := range a.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// knownNames lists every host seen, alive or not.
func (a *Agent) knownNames() []string {
	var out []string
	for _, m := range a.Members() {
		out = append(out, m.Name)
	}
	return out
}

func (a *Agent) aliveNames() []string {
	var out []string
	for _, m := range a.Members() {
		if m.State == StateAlive {
			out = append(out, m.Name)
		}
	}
	return out
}

// seeds returns the configured seeds as host:port.
func (a *Agent) seeds() []string {
	var out []string
	for _, s := range a.cfg.Join {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, strconv.Itoa(a.cfg.GossipPort))
		}
		if s == netip.AddrPortFrom(a.cfg.Bind, uint16(a.cfg.GossipPort)).String() {
			continue
		}
		out = append(out, s)
	}
	return out
}

// underlayMTU returns the MTU of the interface that holds addr.
func underlayMTU(addr netip.Addr) (int, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 0, fmt.Errorf("agent: list addresses: %w", err)
	}
	for _, x := range addrs {
		if a, ok := netip.AddrFromSlice(x.IP); ok && a.Unmap() == addr {
			l, err := netlink.LinkByIndex(x.LinkIndex)
			if err != nil {
				return 0, fmt.Errorf("agent: underlay interface: %w", err)
			}
			return l.Attrs().MTU, nil
		}
	}
	return 0, fmt.Errorf("agent: %s is not an address of this host (bind to the host's underlay address)", addr)
}

// nudge asks the reconcile loop to run now.
func (a *Agent) nudge() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// events updates the member table from memberlist.
type events Agent

func (e *events) NotifyJoin(n *memberlist.Node)   { (*Agent)(e).observe(n, StateAlive) }
func (e *events) NotifyUpdate(n *memberlist.Node) { (*Agent)(e).observe(n, StateAlive) }
func (e *events) NotifyLeave(n *memberlist.Node) {
	st := StateDead
	var md meta
	if json.Unmarshal(n.Meta, &md) == nil && md.Leaving {
		st = StateLeft
	}
	(*Agent)(e).observe(n, st)
}

func (a *Agent) observe(n *memberlist.Node, state string) {
	var md meta
	_ = json.Unmarshal(n.Meta, &md)
	addr, _ := netip.AddrFromSlice(n.Addr)
	a.mu.Lock()
	m, ok := a.hosts[n.Name]
	if !ok {
		m = &Member{Name: n.Name}
		a.hosts[n.Name] = m
	}
	changed := m.State != state
	m.Addr, m.GossipPort = addr.Unmap(), int(n.Port)
	if md.RPC != 0 {
		m.RPCPort, m.MTU = md.RPC, md.MTU
	}
	if changed {
		m.State, m.Since = state, time.Now()
	}
	a.mu.Unlock()
	if changed && n.Name != a.cfg.Name {
		a.log.Info("host "+state, "host", n.Name, "addr", m.Addr)
		a.nudge()
	}
}

// delegate gives memberlist our metadata and tombstones.
type delegate Agent

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	leaving := d.leaving
	d.mu.Unlock()
	b, _ := json.Marshal(meta{RPC: d.cfg.RPCPort, MTU: d.mtu, Leaving: leaving})
	if len(b) > limit {
		return nil
	}
	return b
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState is the tombstone table, exchanged on join and every
// push/pull period.
func (d *delegate) LocalState(join bool) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, _ := json.Marshal(d.tombs)
	return b
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	var in map[string]time.Time
	if json.Unmarshal(buf, &in) != nil {
		return
	}
	a := (*Agent)(d)
	if a.mergeTombs(in) {
		a.nudge()
	}
}

// tombstoneTTL bounds how long a down is remembered.
const tombstoneTTL = 24 * time.Hour

// mergeTombs adds newer tombstones and reports whether any arrived.
func (a *Agent) mergeTombs(in map[string]time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	news := false
	for name, t := range in {
		if time.Since(t) > tombstoneTTL {
			continue
		}
		if t.After(a.tombs[name]) {
			a.tombs[name] = t
			news = true
		}
	}
	for name, t := range a.tombs {
		if time.Since(t) > tombstoneTTL {
			delete(a.tombs, name)
		}
	}
	return news
}

func (a *Agent) tomb(name string) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.tombs[name]
}

// logWriter passes memberlist's warnings and errors to the agent's log.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	s := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(s, "[ERR]"):
		w.log.Error("memberlist", "msg", s)
	case strings.Contains(s, "[WARN]"):
		w.log.Warn("memberlist", "msg", s)
	default:
		w.log.Debug("memberlist", "msg", s)
	}
	return len(p), nil
}

var _ io.Writer = (*logWriter)(nil)
var _ memberlist.Delegate = (*delegate)(nil)
var _ memberlist.EventDelegate = (*events)(nil)
