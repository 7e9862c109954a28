package fabric_test

import (
	"log"
	"net"
	"net/netip"

	"github.com/netstation/netstation/fabric"
)

// A fabric of one bridge namespace and two peripheral namespaces, built
// with one Session and removed by prefix.
func Example() {
	s, err := fabric.NewSession()
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	defer fabric.Cleanup("demo-")

	if err := s.CreateNetns("demo-fabric"); err != nil {
		log.Fatal(err)
	}
	if err := s.CreateBridge("demo-fabric", "br0", 1500); err != nil {
		log.Fatal(err)
	}
	for i, node := range []string{"demo-cpu0", "demo-disk0"} {
		if err := s.CreateNetns(node); err != nil {
			log.Fatal(err)
		}
		err := s.CreateVeth(fabric.VethSpec{
			NameA: "v-" + node[5:], NamespaceA: "demo-fabric", MasterA: "br0",
			NameB: "eth0", NamespaceB: node,
			MACB: net.HardwareAddr{0x02, 0, 0, 0, 0, byte(i + 1)},
			MTU:  1500,
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	// Only for kernel tools: the peripherals' own stacks need no address.
	if err := s.SetAddr("demo-cpu0", "eth0", netip.MustParsePrefix("10.0.0.1/24")); err != nil {
		log.Fatal(err)
	}
	if err := s.SetRate("demo-fabric", "v-disk0", 100_000_000); err != nil {
		log.Fatal(err)
	}
}
