package spec

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func mustParse(t *testing.T, src string) *Topology {
	t.Helper()
	top, err := Parse(t.Name()+".yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func TestResolveDefaults(t *testing.T) {
	top := mustParse(t, `name: lab
host_access: {}
nodes:
  - {name: cpu0, kind: cpu}
  - {name: disk0, kind: disk}
  - {name: display0, kind: display, display: {height: 480}}
`)
	if err := top.Resolve(netip.MustParsePrefix("10.77.5.0/24")); err != nil {
		t.Fatal(err)
	}
	if top.Subnet.String() != "10.77.5.0/24" {
		t.Errorf("subnet = %v", top.Subnet)
	}
	if top.HostAccess.IP.String() != "10.77.5.254" || top.HostAccess.Segment != "lan" {
		t.Errorf("host access = %+v", top.HostAccess)
	}
	for i, want := range []string{"10.77.5.10", "10.77.5.11", "10.77.5.12"} {
		n := top.Nodes[i]
		if n.IP.String() != want || n.Segment != DefaultSegment {
			t.Errorf("%s: ip %v segment %q, want %s lan", n.Name, n.IP, n.Segment, want)
		}
		if n.MAC[0] != 0x02 {
			t.Errorf("%s: MAC %v is not locally administered unicast 02:...", n.Name, n.MAC)
		}
		if !reflect.DeepEqual(n.MAC, DeriveMAC("lab", n.Name, 0)) {
			t.Errorf("%s: MAC %v is not DeriveMAC's", n.Name, n.MAC)
		}
	}
	if top.Nodes[1].Disk == nil || top.Nodes[1].Disk.SizeBytes != DefaultDiskSize {
		t.Errorf("disk = %+v", top.Nodes[1].Disk)
	}
	if got := *top.Nodes[2].Display; got != (DisplayParams{DefaultDisplayWidth, 480, DefaultDisplayFormat}) {
		t.Errorf("display = %+v", got)
	}
	if top.Nodes[0].Disk != nil || top.Nodes[0].Display != nil {
		t.Error("cpu got kind parameters")
	}
	if err := top.Validate(); err != nil {
		t.Errorf("resolved topology does not validate: %v", err)
	}
}

func TestResolveKeepsFileSubnetAndSkipsTaken(t *testing.T) {
	top := mustParse(t, `name: lab
subnet: 10.9.0.0/24
host_access: {}
nodes:
  - {name: a, kind: cpu}
  - {name: b, kind: cpu, ip: 10.9.0.11}
  - {name: c, kind: cpu, ip: 10.9.0.254}
  - {name: d, kind: cpu}
`)
	if err := top.Resolve(netip.MustParsePrefix("10.77.0.0/24")); err != nil {
		t.Fatal(err)
	}
	got := []string{top.HostAccess.IP.String()}
	for _, n := range top.Nodes {
		got = append(got, n.IP.String())
	}
	want := []string{"10.9.0.253", "10.9.0.10", "10.9.0.11", "10.9.0.254", "10.9.0.12"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("addresses = %v, want %v", got, want)
	}
}

// TestResolveFillsSmallSubnet fills a /28 completely: .10 to .14, then
// wraps to .1 and up.
func TestResolveFillsSmallSubnet(t *testing.T) {
	var b strings.Builder
	b.WriteString("name: lab\nsubnet: 10.1.2.16/28\nnodes:\n")
	for i := range 14 {
		fmt.Fprintf(&b, "  - {name: n%d, kind: cpu}\n", i)
	}
	top := mustParse(t, b.String())
	if err := top.Resolve(netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	for _, n := range top.Nodes {
		if !top.Subnet.Contains(n.IP) || seen[n.IP] {
			t.Errorf("%s: %v", n.Name, n.IP)
		}
		seen[n.IP] = true
	}
	if top.Nodes[0].IP.String() != "10.1.2.26" || top.Nodes[5].IP.String() != "10.1.2.17" {
		t.Errorf("order: first %v, sixth %v", top.Nodes[0].IP, top.Nodes[5].IP)
	}
	// One more node does not fit.
	b.WriteString("  - {name: extra, kind: cpu}\n")
	if _, err := Parse("full.yaml", []byte(b.String())); !errors.Is(err, ErrSubnetFull) {
		t.Errorf("15 nodes in a /28: %v", err)
	}
}

func TestResolveDeterministic(t *testing.T) {
	src := `name: lab
segments: [{name: a}, {name: b}]
host_access: {segment: b}
nodes:
  - {name: cpu0, kind: cpu, segment: a}
  - {name: cpu1, kind: cpu, segment: b, mac: "02:11:22:33:44:55"}
  - {name: disk0, kind: disk, segment: a}
`
	subnet := netip.MustParsePrefix("172.30.7.0/24")
	x, y := mustParse(t, src), mustParse(t, src)
	if err := x.Resolve(subnet); err != nil {
		t.Fatal(err)
	}
	if err := y.Resolve(subnet); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(x, y) {
		t.Errorf("two resolutions differ:\n%+v\n%+v", x, y)
	}
	// Resolving again changes nothing.
	z := x.Clone()
	if err := z.Resolve(netip.MustParsePrefix("10.0.0.0/24")); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(x, z) {
		t.Errorf("second Resolve changed the topology")
	}
	// A node's MAC depends on the testbed and node names only.
	reordered := mustParse(t, strings.Replace(src, "  - {name: cpu0, kind: cpu, segment: a}\n", "", 1)+"  - {name: cpu0, kind: cpu, segment: a}\n")
	if err := reordered.Resolve(subnet); err != nil {
		t.Fatal(err)
	}
	if a, b := x.Node("cpu0").MAC, reordered.Node("cpu0").MAC; a.String() != b.String() {
		t.Errorf("cpu0 MAC moved with its position: %v vs %v", a, b)
	}
	if x.Node("cpu0").MAC.String() == DeriveMAC("other", "cpu0", 0).String() {
		t.Error("MAC does not depend on the testbed name")
	}
}

func TestResolveAvoidsTakenMAC(t *testing.T) {
	clash := DeriveMAC("lab", "b", 0)
	top := mustParse(t, fmt.Sprintf("name: lab\nnodes:\n  - {name: a, kind: cpu, mac: %q}\n  - {name: b, kind: cpu}\n", clash))
	if err := top.Resolve(netip.MustParsePrefix("10.77.0.0/24")); err != nil {
		t.Fatal(err)
	}
	if got := top.Nodes[1].MAC; got.String() == clash.String() || got.String() != DeriveMAC("lab", "b", 1).String() {
		t.Errorf("b got %v; a holds %v", got, clash)
	}
}

func TestResolveErrorsLeaveTopologyAlone(t *testing.T) {
	top := mustParse(t, "name: lab\nnodes:\n  - {name: a, kind: cpu}\n  - {name: b, kind: cpu}\n")
	before := top.Clone()
	// A /30 holds two nodes, a /30 with host access does not.
	top.HostAccess = &HostAccess{}
	err := top.Resolve(netip.MustParsePrefix("10.77.0.0/30"))
	if !errors.Is(err, ErrSubnetFull) {
		t.Fatalf("err = %v", err)
	}
	top.HostAccess = nil
	if !reflect.DeepEqual(top, before) {
		t.Error("failed Resolve changed the topology")
	}
	if err := top.Resolve(netip.Prefix{}); !errors.Is(err, ErrMissing) {
		t.Errorf("no subnet anywhere: %v", err)
	}
	if err := top.Resolve(netip.MustParsePrefix("10.77.0.5/24")); err == nil || !strings.Contains(err.Error(), "host bits") {
		t.Errorf("unmasked subnet argument: %v", err)
	}
	// An explicit address in a file without a subnet is caught at parse time.
	if _, err := Parse("x.yaml", []byte("name: lab\nnodes:\n  - {name: a, kind: cpu, ip: 10.77.0.5}\n")); !errors.Is(err, ErrMissing) {
		t.Errorf("address without subnet: %v", err)
	}
}

func TestPickSubnet(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		inUse []netip.Prefix
		want  string
	}{
		{nil, "10.77.0.0/24"},
		{[]netip.Prefix{p("0.0.0.0/0"), p("fd00::/8")}, "10.77.0.0/24"},
		{[]netip.Prefix{p("10.77.0.0/24"), p("10.77.1.128/25")}, "10.77.2.0/24"},
		{[]netip.Prefix{p("10.0.0.0/8")}, "172.30.0.0/24"},
		{[]netip.Prefix{p("10.77.0.0/16")}, "10.78.0.0/24"},
		{[]netip.Prefix{p("10.77.0.0/16"), p("10.78.0.0/17"), p("10.78.128.0/18")}, "10.78.192.0/24"},
		{[]netip.Prefix{p("10.77.0.9/32")}, "10.77.1.0/24"},
	}
	for _, tc := range tests {
		got, err := PickSubnet(tc.inUse)
		if err != nil || got.String() != tc.want {
			t.Errorf("PickSubnet(%v) = %v, %v; want %s", tc.inUse, got, err, tc.want)
		}
	}
	if _, err := PickSubnet([]netip.Prefix{p("10.0.0.0/8"), p("172.16.0.0/12")}); !errors.Is(err, ErrNoSubnet) {
		t.Errorf("everything taken: %v", err)
	}
}

func TestPickSubnetFor(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		inUse []netip.Prefix
		hosts int
		want  string
	}{
		{nil, 3, "10.77.0.0/24"},
		{nil, 254, "10.77.0.0/24"},
		{nil, 255, "10.77.0.0/23"},
		{nil, 1000, "10.77.0.0/22"},
		{nil, 1023, "10.77.0.0/21"},
		// Clear of a host route inside the first /22, and of another
		// testbed's /24 in the second.
		{[]netip.Prefix{p("10.77.1.7/32"), p("10.77.4.0/24")}, 1000, "10.77.8.0/22"},
		{[]netip.Prefix{p("10.77.0.0/16")}, 1000, "10.78.0.0/22"},
		{nil, 65534, "10.77.0.0/16"},
	}
	for _, tc := range tests {
		got, err := PickSubnetFor(tc.inUse, tc.hosts)
		if err != nil || got.String() != tc.want {
			t.Errorf("PickSubnetFor(%v, %d) = %v, %v; want %s", tc.inUse, tc.hosts, got, err, tc.want)
		}
	}
	if _, err := PickSubnetFor(nil, 65535); !errors.Is(err, ErrSubnetFull) {
		t.Errorf("more than a pool holds: %v", err)
	}
	if _, err := PickSubnetFor([]netip.Prefix{p("10.77.0.0/17"), p("10.78.0.0/16"), p("172.30.128.0/17")}, 40000); !errors.Is(err, ErrNoSubnet) {
		t.Errorf("no /16 free: %v", err)
	}
}

// TestResolveThousandNodes: a topology of 1,000 nodes without a subnet
// resolves in the /22 PickSubnetFor gives it, every address distinct.
func TestResolveThousandNodes(t *testing.T) {
	var sb strings.Builder
	sb.WriteString("name: big\nnodes:\n")
	for i := range 1000 {
		fmt.Fprintf(&sb, "  - {name: n%d, kind: cpu}\n", i)
	}
	top, err := Parse("big.yaml", []byte(sb.String()))
	if err != nil {
		t.Fatal(err)
	}
	subnet, err := PickSubnetFor(nil, len(top.Nodes))
	if err != nil {
		t.Fatal(err)
	}
	if err := top.Resolve(subnet); err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	for _, n := range top.Nodes {
		if !subnet.Contains(n.IP) || seen[n.IP] {
			t.Fatalf("%s: %v outside %v or taken twice", n.Name, n.IP, subnet)
		}
		seen[n.IP] = true
	}
}

func TestResolvePlacesNodesOnHosts(t *testing.T) {
	top, err := Parse("hosts.yaml", []byte(`name: mh
subnet: 10.77.0.0/24
hosts: [h1, h2, h3]
nodes:
  - {name: a, kind: cpu, host: h2}
  - {name: b, kind: disk}
  - {name: c, kind: display}
  - {name: d, kind: cpu}
  - {name: e, kind: cpu, host: h2}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := top.Resolve(netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, n := range top.Nodes {
		got[n.Name] = n.Host
	}
	// h2 holds a and e already; b and c go to the emptiest hosts in list
	// order, d to the first of the least loaded again.
	want := map[string]string{"a": "h2", "b": "h1", "c": "h3", "d": "h1", "e": "h2"}
	for name, h := range want {
		if got[name] != h {
			t.Errorf("node %s on %q, want %q (all: %v)", name, got[name], h, got)
		}
	}
}

func TestHostsValidation(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		err        error
		msg        string
	}{
		{"unknown host", "name: x\nhosts: [h1, h2]\nnodes:\n  - {name: a, kind: cpu, host: h9}\n", ErrUnknownHost, `unknown host "h9" (hosts: h1, h2)`},
		{"host without list", "name: x\nnodes:\n  - {name: a, kind: cpu, host: h1}\n", ErrUnknownHost, "no hosts list"},
		{"duplicate host", "name: x\nhosts: [h1, h1]\nnodes:\n  - {name: a, kind: cpu}\n", ErrDuplicate, `host "h1" is listed twice`},
		{"bad host name", "name: x\nhosts: [H_1]\nnodes:\n  - {name: a, kind: cpu}\n", ErrInvalid, `host "H_1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.body))
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.err, tc.msg)
			}
		})
	}
}
