package testbed

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
)

// ErrOverlap: a testbed with host access would put a route into the
// host's namespace that overlaps one already there, so host traffic would
// go silently to one of them.
var ErrOverlap = errors.New("subnet overlaps")

// hostRoute is an IPv4 route of the host's main table.
type hostRoute struct {
	Dst netip.Prefix
	Dev string
}

// hostRoutes lists the host's IPv4 routes that have a destination prefix
// (the default route overlaps everything and is left out).
func hostRoutes() []hostRoute {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil
	}
	var out []hostRoute
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		p, err := netip.ParsePrefix(r.Dst.String())
		if err != nil || p.Bits() == 0 {
			continue
		}
		dev := fmt.Sprintf("if%d", r.LinkIndex)
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		out = append(out, hostRoute{Dst: p.Masked(), Dev: dev})
	}
	return out
}

// checkHostOverlap refuses a plan with host access whose subnet overlaps
// a route of the host: another testbed's host access (named) or any other
// route. A testbed without host access touches only its own namespaces
// and may reuse any subnet.
func checkHostOverlap(plan *Plan, routes []hostRoute, others map[string]*Plan) error {
	if plan.Host == nil {
		return nil
	}
	byLink := map[string]string{}
	for name, p := range others {
		if p.Host != nil && name != plan.Testbed {
			byLink[p.Host.IfName] = name
		}
	}
	for _, r := range routes {
		if !r.Dst.Overlaps(plan.Subnet) {
			continue
		}
		if tb, ok := byLink[r.Dev]; ok {
			return fmt.Errorf("%w: testbed %s's subnet %s overlaps testbed %s's %s, which also has host access (%s): the host could not tell them apart; give %s another subnet (or none, for a free one) or bring %s down",
				ErrOverlap, plan.Testbed, plan.Subnet, tb, others[tb].Subnet, r.Dev, plan.Testbed, tb)
		}
		hint := ""
		if strings.HasPrefix(r.Dev, "nstn") {
			hint = " (another testbed's host access, from another NETSTATION_STATE_DIR?)"
		}
		return fmt.Errorf("%w: testbed %s's subnet %s overlaps the host's route to %s via %s%s; with host access it would capture or lose that traffic: give it another subnet (or none, for a free one)",
			ErrOverlap, plan.Testbed, plan.Subnet, r.Dst, r.Dev, hint)
	}
	return nil
}

// otherPlans loads the plans of the testbeds recorded in this state root.
func otherPlans() map[string]*Plan {
	out := map[string]*Plan{}
	names, _ := List()
	for _, n := range names {
		if p, err := LoadPlan(Dir(n)); err == nil {
			out[n] = p
		}
	}
	return out
}
