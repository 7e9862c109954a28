package peripherals

import (
	"context"
	"net"
	"net/netip"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals/gossip"
	"github.com/netstation/netstation/stack"
)

// stackNetwork is gossip.Network over a peripheral's user-level stack:
// its UDP sockets and its TCP.
type stackNetwork struct{ st *stack.Stack }

var _ gossip.Network = stackNetwork{}

func (n stackNetwork) Addr() netip.Addr { return n.st.Addr() }

func (n stackNetwork) ListenPacket(port uint16) (net.PacketConn, error) {
	return n.st.ListenUDP(netip.AddrPortFrom(n.st.Addr(), port))
}

func (n stackNetwork) Listen(port uint16) (net.Listener, error) {
	return n.st.ListenTCP(netip.AddrPortFrom(n.st.Addr(), port))
}

func (n stackNetwork) Dial(ctx context.Context, to netip.AddrPort) (net.Conn, error) {
	return n.st.DialTCP(ctx, netip.AddrPortFrom(n.st.Addr(), 0), to)
}

// StartGossip joins the testbed's membership over p's own stack (UDP and
// TCP port gossip.Port), publishing meta, and serves the "members" control
// op. It leaves when p stops.
func StartGossip(p *Peripheral, meta gossip.Meta, seeds []netip.AddrPort) (*gossip.Node, error) {
	meta.Kind = p.cfg.Kind
	n, err := gossip.Start(gossip.Config{Name: p.cfg.Name, Network: stackNetwork{p.Stack()}, Meta: meta,
		Seeds: seeds, Logger: p.log})
	if err != nil {
		return nil, err
	}
	p.Handle("members", func(context.Context, ctl.Request, *ctl.Stream) (any, error) {
		return MembersView{Node: p.cfg.Name, Members: n.Members(), Stats: n.Stats()}, nil
	})
	p.AddService("gossip/udp+tcp:7946")
	go func() {
		<-p.Done()
		n.Shutdown()
	}()
	return n, nil
}

// MembersView is one peripheral's view of the membership.
type MembersView struct {
	Node    string          `json:"node"`
	Members []gossip.Member `json:"members"`
	Stats   gossip.Stats    `json:"stats"`
}
