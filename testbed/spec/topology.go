package spec

import (
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/disk/diskkind"
	"github.com/netstation/netstation/peripherals/display"
)

// Kind is what a node is: which peripheral runs in its namespace.
type Kind string

// The kinds of node a topology may hold.
const (
	KindCPU     Kind = "cpu"
	KindDisk    Kind = "disk"
	KindDisplay Kind = "display"
)

// Kinds lists the built-in kinds in the order error messages name them.
// A program that registers more (peripherals.Register) may declare nodes
// of those too.
var Kinds = []Kind{KindCPU, KindDisk, KindDisplay}

// Valid reports whether k is one of Kinds or a kind registered with the
// peripherals runtime.
func (k Kind) Valid() bool {
	if slices.Contains(Kinds, k) {
		return true
	}
	_, ok := peripherals.LookupKind(string(k))
	return ok
}

// Defaults that Resolve fills in.
const (
	// DefaultSegment is the segment a topology without a segments list has.
	DefaultSegment = "lan"
	// DefaultDiskSize is the size of a disk node without disk.size: 256 MiB
	// (the disk kind's own default).
	DefaultDiskSize = diskkind.DefaultSize
	// DefaultDisplayWidth, DefaultDisplayHeight and DefaultDisplayFormat are
	// a display node's frame buffer when its display block leaves them out.
	// They are the display kind's own.
	DefaultDisplayWidth  = display.DefaultWidth
	DefaultDisplayHeight = display.DefaultHeight
	DefaultDisplayFormat = "rgba"
	// MaxDisplaySide bounds width and height so that the largest frame
	// buffer (8192 x 8192 x 4 bytes) stays at 256 MiB.
	MaxDisplaySide = display.MaxSide
	// FirstNodeHost is the host number (offset in the subnet) from which
	// Resolve hands out node addresses; lower ones are left for people.
	FirstNodeHost = 10
)

// DisplayFormats lists the pixel formats a display node may declare.
var DisplayFormats = display.Formats

// Topology is one testbed as the topology file describes it. Parse and
// Load return it validated but with defaults unfilled; Resolve fills them.
type Topology struct {
	Name       string       // testbed name; prefixes kernel object names
	Subnet     netip.Prefix // IPv4 subnet of every segment; zero until Resolve when the file has none
	HostAccess *HostAccess  // nil: the host's namespace is left alone
	// Hosts names the machines a testbed spans (each runs `netstation
	// agent --name <host>`); empty: the testbed lives on one host.
	Hosts    []string
	Segments []Segment // empty until Resolve when the file has none
	Nodes    []Node
	Source   string // file name used in messages

	// src remembers where each field came from so that Validate can name
	// the line of the exact key; nil for topologies built in code.
	src *sourceInfo
}

// HostAccess asks for a veth into the host's namespace so the host's own
// tools reach the peripherals.
type HostAccess struct {
	IP      netip.Addr // zero: Resolve picks the last usable address (.254 in a /24)
	Segment string     // empty: the only segment
}

// Segment is one layer-2 broadcast domain: a bridge in the fabric.
type Segment struct {
	Name string
}

// Node is one peripheral with its own namespace, veth port and stack.
type Node struct {
	Name    string
	Kind    Kind
	Host    string           // one of Topology.Hosts; empty: Resolve places it
	IP      netip.Addr       // zero: Resolve assigns one
	MAC     net.HardwareAddr // nil: Resolve derives one from (testbed, node) names
	Segment string           // empty: the only segment
	Link    LinkParams
	Disk    *DiskParams    // only for KindDisk
	Display *DisplayParams // only for KindDisplay
	// Params are the node's kind parameters (the params block), checked
	// by its registered kind (peripherals.Kind.Params).
	Params map[string]string
	Line   int // line of the node in the file; 0 when built in code
}

// LinkParams shapes and impairs the node's port. Rates apply to both
// directions of the link (to and from the node).
type LinkParams struct {
	RateBits   uint64        // rate limit in bit/s; 0: unlimited
	LossPPM    uint32        // frames lost per million, each direction
	CorruptPPM uint32        // frames corrupted per million, each direction
	Delay      time.Duration // added to every frame the node sends (its link layer)
	Seed       uint64        // makes loss and corruption reproducible; 0: random
	// Down is live state, never read from a file: the link is cut (`link
	// down`). Set in topologies drawn from a running testbed.
	Down bool
	// Rx is how the node's peripheral takes frames off its port: "" (the
	// peripheral's default, $NETSTATION_LINK_RX or else LinkRxBatch) or
	// one of LinkRxModes.
	Rx string
}

// The receive paths a node's link may ask for (link.rx). They are the
// values of peripherals/node's $NETSTATION_LINK_RX: a test in testbed
// keeps the two lists equal.
const (
	// LinkRxBatch: a ring-less packet socket read with recvmmsg, GSO
	// super-frames lent in batches; the best for bulk receive.
	LinkRxBatch = "recvmmsg"
	// LinkRxFrameRing: a TPACKET_V2 ring of 2 KiB slots that a polling
	// reader reads with no system call; the lowest round-trip latency,
	// costlier for bulk.
	LinkRxFrameRing = "framering"
)

// LinkRxModes lists the values link.rx takes.
var LinkRxModes = []string{LinkRxBatch, LinkRxFrameRing}

// DiskParams configures a disk node.
type DiskParams struct {
	SizeBytes int64 // 0: DefaultDiskSize
	// Access is how the disk checks requests: AccessCapability (the
	// default, also for "") or AccessOpen, which must be asked for.
	Access string
}

// Disk access modes (disk.access in a topology file).
const (
	AccessCapability = "capability" // NASD-style capabilities, keyed at up
	AccessOpen       = "open"       // every client may do everything: for experiments only
)

// DisplayParams configures a display node's frame buffer. Zero fields take
// the defaults.
type DisplayParams struct {
	Width, Height int
	Format        string
}

// sourceInfo maps field paths such as "nodes[2].ip" to the line of their
// key, and records fields whose value could not be decoded at all so that
// Validate does not report follow-on problems for them.
type sourceInfo struct {
	lines  map[string]int
	broken map[string]bool
}

// Clone returns a deep copy of t.
func (t *Topology) Clone() *Topology {
	c := *t
	if t.HostAccess != nil {
		h := *t.HostAccess
		c.HostAccess = &h
	}
	c.Segments = slices.Clone(t.Segments)
	c.Hosts = slices.Clone(t.Hosts)
	c.Nodes = make([]Node, len(t.Nodes))
	for i, n := range t.Nodes {
		if n.MAC != nil {
			n.MAC = slices.Clone(n.MAC)
		}
		if n.Disk != nil {
			d := *n.Disk
			n.Disk = &d
		}
		if n.Display != nil {
			d := *n.Display
			n.Display = &d
		}
		n.Params = maps.Clone(n.Params)
		c.Nodes[i] = n
	}
	if t.Nodes == nil {
		c.Nodes = nil
	}
	return &c
}

// Node returns the node called name, or nil.
func (t *Topology) Node(name string) *Node {
	for i := range t.Nodes {
		if t.Nodes[i].Name == name {
			return &t.Nodes[i]
		}
	}
	return nil
}
