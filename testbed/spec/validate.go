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

func (t *Topology) validate(ps *problems) {
	top := t.lineOf("", 0)

	switch {
	case t.Name == "" && !t.broken("name"):
		ps.add(t.lineOf("name", top), "name", ErrMissing, "the testbed needs a name")
	case t.Name != "" && !testbedNameRE.MatchString(t.Name):
		ps.add(t.lineOf("name", top), "name", ErrInvalid, "%q must be 1-10 lower-case letters and digits starting with a letter (it prefixes kernel names)", t.Name)
	}

	subnet := t.Subnet
	if subnet.IsValid() {
		line := t.lineOf("subnet", top)
		switch {
		case !subnet.Addr().Is4():
			ps.add(line, "subnet", ErrInvalid, "%s is not an IPv4 prefix", subnet)
			subnet = netip.Prefix{}
		case subnet.Bits() < MinSubnetBits || subnet.Bits() > MaxSubnetBits:
			ps.add(line, "subnet", ErrInvalid, "%s: prefix length must be /%d to /%d", subnet, MinSubnetBits, MaxSubnetBits)
			subnet = netip.Prefix{}
		case subnet.Masked() != subnet:
			ps.add(line, "subnet", ErrInvalid, "%s has host bits set (did you mean %s?)", subnet, subnet.Masked())
			subnet = subnet.Masked()
		}
	}
	subnetKnown := subnet.IsValid() || t.broken("subnet")

	// Segments.
	segLine := map[string]int{}
	for i, s := range t.Segments {
		path := fmt.Sprintf("segments[%d]", i)
		line := t.lineOf(path+".name", t.lineOf(path, 0))
		switch {
		case s.Name == "" && !t.broken(path+".name") && !t.broken(path):
			ps.add(line, path+".name", ErrMissing, "the segment needs a name")
		case s.Name == "":
		case !nodeNameRE.MatchString(s.Name):
			ps.add(line, path+".name", ErrInvalid, "%q must be 1-15 lower-case letters, digits or '-' starting with a letter", s.Name)
		case segLine[s.Name] != 0:
			ps.add(line, path+".name", ErrDuplicate, "segment %q is defined twice (first at line %d)", s.Name, segLine[s.Name])
		default:
			segLine[s.Name] = max(line, 1)
		}
	}
	segs := len(t.Segments)
	checkSegment := func(name string, line int, field string) {
		switch {
		case name == "" && segs > 1 && !t.broken(field):
			ps.add(line, field, ErrMissing, "there are %d segments: say which one", segs)
		case name == "":
		case segs == 0 && name == DefaultSegment:
		case segs == 0:
			ps.add(line, field, ErrUnknownSegment, "unknown segment %q (without a segments list there is only %q)", name, DefaultSegment)
		case segLine[name] == 0 && slices.ContainsFunc(t.Segments, func(s Segment) bool { return s.Name == name }):
			// Defined but itself invalid: already reported.
		case segLine[name] == 0:
			ps.add(line, field, ErrUnknownSegment, "unknown segment %q", name)
		}
	}

	// Hosts: names of the machines (agents) the testbed spans.
	hostLine := map[string]int{}
	for i, h := range t.Hosts {
		path := fmt.Sprintf("hosts[%d]", i)
		line := t.lineOf(path, t.lineOf("hosts", top))
		switch {
		case h == "" && t.broken(path):
		case !nodeNameRE.MatchString(h):
			ps.add(line, path, ErrInvalid, "host %q must be 1-15 lower-case letters, digits or '-' starting with a letter", h)
		case hostLine[h] != 0:
			ps.add(line, path, ErrDuplicate, "host %q is listed twice (first at line %d)", h, hostLine[h])
		default:
			hostLine[h] = max(line, 1)
		}
	}

	// Addresses, shared by host access and nodes.
	ipLine := map[netip.Addr]int{}
	checkIP := func(a netip.Addr, line int, field string) {
		if !a.IsValid() {
			return
		}
		if !a.Is4() {
			ps.add(line, field, ErrInvalid, "%s is not an IPv4 address", a)
			return
		}
		if !subnetKnown {
			ps.add(line, field, ErrMissing, "an explicit address needs an explicit subnet (the default subnet is chosen at run time)")
			return
		}
		if subnet.IsValid() {
			first, last := bounds(subnet)
			switch {
			case !subnet.Contains(a):
				ps.add(line, field, ErrAddress, "%s is outside the subnet %s", a, subnet)
			case a == first:
				ps.add(line, field, ErrAddress, "%s is the network address of %s", a, subnet)
			case a == last:
				ps.add(line, field, ErrAddress, "%s is the broadcast address of %s", a, subnet)
			}
		}
		if l, dup := ipLine[a]; dup {
			ps.add(line, field, ErrDuplicate, "%s is already used (line %d)", a, l)
			return
		}
		ipLine[a] = max(line, 1)
	}

	if h := t.HostAccess; h != nil {
		hl := t.lineOf("host_access", top)
		checkIP(h.IP, t.lineOf("host_access.ip", hl), "host_access.ip")
		checkSegment(h.Segment, t.lineOf("host_access.segment", hl), "host_access.segment")
	}

	// Nodes.
	if len(t.Nodes) == 0 && !t.broken("nodes") {
		ps.add(t.lineOf("nodes", top), "nodes", ErrNoNodes, "a testbed needs at least one node")
	}
	nameLine := map[string]int{}
	macLine := map[string]int{}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		path := fmt.Sprintf("nodes[%d]", i)
		line := func(f string) int { return t.nodeLine(i, f) }

		switch {
		case n.Name == "" && !t.broken(path+".name") && !t.broken(path):
			ps.add(line(""), path+".name", ErrMissing, "the node needs a name")
		case n.Name == "":
		case !nodeNameRE.MatchString(n.Name):
			ps.add(line("name"), path+".name", ErrInvalid, "%q must be 1-15 lower-case letters, digits or '-' starting with a letter", n.Name)
		case slices.Contains(ReservedNodeNames, n.Name):
			ps.add(line("name"), path+".name", ErrInvalid, "%q is reserved for the testbed's own namespaces (reserved: %s)", n.Name, strings.Join(ReservedNodeNames, ", "))
		case nameLine[n.Name] != 0:
			ps.add(line("name"), path+".name", ErrDuplicate, "node name %q is used twice (first at line %d)", n.Name, nameLine[n.Name])
		default:
			nameLine[n.Name] = max(line("name"), 1)
		}

		switch {
		case n.Kind == "" && !t.broken(path+".kind") && !t.broken(path):
			ps.add(line(""), path+".kind", ErrMissing, "the node needs a kind (%s)", kindList())
		case n.Kind == "":
		case !n.Kind.Valid():
			ps.add(line("kind"), path+".kind", ErrUnknownKind, "unknown kind %q (want %s)", n.Kind, kindList())
		default:
			checkKindParams(ps, n, path, t.lineOf(path+".params", line("")))
		}

		checkIP(n.IP, line("ip"), path+".ip")

		switch {
		case n.Host == "":
		case len(t.Hosts) == 0:
			ps.add(line("host"), path+".host", ErrUnknownHost, "host %q: the topology has no hosts list (add `hosts: [%s, ...]`)", n.Host, n.Host)
		case hostLine[n.Host] == 0 && !slices.Contains(t.Hosts, n.Host):
			ps.add(line("host"), path+".host", ErrUnknownHost, "unknown host %q (hosts: %s)", n.Host, strings.Join(t.Hosts, ", "))
		}

		if n.MAC != nil {
			ml := line("mac")
			switch {
			case len(n.MAC) != 6:
				ps.add(ml, path+".mac", ErrInvalid, "%s is not a 6-byte Ethernet address", n.MAC)
			case n.MAC[0]&1 != 0:
				ps.add(ml, path+".mac", ErrInvalid, "%s is a multicast address; a port needs a unicast one", n.MAC)
			case bytes.Equal(n.MAC, make([]byte, 6)):
				ps.add(ml, path+".mac", ErrInvalid, "%s is the zero address", n.MAC)
			case macLine[n.MAC.String()] != 0:
				ps.add(ml, path+".mac", ErrDuplicate, "%s is already used (line %d)", n.MAC, macLine[n.MAC.String()])
			default:
				macLine[n.MAC.String()] = max(ml, 1)
			}
		}

		checkSegment(n.Segment, line("segment"), path+".segment")

		if n.Link.RateBits != 0 && n.Link.RateBits < MinRateBits {
			ps.add(line("link"), path+".link.rate", ErrInvalid, "%d bit/s is below %dbit", n.Link.RateBits, MinRateBits)
		}
		if n.Link.LossPPM > PPM {
			ps.add(line("link"), path+".link.loss", ErrInvalid, "%d ppm is above 100%%", n.Link.LossPPM)
		}
		if n.Link.CorruptPPM > PPM {
			ps.add(line("link"), path+".link.corrupt", ErrInvalid, "%d ppm is above 100%%", n.Link.CorruptPPM)
		}
		if n.Link.Delay < 0 || n.Link.Delay > MaxDelay {
			ps.add(line("link"), path+".link.delay", ErrInvalid, "%v is not from 0 to %v", n.Link.Delay, MaxDelay)
		}

		if n.Disk != nil {
			if n.Kind.Valid() && n.Kind != KindDisk {
				ps.add(line("disk"), path+".disk", ErrWrongKind, "a disk block belongs to kind disk; %q is %s", n.Name, n.Kind)
			} else if n.Disk.SizeBytes < 0 {
				ps.add(line("disk"), path+".disk.size", ErrInvalid, "size %d is negative", n.Disk.SizeBytes)
			}
			if a := n.Disk.Access; a != "" && a != AccessCapability && a != AccessOpen {
				ps.add(line("disk"), path+".disk.access", ErrInvalid, "unknown access %q (want %s or %s)", a, AccessCapability, AccessOpen)
			}
		}
		if d := n.Display; d != nil {
			if n.Kind.Valid() && n.Kind != KindDisplay {
				ps.add(line("display"), path+".display", ErrWrongKind, "a display block belongs to kind display; %q is %s", n.Name, n.Kind)
			} else {
				for _, side := range []struct {
					name string
					v    int
				}{{"width", d.Width}, {"height", d.Height}} {
					if side.v < 0 || side.v > MaxDisplaySide {
						ps.add(line("display"), path+".display."+side.name, ErrInvalid, "%d: want 1 to %d", side.v, MaxDisplaySide)
					}
				}
				if d.Format != "" && !slices.Contains(DisplayFormats, d.Format) {
					ps.add(t.lineOf(path+".display.format", line("display")), path+".display.format", ErrInvalid,
						"unknown pixel format %q (want %s)", d.Format, strings.Join(DisplayFormats, ", "))
				}
			}
		}
	}

	if subnet.IsValid() {
		want := len(t.Nodes)
		if t.HostAccess != nil {
			want++
		}
		if usable := hostCount(subnet); uint64(want) > usable {
			ps.add(t.lineOf("nodes", top), "nodes", ErrSubnetFull, "%d addresses needed but %s has only %d usable", want, subnet, usable)
		}
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
