package testbed

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// TestCheckHostOverlap: a testbed with host access is refused when its
// subnet overlaps a host route, naming the testbed that owns the route
// when there is one; without host access any subnet goes.
func TestCheckHostOverlap(t *testing.T) {
	sub := netip.MustParsePrefix("10.79.0.0/24")
	with := &Plan{Testbed: "b", Subnet: sub, Host: &HostPlan{IfName: "nstnb"}}
	without := &Plan{Testbed: "b", Subnet: sub}
	others := map[string]*Plan{"a": {Testbed: "a", Subnet: sub, Host: &HostPlan{IfName: "nstna"}}}
	routes := []hostRoute{{netip.MustParsePrefix("192.168.1.0/24"), "eth0"}, {sub, "nstna"}}
	err := checkHostOverlap(with, routes, others)
	if !errors.Is(err, ErrOverlap) || !strings.Contains(err.Error(), "overlaps testbed a's 10.79.0.0/24, which also has host access (nstna)") {
		t.Errorf("overlap with testbed a: %v", err)
	}
	if err := checkHostOverlap(without, routes, others); err != nil {
		t.Errorf("without host access: %v", err)
	}
	err = checkHostOverlap(with, []hostRoute{{netip.MustParsePrefix("10.79.0.128/25"), "wg0"}}, nil)
	if !errors.Is(err, ErrOverlap) || !strings.Contains(err.Error(), "overlaps the host's route to 10.79.0.128/25 via wg0") {
		t.Errorf("overlap with a host route: %v", err)
	}
	if err := checkHostOverlap(with, []hostRoute{{netip.MustParsePrefix("10.80.0.0/16"), "eth1"}}, nil); err != nil {
		t.Errorf("no overlap: %v", err)
	}
}
