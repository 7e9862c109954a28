package main

import (
	"net/netip"

	"github.com/netstation/netstation/testbed/spec"
)

// defaultGraphSubnet is the subnet drawn for a topology that names none:
// graphs do not look at the host's routes.
func defaultGraphSubnet(t *spec.Topology) netip.Prefix {
	if t.Subnet.IsValid() {
		return netip.Prefix{}
	}
	hosts := len(t.Nodes)
	if t.HostAccess != nil {
		hosts++
	}
	p, _ := spec.PickSubnetFor(nil, hosts)
	return p
}

// specParseRate is spec.ParseRate, named for the bench flag.
var specParseRate = spec.ParseRate
