package testbed

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

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
}

// SegmentPlan is one bridge in the fabric namespace.
type SegmentPlan struct {
	Name   string `json:"name"`
	Bridge string `json:"bridge"`
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
	MAC      string       `json:"mac"`
	Addr     netip.Prefix `json:"addr"`
	RateBits uint64       `json:"rate_bits,omitempty"`
	// Link impairments declared in the topology (see LinkParams).
	LossPPM    uint32        `json:"loss_ppm,omitempty"`
	CorruptPPM uint32        `json:"corrupt_ppm,omitempty"`
	Delay      time.Duration `json:"delay,omitempty"`
	Seed       uint64        `json:"seed,omitempty"`
	DiskSize   int64         `json:"disk_size,omitempty"`
	DiskOpen   bool          `json:"disk_open,omitempty"` // disk.access: open (no capabilities)
	Width      int           `json:"width,omitempty"`
	Height     int           `json:"height,omitempty"`
	Format     string        `json:"format,omitempty"`
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
		p.Segments = append(p.Segments, SegmentPlan{Name: s.Name, Bridge: br})
	}
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
			MAC:      n.MAC.String(),
			Addr:     netip.PrefixFrom(n.IP, t.Subnet.Bits()),
			RateBits: n.Link.RateBits,

			LossPPM:    n.Link.LossPPM,
			CorruptPPM: n.Link.CorruptPPM,
			Delay:      n.Link.Delay,
			Seed:       n.Link.Seed,
		}
		if n.Disk != nil {
			np.DiskSize = n.Disk.SizeBytes
			np.DiskOpen = n.Disk.Access == spec.AccessOpen
		}
		if n.Display != nil {
			np.Width, np.Height, np.Format = n.Display.Width, n.Display.Height, n.Display.Format
		}
		p.Nodes = append(p.Nodes, np)
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
