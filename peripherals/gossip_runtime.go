package peripherals

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals/gossip"
	"github.com/netstation/netstation/stack"
)

// stackNetwork is gossip.Network over a peripheral's user-level stack:
// its UDP sockets and its TCP.
type stackNetwork struct{ st *stack.Stack }

var _ gossip.Network = stackNetwork{}

func (n stackNetwork) Addr() netip.Addr { return n.st.Addr() }

// The gossip socket's receive ring: 512 datagrams, 256 KiB (a join's
// burst of alive messages from a 1,000-member cluster fits).
const (
	gossipQueueLen   = 512
	gossipQueueBytes = 256 << 10
)

func (n stackNetwork) ListenPacket(port uint16) (net.PacketConn, error) {
	// Gossip is a few small datagrams a second: a ring of its own, not the
	// stack's bulk-sized default (4 MiB, resident once the ring has
	// wrapped: issue 16).
	return n.st.ListenUDPOptions(netip.AddrPortFrom(n.st.Addr(), port), stack.UDPOptions{QueueLen: gossipQueueLen, QueueBytes: gossipQueueBytes})
}

func (n stackNetwork) Listen(port uint16) (net.Listener, error) {
	return n.st.ListenTCP(netip.AddrPortFrom(n.st.Addr(), port))
}

func (n stackNetwork) Dial(ctx context.Context, to netip.AddrPort) (net.Conn, error) {
	return n.st.DialTCP(ctx, netip.AddrPortFrom(n.st.Addr(), 0), to)
}

// Peer is a node of the testbed as its plan has it.
type Peer struct {
	Name   string       `json:"name"`
	Kind   string       `json:"kind"`
	Addr   netip.Prefix `json:"addr"`
	Params Params       `json:"params,omitempty"`
}

// membership is the peripheral's place in the testbed's membership.
type membership struct {
	mu   sync.Mutex
	meta gossip.Meta
	node *gossip.Node
}

// SetMeta edits the metadata the peripheral publishes in the membership
// (a kind's capacity: a disk's size, a display's resolution). Kinds call
// it from Start; the kind and the service ports are filled in at join.
func (p *Runtime) SetMeta(f func(m *gossip.Meta)) {
	p.members.mu.Lock()
	f(&p.members.meta)
	p.members.mu.Unlock()
}

// joinMembership joins the testbed's membership over p's own stack (UDP
// and TCP port gossip.Port), publishing the kind, the services and the
// kind's metadata, and serves the members op. It leaves when p stops.
func (p *Runtime) joinMembership() error {
	p.members.mu.Lock()
	meta := p.members.meta
	p.members.mu.Unlock()
	meta.Kind = p.cfg.Kind
	meta.Services = p.ServicePorts()
	// Listed in status from the start: gossip.Start binds the port at
	// once but joins the seeds before it returns, which takes a while when
	// one does not answer.
	svc := fmt.Sprintf("gossip/udp+tcp:%d", gossip.Port)
	p.AddService(svc)
	n, err := gossip.Start(gossip.Config{Name: p.cfg.Name, Network: stackNetwork{p.Stack()}, Meta: meta,
		Seeds: p.cfg.Seeds, Expect: p.cfg.Members, Deferred: p.cfg.DeferJoin, QuietJoins: true, Beat: p.cfg.Beat, BeatEvery: p.cfg.BeatEvery, Logger: p.log})
	if err != nil {
		p.removeService(svc)
		return err
	}
	HandleArgs(p, OpMembers, func(_ context.Context, a MembersArgs, _ *ctl.Stream) (any, error) {
		return membersView(p.cfg.Name, n, a), nil
	})
	HandleArgs(p, OpJoin, func(_ context.Context, a JoinArgs, _ *ctl.Stream) (any, error) {
		got, err := n.Exchange(a.Peers)
		return JoinResult{Answered: got, Members: n.Stats().Members}, err
	})
	HandleArgs(p, OpDeclareDead, func(_ context.Context, a DeclareDeadArgs, _ *ctl.Stream) (any, error) {
		return nil, n.DeclareDead(a.Name)
	})
	p.members.mu.Lock()
	p.members.node = n
	p.members.mu.Unlock()
	p.stops = append(p.stops, func() error { n.Shutdown(); return nil })
	return nil
}

// FindPeer returns the address of the alive member called name, of kind,
// on the user-level stacks or (kernel) the kernel baseline's: peripherals
// find each other by name in their membership view, not from the plan. A
// member not yet in the view (just after up) is waited for, a little.
func (p *Runtime) FindPeer(ctx context.Context, name, kind string, kernel bool) (netip.Addr, error) {
	if name == "" {
		return netip.Addr{}, fmt.Errorf("no %s named and no address given", kind)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	last := "not in the membership view"
	for {
		p.members.mu.Lock()
		n := p.members.node
		p.members.mu.Unlock()
		if n != nil {
			if m, ok := n.Lookup(name); ok {
				switch {
				case m.Meta.Kind != kind:
					return netip.Addr{}, fmt.Errorf("%s is a %s, not a %s", name, m.Meta.Kind, kind)
				case m.State == gossip.Alive && kernel:
					return KernelAddr(netip.PrefixFrom(m.Addr.Addr(), p.cfg.Addr.Bits())).Addr(), nil
				case m.State == gossip.Alive:
					return m.Addr.Addr(), nil
				}
				last = string(m.State)
			}
		} else {
			last = "membership not joined"
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, fmt.Errorf("%s cannot find %s: %s (netstation members --from %s)", p.cfg.Name, name, last, p.cfg.Name)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// JoinArgs of op join: the members to exchange the whole membership state
// with, one after another (gossip.Node.Exchange); none: the peripheral's
// seeds. The first join of a peripheral started with Config.DeferJoin
// ends its wait. The testbed's supervisor completes every view with these
// (every peripheral joins its seeds, the seeds exchange with each other,
// every other peripheral exchanges with one seed), since peripherals do
// not re-broadcast each other's joins (gossip.Config.QuietJoins).
type JoinArgs struct {
	Peers []netip.AddrPort `json:"peers,omitempty"`
}

// DeclareDeadArgs of op declare-dead: the member the peripheral declares
// dead in the membership (gossip.Node.DeclareDead). The testbed's
// supervisor asks a few live peripherals when one of its own stops
// beating (its watchdog).
type DeclareDeadArgs struct {
	Name string `json:"name"`
}

// JoinResult: how many of the peers answered, and how many members the
// view holds (not dead) after the exchanges.
type JoinResult struct {
	Answered int `json:"answered"`
	Members  int `json:"members"`
}

// MembersArgs of op members (all optional): Name lists only the member of
// that name; Count leaves the list out and counts members by state. A
// view of 1,000 members is about 200 KB of JSON: a benchmark polling every
// view to see it complete needs only the counts.
type MembersArgs struct {
	Name  string `json:"name,omitempty"`
	Count bool   `json:"count,omitempty"`
}

// MembersView is one peripheral's view of the membership.
type MembersView struct {
	Node    string          `json:"node"`
	Members []gossip.Member `json:"members"`
	Stats   gossip.Stats    `json:"stats"`
	// Alive and Dead count the view's members (MembersArgs.Count).
	Alive int `json:"alive,omitempty"`
	Dead  int `json:"dead,omitempty"`
}

func membersView(self string, n *gossip.Node, a MembersArgs) MembersView {
	v := MembersView{Node: self, Stats: n.Stats(), Members: []gossip.Member{}}
	switch {
	case a.Count:
		v.Alive, v.Dead = n.Count()
		if m, ok := n.Lookup(a.Name); ok && a.Name != "" {
			v.Members = append(v.Members, m)
		}
	case a.Name != "":
		if m, ok := n.Lookup(a.Name); ok {
			v.Members = append(v.Members, m)
		}
	default:
		v.Members = n.Members()
	}
	return v
}

// removeService undoes AddService(name) for a service that failed to
// start.
func (p *Runtime) removeService(name string) {
	p.opsMu.Lock()
	p.services = slices.DeleteFunc(p.services, func(s string) bool { return s == name })
	p.opsMu.Unlock()
}
