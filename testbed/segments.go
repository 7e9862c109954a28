package testbed

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrNoPath: two nodes are on different segments. A segment is one
// layer-2 network (a bridge in the fabric); nothing routes between
// segments, so they can never reach each other.
var ErrNoPath = errors.New("no path")

// checkPath refuses a conversation between nodes of different segments
// at once, in words, instead of letting it time out.
func checkPath(from, to *NodePlan) error {
	if from.Segment == to.Segment {
		return nil
	}
	return fmt.Errorf("%w: %s is on segment %s, %s on segment %s (segments are separate layer-2 networks: nothing routes between them)",
		ErrNoPath, from.Name, from.Segment, to.Name, to.Segment)
}

// nodeByAddr finds the node that owns addr.
func (p *Plan) nodeByAddr(addr netip.Addr) *NodePlan {
	for i := range p.Nodes {
		if p.Nodes[i].Addr.Addr() == addr {
			return &p.Nodes[i]
		}
	}
	return nil
}

// checkPathNames is checkPath for node names of p (unknown names pass:
// the caller reports them).
func (p *Plan) checkPathNames(from string, to ...string) error {
	f, err := p.Node(from)
	if err != nil {
		return nil
	}
	for _, name := range to {
		if t, err := p.Node(name); err == nil {
			if err := checkPath(f, t); err != nil {
				return err
			}
		}
	}
	return nil
}
