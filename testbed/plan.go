package testbed

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/testbed/spec"
)

// Prefix is what every kernel object of the named testbed is named with.
func Prefix(testbed string) string { return "nstn-" + testbed + "-" }

// Plan is a topology resolved down to kernel names: everything the
// supervisor creates and every peripheral needs to know, decided before
// anything is created. It is saved as plan.json in the state directory.
type Plan struct {
	Testbed  string        `json:"testbed"`
	Subnet   netip.Prefix  `json:"subnet"`
	FabricNS string        `json:"fabric_ns"`
	MTU      int           `json:"mtu"`
	Segments []SegmentPlan `json:"segments"`
	Nodes    []NodePlan    `json:"nodes"`
	Host     *HostPlan     `json:"host,omitempty"`
	Source   string        `json:"source"`
	// Rootless: the testbed lives in a user namespace of its own (the
	// supervisor's), because up ran without root.
	Rootless bool `json:"rootless,omitempty"`

	// Hosts lists the machines a multi-host testbed spans (empty: one
	// host). Every host computes the same plan from the same topology
	// except for the fields below, which ForHost fills: the host the plan
	// is for, the address of its VXLAN endpoint on the underlay, and the
	// fabric namespace, whose name carries the host because simulated
	// hosts share one kernel's /run/netns.
	Hosts    []string   `json:"hosts,omitempty"`
	Local    string     `json:"local,omitempty"`
	Underlay netip.Addr `json:"underlay,omitzero"`
}

// MultiHost reports whether the plan is one host's part of a testbed
// spanning several.
func (p *Plan) MultiHost() bool { return p.Local != "" }

// LocalNodes returns the nodes that run on this plan's host (all of them
// on a single-host testbed).
func (p *Plan) LocalNodes() []NodePlan {
	if !p.MultiHost() {
		return p.Nodes
	}
	var out []NodePlan
	for _, n := range p.Nodes {
		if n.Host == p.Local {
			out = append(out, n)
		}
	}
	return out
}

// LocalNamespaces lists the namespaces this plan's host owns: its fabric
// namespace and its nodes'. Teardown of a multi-host testbed removes these
// and nothing else with the testbed's prefix, which on a shared kernel
// (simulated hosts) belongs to the other hosts.
func (p *Plan) LocalNamespaces() []string {
	out := []string{p.FabricNS}
	for _, n := range p.LocalNodes() {
		out = append(out, n.NS)
	}
	return out
}

// ErrPlacement: a multi-host testbed cannot be placed as asked.
var ErrPlacement = errors.New("placement")

// ForHost makes p the plan of host's part of a multi-host testbed: the
// fabric namespace gets the host's name, the VXLAN endpoint address is
// underlay, every link's MTU is mtu (the smallest underlay MTU of the
// testbed's hosts minus the VXLAN overhead), and host access, if asked
// for, is built on the first host only.
func (p *Plan) ForHost(host string, underlay netip.Addr, mtu int) error {
	if !slices.Contains(p.Hosts, host) {
		return fmt.Errorf("%w: testbed %s does not span host %q (hosts: %s)", ErrPlacement, p.Testbed, host, strings.Join(p.Hosts, ", "))
	}
	if !underlay.Is4() {
		return fmt.Errorf("%w: host %s: underlay address %v is not IPv4", ErrPlacement, host, underlay)
	}
	if mtu < 576 || mtu > 65535-fabric.VXLANOverhead {
		return fmt.Errorf("%w: MTU %d for the peripherals of host %s (underlay MTU too small?)", ErrPlacement, mtu, host)
	}
	p.Local, p.Underlay, p.MTU = host, underlay, mtu
	p.FabricNS = Prefix(p.Testbed) + "fabric-" + host
	if p.Host != nil && host != p.Hosts[0] {
		p.Host = nil
	}
	return nil
}

// VNI is the VXLAN network identifier of a testbed's segment i: 24 bits
// of FNV-1a of the testbed name, plus i, never 0. Every host derives the
// same one.
func VNI(testbed string, i int) uint32 {
	h := fnv.New32a()
	h.Write([]byte(testbed))
	v := (h.Sum32() + uint32(i)) & fabric.MaxVNI
	if v == 0 {
		v = 1
	}
	return v
}

// SegmentPlan is one bridge in the fabric namespace.
type SegmentPlan struct {
	Name   string `json:"name"`
	Bridge string `json:"bridge"`
	// VXLAN and VNI name the segment's VXLAN device (in the fabric
	// namespace, on the bridge) when the testbed spans hosts.
	VXLAN string `json:"vxlan,omitempty"`
	VNI   uint32 `json:"vni,omitempty"`
}

// NodePlan is one peripheral: its namespace, its veth pair (IfName inside
// the node's namespace, Port on the fabric side) and its identity.
type NodePlan struct {
	Name     string       `json:"name"`
	Kind     spec.Kind    `json:"kind"`
	NS       string       `json:"netns"`
	IfName   string       `json:"ifname"`
	Port     string       `json:"port"`
	Bridge   string       `json:"bridge"`
	Segment  string       `json:"segment"`
	Host     string       `json:"host,omitempty"` // multi-host: the host it runs on
	MAC      string       `json:"mac"`
	Addr     netip.Prefix `json:"addr"`
	RateBits uint64       `json:"rate_bits,omitempty"`
	// Link impairments declared in the topology (see LinkParams).
	LossPPM    uint32        `json:"loss_ppm,omitempty"`
	CorruptPPM uint32        `json:"corrupt_ppm,omitempty"`
	Delay      time.Duration `json:"delay,omitempty"`
	Seed       uint64        `json:"seed,omitempty"`
	// LinkRx is the topology's link.rx: how the peripheral receives
	// ("" for its default; spec.LinkRxModes).
	LinkRx   string `json:"link_rx,omitempty"`
	DiskSize int64  `json:"disk_size,omitempty"`
	DiskOpen bool   `json:"disk_open,omitempty"` // disk.access: open (no capabilities)
	Width    int    `json:"width,omitempty"`
	Height   int    `json:"height,omitempty"`
	Format   string `json:"format,omitempty"`
	// Params are the topology's params block, for kinds other than the
	// built-in three (see KindParams).
	Params map[string]string `json:"params,omitempty"`
}

// HostPlan is the optional veth into the host's namespace.
type HostPlan struct {
	IfName string       `json:"ifname"` // in the host namespace
	Port   string       `json:"port"`   // in the fabric namespace
	Bridge string       `json:"bridge"`
	Addr   netip.Prefix `json:"addr"`
}

// NewPlan resolves t (which must be validated and resolved) to kernel names.
func NewPlan(t *spec.Topology) (*Plan, error) {
	p := &Plan{
		Testbed:  t.Name,
		Subnet:   t.Subnet,
		FabricNS: Prefix(t.Name) + "fabric",
		MTU:      1500,
		Source:   t.Source,
		Rootless: os.Geteuid() != 0,
	}
	bridges := map[string]string{}
	for i, s := range t.Segments {
		br := fmt.Sprintf("br%d", i)
		bridges[s.Name] = br
		sp := SegmentPlan{Name: s.Name, Bridge: br}
		if len(t.Hosts) > 0 {
			// "_" cannot appear in a node name, so no port is called so.
			sp.VXLAN, sp.VNI = fmt.Sprintf("vx_%d", i), VNI(t.Name, i)
		}
		p.Segments = append(p.Segments, sp)
	}
	p.Hosts = slices.Clone(t.Hosts)
	ports := map[string]bool{}
	for i, n := range t.Nodes {
		port := "v" + n.Name
		if len(port) > 15 || ports[port] {
			port = fmt.Sprintf("v%d", i)
		}
		ports[port] = true
		np := NodePlan{
			Name:     n.Name,
			Kind:     n.Kind,
			NS:       Prefix(t.Name) + n.Name,
			IfName:   "eth0",
			Port:     port,
			Bridge:   bridges[n.Segment],
			Segment:  n.Segment,
			Host:     n.Host,
			MAC:      n.MAC.String(),
			Addr:     netip.PrefixFrom(n.IP, t.Subnet.Bits()),
			RateBits: n.Link.RateBits,

			LossPPM:    n.Link.LossPPM,
			CorruptPPM: n.Link.CorruptPPM,
			Delay:      n.Link.Delay,
			Seed:       n.Link.Seed,
			LinkRx:     n.Link.Rx,
		}
		if n.Disk != nil {
			np.DiskSize = n.Disk.SizeBytes
			np.DiskOpen = n.Disk.Access == spec.AccessOpen
		}
		np.Params = maps.Clone(n.Params)
		if n.Display != nil {
			np.Width, np.Height, np.Format = n.Display.Width, n.Display.Height, n.Display.Format
		}
		p.Nodes = append(p.Nodes, np)
	}
	if err := checkBridgePorts(t, p); err != nil {
		return nil, err
	}
	if t.HostAccess != nil {
		p.Host = &HostPlan{
			IfName: "nstn" + t.Name, // host-namespace names must be unique on the host: the testbed name is
			Port:   "vhost",
			Bridge: bridges[t.HostAccess.Segment],
			Addr:   netip.PrefixFrom(t.HostAccess.IP, t.Subnet.Bits()),
		}
		if len(p.Host.IfName) > 15 {
			return nil, fmt.Errorf("testbed name %q too long for a host interface name", t.Name)
		}
	}
	return p, nil
}

// MaxBridgePorts is the most ports a Linux bridge takes (BR_MAX_PORTS is
// 1,024 and port number 0 is reserved): a segment's nodes, its host
// access port and its VXLAN device together.
const MaxBridgePorts = 1023

// ErrTooManyPorts: a segment needs more ports than one bridge has.
var ErrTooManyPorts = errors.New("too many ports on one segment")

// checkBridgePorts refuses a plan whose segment would need more bridge
// ports than the kernel gives one bridge, before anything is created (the
// kernel would fail the 1,024th enslave with a bare EXFULL mid-build).
func checkBridgePorts(t *spec.Topology, p *Plan) error {
	ports := map[string]int{}
	for _, n := range p.Nodes {
		ports[n.Segment]++
	}
	if t.HostAccess != nil {
		ports[t.HostAccess.Segment]++
	}
	for _, seg := range p.Segments {
		n := ports[seg.Name]
		if seg.VXLAN != "" {
			n++
		}
		if n > MaxBridgePorts {
			return fmt.Errorf("%w: segment %s needs %d bridge ports (its nodes, host access, VXLAN) but a Linux bridge holds at most %d: spread the nodes over several segments",
				ErrTooManyPorts, seg.Name, n, MaxBridgePorts)
		}
	}
	return nil
}

// Node returns the plan of the named node.
func (p *Plan) Node(name string) (*NodePlan, error) {
	for i := range p.Nodes {
		if p.Nodes[i].Name == name {
			return &p.Nodes[i], nil
		}
	}
	var names []string
	for _, n := range p.Nodes {
		names = append(names, n.Name)
	}
	return nil, fmt.Errorf("testbed %s has no node %q (nodes: %s)", p.Testbed, name, strings.Join(names, ", "))
}

// NodeByAddr returns the node with the given address, or nil.
func (p *Plan) NodeByAddr(a netip.Addr) *NodePlan {
	for i := range p.Nodes {
		if p.Nodes[i].Addr.Addr() == a {
			return &p.Nodes[i]
		}
	}
	return nil
}

func (p *Plan) save(dir string) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	tmp := planPath(dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, planPath(dir))
}

// LoadPlan reads the plan of the testbed whose state directory is dir.
func LoadPlan(dir string) (*Plan, error) {
	b, err := os.ReadFile(planPath(dir))
	if err != nil {
		return nil, err
	}
	var p Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", planPath(dir), err)
	}
	return &p, nil
}
