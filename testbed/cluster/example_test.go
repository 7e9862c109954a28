package cluster_test

import (
	"fmt"
	"net/netip"

	"github.com/netstation/netstation/testbed"
	"github.com/netstation/netstation/testbed/cluster"
	"github.com/netstation/netstation/testbed/spec"
)

// The forwarding entries h1's VXLAN device gets while h2 is alive and h3
// is not: flood to h2, and disk0's MAC to h2. Every host derives the same
// plan (and MACs) from the same file.
func ExampleDesiredFDB() {
	top, err := spec.Parse("lab.yaml", []byte(`name: lab
subnet: 10.77.0.0/24
hosts: [h1, h2, h3]
nodes:
  - {name: cpu0, kind: cpu, host: h1}
  - {name: disk0, kind: disk, host: h2, mac: "02:00:00:00:00:0b"}
  - {name: display0, kind: display, host: h3}
`))
	if err != nil {
		panic(err)
	}
	if err := top.Resolve(netip.Prefix{}); err != nil {
		panic(err)
	}
	plan, err := testbed.NewPlan(top)
	if err != nil {
		panic(err)
	}
	if err := plan.ForHost("h1", netip.MustParseAddr("10.99.0.1"), 1450); err != nil {
		panic(err)
	}
	alive := map[string]netip.Addr{"h2": netip.MustParseAddr("10.99.0.2")}
	for _, e := range cluster.DesiredFDB(plan, "lan", alive) {
		fmt.Println(e)
	}
	fmt.Println(plan.FabricNS, plan.Segments[0].VXLAN, plan.MTU)
	// Output:
	// 00:00:00:00:00:00 -> 10.99.0.2
	// 02:00:00:00:00:0b -> 10.99.0.2
	// nstn-lab-fabric-h1 vx_0 1450
}
