package spec_test

import (
	"fmt"
	"net/netip"

	"github.com/netstation/netstation/testbed/spec"
)

func ExampleParse() {
	src := []byte(`name: lab
host_access: {}
nodes:
  - name: cpu0
    kind: cpu
    link: {rate: 1gbit}
  - name: disk0
    kind: disk
    disk: {size: 1GiB}
  - name: display0
    kind: display
`)
	top, err := spec.Parse("lab.yaml", src)
	if err != nil {
		fmt.Println(err)
		return
	}
	// The caller picks a subnet that avoids the host's routes.
	subnet, err := spec.PickSubnet([]netip.Prefix{netip.MustParsePrefix("10.77.0.0/24")})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := top.Resolve(subnet); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(top.Name, top.Subnet, "host", top.HostAccess.IP)
	for _, n := range top.Nodes {
		fmt.Println(n.Name, n.Kind, n.IP, n.Segment, n.MAC[0] == 0x02)
	}
	fmt.Println(spec.FormatSize(top.Nodes[1].Disk.SizeBytes), top.Nodes[2].Display.Width, top.Nodes[2].Display.Height)
	// Output:
	// lab 10.77.1.0/24 host 10.77.1.254
	// cpu0 cpu 10.77.1.10 lan true
	// disk0 disk 10.77.1.11 lan true
	// display0 display 10.77.1.12 lan true
	// 1GiB 1280 720
}

func ExampleParse_errors() {
	src := []byte(`name: lab
subnet: 10.77.0.0/24
nodes:
  - name: cpu0
    kind: gpu
  - name: cpu0
    kind: cpu
    ip: 10.78.0.1
    colour: blue
`)
	_, err := spec.Parse("lab.yaml", src)
	fmt.Println(err)
	// Output:
	// lab.yaml:5: nodes[0].kind: unknown kind "gpu" (want cpu, disk or display)
	// lab.yaml:6: nodes[1].name: node name "cpu0" is used twice (first at line 4)
	// lab.yaml:8: nodes[1].ip: 10.78.0.1 is outside the subnet 10.77.0.0/24
	// lab.yaml:9: nodes[1].colour: unknown key "colour" (known keys: name, kind, host, ip, mac, segment, link, disk, display, params)
}
