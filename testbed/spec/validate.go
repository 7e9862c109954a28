package spec

import (
	"bytes"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/netstation/netstation/peripherals"
)

var (
	// testbedNameRE keeps testbed names short: they prefix namespace and
	// interface names, which the kernel limits to 15 bytes.
	testbedNameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,9}$`)
	// nodeNameRE fits an interface name (15 bytes) and a DNS label.
	nodeNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,14}$`)
)

// ReservedNodeNames cannot name nodes: node namespaces are named
// <testbed prefix><node name>, and these names belong to the testbed's
// own fabric and host-access namespaces.
var ReservedNodeNames = []string{"fabric", "host"}

// Subnet prefix lengths a topology may use: /8 at most (a bigger one
// would collide with half the world) and /30 at least (two usable hosts).
const (
	MinSubnetBits = 8
	MaxSubnetBits = 30
)

// Validate checks the whole topology and returns a *ValidationError listing
// every problem as "file:line: field: message", ordered by line, or nil.
// Fields Resolve fills (subnet, segments, addresses, MACs) may be unset.
func (t *Topology) Validate() error {
	ps := &problems{source: t.Source}
	t.validate(ps)
	return ps.result()
}

// lineOf returns the line of the key at path, or fallback.
func (t *Topology) lineOf(path string, fallback int) int {
	if t.src != nil {
		if l, ok := t.src.lines[path]; ok {
			return l
		}
	}
	return fallback
}

// nodeLine returns the line of field f of node i, trusting the recorded
// lines only while the node still sits where the file put it.
func (t *Topology) nodeLine(i int, f string) int {
	n := &t.Nodes[i]
	path := fmt.Sprintf("nodes[%d]", i)
	if t.src == nil || t.src.lines[path] != n.Line {
		return n.Line
	}
	if f == "" {
		return n.Line
	}
	return t.lineOf(path+"."+f, n.Line)
}

func (t *Topology) broken(path string) bool { return t.src != nil && t.src.broken[path] }

// validate checks every section in file order, one validator each; the
// validator carries what later sections check against (the subnet, the
// segment and host names, the addresses and MACs seen so far).
func (t *Topology) validate(ps *problems) {
	v := &validator{t: t, ps: ps, top: t.lineOf("", 0),
		segLine: map[string]int{}, hostLine: map[string]int{}, ipLine: map[netip.Addr]int{},
		nameLine: map[string]int{}, macLine: map[string]int{}}
	v.name()
	v.subnetSection()
	v.segments()
	v.hosts()
	v.hostAccess()
	v.nodes()
	v.capacity()
}

// validator is the state of one validation pass.
type validator struct {
	t   *Topology
	ps  *problems
	top int // the line of the document, for fields without a line
	// subnet is the usable subnet (invalid if absent or broken);
	// subnetKnown is whether the file gives one at all.
	subnet      netip.Prefix
	subnetKnown bool
	// first lines of the names, addresses and MACs seen, for duplicates
	segLine, hostLine map[string]int
	ipLine            map[netip.Addr]int
	nameLine, macLine map[string]int
}

func (v *validator) name() {
	t := v.t
	switch {
	case t.Name == "" && !t.broken("name"):
		v.ps.add(t.lineOf("name", v.top), "name", ErrMissing, "the testbed needs a name")
	case t.Name != "" && !testbedNameRE.MatchString(t.Name):
		v.ps.add(t.lineOf("name", v.top), "name", ErrInvalid, "%q must be 1-10 lower-case letters and digits starting with a letter (it prefixes kernel names)", t.Name)
	}
}

func (v *validator) subnetSection() {
	t := v.t
	subnet := t.Subnet
	if subnet.IsValid() {
		line := t.lineOf("subnet", v.top)
		switch {
		case !subnet.Addr().Is4():
			v.ps.add(line, "subnet", ErrInvalid, "%s is not an IPv4 prefix", subnet)
			subnet = netip.Prefix{}
		case subnet.Bits() < MinSubnetBits || subnet.Bits() > MaxSubnetBits:
			v.ps.add(line, "subnet", ErrInvalid, "%s: prefix length must be /%d to /%d", subnet, MinSubnetBits, MaxSubnetBits)
			subnet = netip.Prefix{}
		case subnet.Masked() != subnet:
			v.ps.add(line, "subnet", ErrInvalid, "%s has host bits set (did you mean %s?)", subnet, subnet.Masked())
			subnet = subnet.Masked()
		}
	}
	v.subnet = subnet
	v.subnetKnown = subnet.IsValid() || t.broken("subnet")
}

func (v *validator) segments() {
	t := v.t
	for i, s := range t.Segments {
		path := fmt.Sprintf("segments[%d]", i)
		line := t.lineOf(path+".name", t.lineOf(path, 0))
		switch {
		case s.Name == "" && !t.broken(path+".name") && !t.broken(path):
			v.ps.add(line, path+".name", ErrMissing, "the segment needs a name")
		case s.Name == "":
		case !nodeNameRE.MatchString(s.Name):
			v.ps.add(line, path+".name", ErrInvalid, "%q must be 1-15 lower-case letters, digits or '-' starting with a letter", s.Name)
		case v.segLine[s.Name] != 0:
			v.ps.add(line, path+".name", ErrDuplicate, "segment %q is defined twice (first at line %d)", s.Name, v.segLine[s.Name])
		default:
			v.segLine[s.Name] = max(line, 1)
		}
	}
}

// segment checks a reference to a segment (of host access or a node).
func (v *validator) segment(name string, line int, field string) {
	t := v.t
	segs := len(t.Segments)
	switch {
	case name == "" && segs > 1 && !t.broken(field):
		v.ps.add(line, field, ErrMissing, "there are %d segments: say which one", segs)
	case name == "":
	case segs == 0 && name == DefaultSegment:
	case segs == 0:
		v.ps.add(line, field, ErrUnknownSegment, "unknown segment %q (without a segments list there is only %q)", name, DefaultSegment)
	case v.segLine[name] == 0 && slices.ContainsFunc(t.Segments, func(s Segment) bool { return s.Name == name }):
		// Defined but itself invalid: already reported.
	case v.segLine[name] == 0:
		v.ps.add(line, field, ErrUnknownSegment, "unknown segment %q", name)
	}
}

// hosts checks the names of the machines (agents) the testbed spans.
func (v *validator) hosts() {
	t := v.t
	for i, h := range t.Hosts {
		path := fmt.Sprintf("hosts[%d]", i)
		line := t.lineOf(path, t.lineOf("hosts", v.top))
		switch {
		case h == "" && t.broken(path):
		case !nodeNameRE.MatchString(h):
			v.ps.add(line, path, ErrInvalid, "host %q must be 1-15 lower-case letters, digits or '-' starting with a letter", h)
		case v.hostLine[h] != 0:
			v.ps.add(line, path, ErrDuplicate, "host %q is listed twice (first at line %d)", h, v.hostLine[h])
		default:
			v.hostLine[h] = max(line, 1)
		}
	}
}

// ip checks an explicit address (of host access or a node): IPv4, in the
// subnet, not its network or broadcast address, not used before.
func (v *validator) ip(a netip.Addr, line int, field string) {
	if !a.IsValid() {
		return
	}
	if !a.Is4() {
		v.ps.add(line, field, ErrInvalid, "%s is not an IPv4 address", a)
		return
	}
	if !v.subnetKnown {
		v.ps.add(line, field, ErrMissing, "an explicit address needs an explicit subnet (the default subnet is chosen at run time)")
		return
	}
	if subnet := v.subnet; subnet.IsValid() {
		first, last := bounds(subnet)
		switch {
		case !subnet.Contains(a):
			v.ps.add(line, field, ErrAddress, "%s is outside the subnet %s", a, subnet)
		case a == first:
			v.ps.add(line, field, ErrAddress, "%s is the network address of %s", a, subnet)
		case a == last:
			v.ps.add(line, field, ErrAddress, "%s is the broadcast address of %s", a, subnet)
		}
	}
	if l, dup := v.ipLine[a]; dup {
		v.ps.add(line, field, ErrDuplicate, "%s is already used (line %d)", a, l)
		return
	}
	v.ipLine[a] = max(line, 1)
}

func (v *validator) hostAccess() {
	t := v.t
	if h := t.HostAccess; h != nil {
		hl := t.lineOf("host_access", v.top)
		v.ip(h.IP, t.lineOf("host_access.ip", hl), "host_access.ip")
		v.segment(h.Segment, t.lineOf("host_access.segment", hl), "host_access.segment")
	}
}

func (v *validator) nodes() {
	t := v.t
	if len(t.Nodes) == 0 && !t.broken("nodes") {
		v.ps.add(t.lineOf("nodes", v.top), "nodes", ErrNoNodes, "a testbed needs at least one node")
	}
	for i := range t.Nodes {
		v.node(i)
	}
}

// node checks node i, field by field.
func (v *validator) node(i int) {
	t := v.t
	n := &t.Nodes[i]
	path := fmt.Sprintf("nodes[%d]", i)
	line := func(f string) int { return t.nodeLine(i, f) }
	v.nodeName(n, path, line)
	v.nodeKind(n, path, line)
	v.ip(n.IP, line("ip"), path+".ip")
	v.nodeHost(n, path, line)
	v.nodeMAC(n, path, line)
	v.segment(n.Segment, line("segment"), path+".segment")
	v.nodeLink(n, path, line)
	v.nodeDisk(n, path, line)
	v.nodeDisplay(n, path, line)
}

func (v *validator) nodeName(n *Node, path string, line func(string) int) {
	t := v.t
	switch {
	case n.Name == "" && !t.broken(path+".name") && !t.broken(path):
		v.ps.add(line(""), path+".name", ErrMissing, "the node needs a name")
	case n.Name == "":
	case !nodeNameRE.MatchString(n.Name):
		v.ps.add(line("name"), path+".name", ErrInvalid, "%q must be 1-15 lower-case letters, digits or '-' starting with a letter", n.Name)
	case slices.Contains(ReservedNodeNames, n.Name):
		v.ps.add(line("name"), path+".name", ErrInvalid, "%q is reserved for the testbed's own namespaces (reserved: %s)", n.Name, strings.Join(ReservedNodeNames, ", "))
	case v.nameLine[n.Name] != 0:
		v.ps.add(line("name"), path+".name", ErrDuplicate, "node name %q is used twice (first at line %d)", n.Name, v.nameLine[n.Name])
	default:
		v.nameLine[n.Name] = max(line("name"), 1)
	}
}

func (v *validator) nodeKind(n *Node, path string, line func(string) int) {
	t := v.t
	switch {
	case n.Kind == "" && !t.broken(path+".kind") && !t.broken(path):
		v.ps.add(line(""), path+".kind", ErrMissing, "the node needs a kind (%s)", kindList())
	case n.Kind == "":
	case !n.Kind.Valid():
		v.ps.add(line("kind"), path+".kind", ErrUnknownKind, "unknown kind %q (want %s)", n.Kind, kindList())
	default:
		checkKindParams(v.ps, n, path, t.lineOf(path+".params", line("")))
	}
}

func (v *validator) nodeHost(n *Node, path string, line func(string) int) {
	t := v.t
	switch {
	case n.Host == "":
	case len(t.Hosts) == 0:
		v.ps.add(line("host"), path+".host", ErrUnknownHost, "host %q: the topology has no hosts list (add `hosts: [%s, ...]`)", n.Host, n.Host)
	case v.hostLine[n.Host] == 0 && !slices.Contains(t.Hosts, n.Host):
		v.ps.add(line("host"), path+".host", ErrUnknownHost, "unknown host %q (hosts: %s)", n.Host, strings.Join(t.Hosts, ", "))
	}
}

func (v *validator) nodeMAC(n *Node, path string, line func(string) int) {
	if n.MAC == nil {
		return
	}
	ml := line("mac")
	switch {
	case len(n.MAC) != 6:
		v.ps.add(ml, path+".mac", ErrInvalid, "%s is not a 6-byte Ethernet address", n.MAC)
	case n.MAC[0]&1 != 0:
		v.ps.add(ml, path+".mac", ErrInvalid, "%s is a multicast address; a port needs a unicast one", n.MAC)
	case bytes.Equal(n.MAC, make([]byte, 6)):
		v.ps.add(ml, path+".mac", ErrInvalid, "%s is the zero address", n.MAC)
	case v.macLine[n.MAC.String()] != 0:
		v.ps.add(ml, path+".mac", ErrDuplicate, "%s is already used (line %d)", n.MAC, v.macLine[n.MAC.String()])
	default:
		v.macLine[n.MAC.String()] = max(ml, 1)
	}
}

func (v *validator) nodeLink(n *Node, path string, line func(string) int) {
	if n.Link.RateBits != 0 && n.Link.RateBits < MinRateBits {
		v.ps.add(line("link"), path+".link.rate", ErrInvalid, "%d bit/s is below %dbit", n.Link.RateBits, MinRateBits)
	}
	if n.Link.LossPPM > PPM {
		v.ps.add(line("link"), path+".link.loss", ErrInvalid, "%d ppm is above 100%%", n.Link.LossPPM)
	}
	if n.Link.CorruptPPM > PPM {
		v.ps.add(line("link"), path+".link.corrupt", ErrInvalid, "%d ppm is above 100%%", n.Link.CorruptPPM)
	}
	if n.Link.Delay < 0 || n.Link.Delay > MaxDelay {
		v.ps.add(line("link"), path+".link.delay", ErrInvalid, "%v is not from 0 to %v", n.Link.Delay, MaxDelay)
	}
}

func (v *validator) nodeDisk(n *Node, path string, line func(string) int) {
	if n.Disk == nil {
		return
	}
	if n.Kind.Valid() && n.Kind != KindDisk {
		v.ps.add(line("disk"), path+".disk", ErrWrongKind, "a disk block belongs to kind disk; %q is %s", n.Name, n.Kind)
	} else if n.Disk.SizeBytes < 0 {
		v.ps.add(line("disk"), path+".disk.size", ErrInvalid, "size %d is negative", n.Disk.SizeBytes)
	}
	if a := n.Disk.Access; a != "" && a != AccessCapability && a != AccessOpen {
		v.ps.add(line("disk"), path+".disk.access", ErrInvalid, "unknown access %q (want %s or %s)", a, AccessCapability, AccessOpen)
	}
}

func (v *validator) nodeDisplay(n *Node, path string, line func(string) int) {
	d := n.Display
	if d == nil {
		return
	}
	if n.Kind.Valid() && n.Kind != KindDisplay {
		v.ps.add(line("display"), path+".display", ErrWrongKind, "a display block belongs to kind display; %q is %s", n.Name, n.Kind)
		return
	}
	for _, side := range []struct {
		name string
		v    int
	}{{"width", d.Width}, {"height", d.Height}} {
		if side.v < 0 || side.v > MaxDisplaySide {
			v.ps.add(line("display"), path+".display."+side.name, ErrInvalid, "%d: want 1 to %d", side.v, MaxDisplaySide)
		}
	}
	if d.Format != "" && !slices.Contains(DisplayFormats, d.Format) {
		v.ps.add(v.t.lineOf(path+".display.format", line("display")), path+".display.format", ErrInvalid,
			"unknown pixel format %q (want %s)", d.Format, strings.Join(DisplayFormats, ", "))
	}
}

// capacity checks that the subnet holds every node and host access.
func (v *validator) capacity() {
	if !v.subnet.IsValid() {
		return
	}
	want := len(v.t.Nodes)
	if v.t.HostAccess != nil {
		want++
	}
	if usable := hostCount(v.subnet); uint64(want) > usable {
		v.ps.add(v.t.lineOf("nodes", v.top), "nodes", ErrSubnetFull, "%d addresses needed but %s has only %d usable", want, v.subnet, usable)
	}
}

// checkKindParams has a node's registered kind check its params block.
func checkKindParams(ps *problems, n *Node, path string, line int) {
	k, ok := peripherals.LookupKind(string(n.Kind))
	if !ok {
		if len(n.Params) > 0 {
			ps.add(line, path+".params", ErrInvalid, "kind %s takes no params block in this program", n.Kind)
		}
		return
	}
	if err := k.CheckParams(n.Params); err != nil {
		ps.add(line, path+".params", ErrInvalid, "%v", err)
	}
}

func kindList() string {
	s := make([]string, len(Kinds))
	for i, k := range Kinds {
		s[i] = string(k)
	}
	for _, name := range peripherals.KindNames() {
		if !slices.Contains(Kinds, Kind(name)) {
			s = append(s, name)
		}
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// bounds returns the network and broadcast addresses of an IPv4 prefix.
func bounds(p netip.Prefix) (first, last netip.Addr) {
	first = p.Masked().Addr()
	v := u32(first) | (1<<(32-p.Bits()) - 1)
	return first, addr4(v)
}

// hostCount is the number of usable host addresses of an IPv4 prefix.
func hostCount(p netip.Prefix) uint64 {
	return 1<<(32-p.Bits()) - 2
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
