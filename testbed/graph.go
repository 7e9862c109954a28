package testbed

import (
	"context"
	"fmt"
	"net"

	"github.com/netstation/netstation/testbed/spec"
)

// LiveTopology is the running testbed as a topology to draw: the plan's
// nodes, addresses and segments, with each link as it is now (`link set`,
// `link down`), not as the file had it.
func LiveTopology(ctx context.Context, testbed string) (*spec.Topology, error) {
	plan, err := LoadPlan(Dir(testbed))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	live := map[string]LinkParams{}
	if links, err := ShowLinks(ctx, testbed, ""); err == nil {
		for _, l := range links {
			live[l.Node] = l.Params
		}
	}
	t := &spec.Topology{Name: plan.Testbed, Subnet: plan.Subnet, Source: "testbed " + plan.Testbed + " (running)", Hosts: plan.Hosts}
	for _, s := range plan.Segments {
		t.Segments = append(t.Segments, spec.Segment{Name: s.Name})
	}
	if h := plan.Host; h != nil {
		t.HostAccess = &spec.HostAccess{IP: h.Addr.Addr(), Segment: segmentOf(plan, h.Bridge)}
	}
	for _, n := range plan.Nodes {
		mac, _ := net.ParseMAC(n.MAC)
		node := spec.Node{Name: n.Name, Kind: n.Kind, Host: n.Host, IP: n.Addr.Addr(), MAC: mac, Segment: n.Segment,
			Link: spec.LinkParams{RateBits: n.RateBits, LossPPM: n.LossPPM, CorruptPPM: n.CorruptPPM, Delay: n.Delay, Seed: n.Seed}}
		if l, ok := live[n.Name]; ok {
			node.Link = spec.LinkParams{RateBits: l.RateBits, LossPPM: l.LossPPM, CorruptPPM: l.CorruptPPM, Delay: l.Delay, Seed: l.Seed, Down: l.Down}
		}
		switch n.Kind {
		case spec.KindDisk:
			node.Disk = &spec.DiskParams{SizeBytes: n.DiskSize}
		case spec.KindDisplay:
			node.Display = &spec.DisplayParams{Width: n.Width, Height: n.Height, Format: n.Format}
		}
		t.Nodes = append(t.Nodes, node)
	}
	return t, nil
}
