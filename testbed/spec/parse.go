package spec

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds what Parse and Load read: a topology of thousands of
// nodes fits in far less.
const MaxFileSize = 4 << 20

//go:embed default.yaml
var defaultYAML []byte

// DefaultSource is the Source of the topology Default returns.
const DefaultSource = "default.yaml"

// Default returns the embedded default testbed: "default", with cpu0,
// disk0 and display0 on one segment. Each call returns a fresh copy.
func Default() *Topology {
	t, err := Parse(DefaultSource, defaultYAML)
	if err != nil {
		// The file is compiled in and covered by tests.
		panic("spec: embedded default.yaml is invalid: " + err.Error())
	}
	return t
}

// Load reads and parses the topology file at path.
func Load(path string) (*Topology, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("spec: %s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse decodes a topology file and validates it. source names the file in
// messages. Every problem found is returned at once as a
// *ValidationError; on error the returned topology is nil.
func Parse(source string, data []byte) (*Topology, error) {
	ps := &problems{source: source}
	if len(data) > MaxFileSize {
		ps.add(0, "", ErrTooLarge, "larger than %d bytes", MaxFileSize)
		return nil, ps.result()
	}
	root, ok := decodeDocument(ps, data)
	if !ok {
		return nil, ps.result()
	}
	d := &decoder{problems: ps, src: &sourceInfo{lines: map[string]int{}, broken: map[string]bool{}}}
	t := d.topology(root)
	t.Source = source
	t.validate(ps)
	if err := ps.result(); err != nil {
		return nil, err
	}
	return t, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// decodeDocument parses data into a node tree and returns its top-level
// mapping; syntax errors become problems with the line yaml reports.
func decodeDocument(ps *problems, data []byte) (root *yaml.Node, ok bool) {
	defer func() {
		// The yaml package has panicked on hostile input in the past; a bad
		// file must give an error, never take the caller down.
		if r := recover(); r != nil {
			ps.add(0, "", ErrSyntax, "cannot parse: %v", r)
			root, ok = nil, false
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			ps.add(0, "", ErrMissing, "file is empty")
			return nil, false
		}
		addSyntax(ps, err)
		return nil, false
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		ps.add(extra.Line, "", ErrSyntax, "more than one YAML document; a topology file holds one")
		return nil, false
	} else if !errors.Is(err, io.EOF) {
		addSyntax(ps, err)
		return nil, false
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		ps.add(doc.Line, "", ErrMissing, "file is empty")
		return nil, false
	}
	n := doc.Content[0]
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		ps.add(n.Line, "", ErrMissing, "file is empty")
		return nil, false
	}
	if n.Kind != yaml.MappingNode {
		ps.add(n.Line, "", ErrInvalid, "the top level must be a mapping of keys (name, nodes, ...), not %s", describe(n))
		return nil, false
	}
	return n, true
}

func addSyntax(ps *problems, err error) {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		msg := m[2]
		if strings.HasPrefix(msg, "did not find expected") {
			// The yaml parser names the line where the enclosing block or
			// flow collection starts, not the line that breaks it.
			msg += " in the block that starts on this line (check the indentation and brackets below it)"
		}
		ps.add(line, "", ErrSyntax, "%s", msg)
		return
	}
	ps.add(0, "", ErrSyntax, "%s", strings.TrimPrefix(msg, "yaml: "))
}

// describe names a node's shape for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "an empty value"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "a document"
}

// Keys reserved for features that are planned but not built: they are
// rejected with ErrNotSupported instead of ErrUnknownKey so that a file
// written for a later version fails with a clear message.
var (
	reservedTopKeys  []string
	reservedNodeKeys = []string{"capabilities"}
	reservedLinkKeys = []string{"jitter", "duplicate", "reorder"}
)

// decoder turns the node tree into a Topology, reporting shape problems
// (unknown keys, wrong types, unparsable values). Cross-field checks are
// left to Validate.
type decoder struct {
	*problems
	src *sourceInfo
}

// fields checks that n is a mapping whose keys are all in known, reports
// unknown, reserved and repeated keys, records each key's line under
// path.key, and returns the value nodes by key.
func (d *decoder) fields(n *yaml.Node, path string, known, reserved []string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		d.add(n.Line, path, ErrInvalid, "want a mapping of %s, not %s", strings.Join(known, ", "), describe(n))
		d.src.broken[path] = true
		return nil
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	firstLine := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.add(k.Line, path, ErrInvalid, "keys must be plain names, not %s", describe(k))
			continue
		}
		name := k.Value
		field := join(path, name)
		switch {
		case firstLine[name] != 0:
			d.add(k.Line, field, ErrDuplicate, "key given twice (first at line %d)", firstLine[name])
			continue
		case contains(reserved, name):
			d.add(k.Line, field, ErrNotSupported, "%q is reserved for a later version and not supported yet", name)
		case !contains(known, name):
			d.add(k.Line, field, ErrUnknownKey, "unknown key %q (known keys: %s)", name, strings.Join(known, ", "))
		default:
			out[name] = v
			d.src.lines[field] = k.Line
		}
		firstLine[name] = k.Line
	}
	return out
}

// scalar returns the text of a single value, reporting lists, mappings,
// aliases and empty values.
func (d *decoder) scalar(n *yaml.Node, field string) (string, bool) {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return n.Value, true
	}
	if n.Kind == yaml.AliasNode {
		d.add(n.Line, field, ErrInvalid, "aliases are not supported")
	} else if n.Kind == yaml.ScalarNode {
		d.add(n.Line, field, ErrMissing, "empty value")
	} else {
		d.add(n.Line, field, ErrInvalid, "want a single value, not %s", describe(n))
	}
	d.src.broken[field] = true
	return "", false
}

// sequence returns the items of a list.
func (d *decoder) sequence(n *yaml.Node, field string) []*yaml.Node {
	if n.Kind == yaml.SequenceNode {
		return n.Content
	}
	if n.Kind == yaml.AliasNode {
		d.add(n.Line, field, ErrInvalid, "aliases are not supported")
	} else {
		d.add(n.Line, field, ErrInvalid, "want a list, not %s", describe(n))
	}
	d.src.broken[field] = true
	return nil
}

// fail reports a value that ParseRate or ParseSize rejected.
func (d *decoder) fail(n *yaml.Node, field string, err error) {
	sentinel := ErrInvalid
	if errors.Is(err, ErrUnit) {
		sentinel = ErrUnit
	}
	d.add(n.Line, field, sentinel, "%v", err)
	d.src.broken[field] = true
}

func (d *decoder) addr(n *yaml.Node, field string) netip.Addr {
	s, ok := d.scalar(n, field)
	if !ok {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		d.add(n.Line, field, ErrInvalid, "%q is not an IPv4 address", s)
		d.src.broken[field] = true
		return netip.Addr{}
	}
	return a
}

func (d *decoder) integer(n *yaml.Node, field string) int {
	s, ok := d.scalar(n, field)
	if !ok {
		return 0
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 || v > MaxDisplaySide {
		d.add(n.Line, field, ErrInvalid, "%q: want a whole number from 1 to %d", s, MaxDisplaySide)
		d.src.broken[field] = true
		return 0
	}
	return v
}

func (d *decoder) topology(root *yaml.Node) *Topology {
	t := &Topology{src: d.src}
	d.src.lines[""] = root.Line
	f := d.fields(root, "", []string{"name", "subnet", "host_access", "hosts", "segments", "nodes"}, reservedTopKeys)
	if v := f["name"]; v != nil {
		t.Name, _ = d.scalar(v, "name")
	}
	if v := f["subnet"]; v != nil {
		if s, ok := d.scalar(v, "subnet"); ok {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				d.add(v.Line, "subnet", ErrInvalid, "%q is not a CIDR prefix such as 10.77.0.0/24", s)
				d.src.broken["subnet"] = true
			} else {
				t.Subnet = p
			}
		}
	}
	if v := f["host_access"]; v != nil {
		t.HostAccess = &HostAccess{}
		hf := d.fields(v, "host_access", []string{"ip", "segment"}, nil)
		if v := hf["ip"]; v != nil {
			t.HostAccess.IP = d.addr(v, "host_access.ip")
		}
		if v := hf["segment"]; v != nil {
			t.HostAccess.Segment, _ = d.scalar(v, "host_access.segment")
		}
	}
	if v := f["hosts"]; v != nil {
		for i, hn := range d.sequence(v, "hosts") {
			path := fmt.Sprintf("hosts[%d]", i)
			d.src.lines[path] = hn.Line
			h, _ := d.scalar(hn, path)
			t.Hosts = append(t.Hosts, h)
		}
	}
	if v := f["segments"]; v != nil {
		for i, sn := range d.sequence(v, "segments") {
			path := fmt.Sprintf("segments[%d]", i)
			d.src.lines[path] = sn.Line
			var s Segment
			sf := d.fields(sn, path, []string{"name"}, nil)
			if v := sf["name"]; v != nil {
				s.Name, _ = d.scalar(v, path+".name")
			}
			t.Segments = append(t.Segments, s)
		}
	}
	if v := f["nodes"]; v != nil {
		for i, nn := range d.sequence(v, "nodes") {
			t.Nodes = append(t.Nodes, d.node(nn, i))
		}
	}
	return t
}

func (d *decoder) node(nn *yaml.Node, i int) Node {
	path := fmt.Sprintf("nodes[%d]", i)
	d.src.lines[path] = nn.Line
	n := Node{Line: nn.Line}
	f := d.fields(nn, path, []string{"name", "kind", "host", "ip", "mac", "segment", "link", "disk", "display", "params"}, reservedNodeKeys)
	if v := f["name"]; v != nil {
		n.Name, _ = d.scalar(v, path+".name")
	}
	if v := f["kind"]; v != nil {
		k, _ := d.scalar(v, path+".kind")
		n.Kind = Kind(k)
	}
	if v := f["host"]; v != nil {
		n.Host, _ = d.scalar(v, path+".host")
	}
	if v := f["ip"]; v != nil {
		n.IP = d.addr(v, path+".ip")
	}
	if v := f["mac"]; v != nil {
		field := path + ".mac"
		if s, ok := d.scalar(v, field); ok {
			mac, err := net.ParseMAC(s)
			if err != nil || len(mac) != 6 {
				d.add(v.Line, field, ErrInvalid, "%q is not an Ethernet address such as 02:00:00:00:00:10", s)
				d.src.broken[field] = true
			} else {
				n.MAC = mac
			}
		}
	}
	if v := f["segment"]; v != nil {
		n.Segment, _ = d.scalar(v, path+".segment")
	}
	if v := f["link"]; v != nil {
		lf := d.fields(v, path+".link", []string{"rate", "loss", "corrupt", "delay", "seed", "rx"}, reservedLinkKeys)
		if v := lf["rate"]; v != nil {
			field := path + ".link.rate"
			if s, ok := d.scalar(v, field); ok {
				r, err := ParseRate(s)
				if err != nil {
					d.fail(v, field, err)
				}
				n.Link.RateBits = r
			}
		}
		for _, k := range []struct {
			key string
			dst *uint32
		}{{"loss", &n.Link.LossPPM}, {"corrupt", &n.Link.CorruptPPM}} {
			if v := lf[k.key]; v != nil {
				field := path + ".link." + k.key
				if s, ok := d.scalar(v, field); ok {
					r, err := ParsePercent(s)
					if err != nil {
						d.fail(v, field, err)
					}
					*k.dst = r
				}
			}
		}
		if v := lf["delay"]; v != nil {
			field := path + ".link.delay"
			if s, ok := d.scalar(v, field); ok {
				r, err := ParseDelay(s)
				if err != nil {
					d.fail(v, field, err)
				}
				n.Link.Delay = r
			}
		}
		if v := lf["seed"]; v != nil {
			field := path + ".link.seed"
			if s, ok := d.scalar(v, field); ok {
				r, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					d.fail(v, field, badValue(ErrInvalid, "seed %q: want a whole number from 0 to %d", s, uint64(1<<64-1)))
				}
				n.Link.Seed = r
			}
		}
		if v := lf["rx"]; v != nil {
			field := path + ".link.rx"
			if s, ok := d.scalar(v, field); ok {
				if !slices.Contains(LinkRxModes, s) {
					d.fail(v, field, badValue(ErrInvalid, "rx %q: want one of %s", s, strings.Join(LinkRxModes, ", ")))
				}
				n.Link.Rx = s
			}
		}
	}
	if v := f["disk"]; v != nil {
		n.Disk = &DiskParams{}
		df := d.fields(v, path+".disk", []string{"size", "access"}, nil)
		if v := df["size"]; v != nil {
			field := path + ".disk.size"
			if s, ok := d.scalar(v, field); ok {
				sz, err := ParseSize(s)
				if err != nil {
					d.fail(v, field, err)
				}
				n.Disk.SizeBytes = sz
			}
		}
		if v := df["access"]; v != nil {
			n.Disk.Access, _ = d.scalar(v, path+".disk.access")
		}
	}
	if v := f["display"]; v != nil {
		n.Display = &DisplayParams{}
		df := d.fields(v, path+".display", []string{"width", "height", "format"}, nil)
		if v := df["width"]; v != nil {
			n.Display.Width = d.integer(v, path+".display.width")
		}
		if v := df["height"]; v != nil {
			n.Display.Height = d.integer(v, path+".display.height")
		}
		if v := df["format"]; v != nil {
			n.Display.Format, _ = d.scalar(v, path+".display.format")
		}
	}
	if v := f["params"]; v != nil {
		n.Params = d.params(v, path+".params")
	}
	return n
}

// params reads a node's params block: a mapping of names to single
// values, which the node's kind checks (Validate).
func (d *decoder) params(n *yaml.Node, path string) map[string]string {
	if n.Kind != yaml.MappingNode {
		d.add(n.Line, path, ErrInvalid, "want a mapping of parameter names to values, not %s", describe(n))
		d.src.broken[path] = true
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.add(k.Line, path, ErrInvalid, "keys must be plain names, not %s", describe(k))
			continue
		}
		field := join(path, k.Value)
		if _, dup := out[k.Value]; dup {
			d.add(k.Line, field, ErrDuplicate, "key given twice (first at line %d)", d.src.lines[field])
			continue
		}
		d.src.lines[field] = k.Line
		if s, ok := d.scalar(v, field); ok {
			out[k.Value] = s
		} else {
			out[k.Value] = ""
		}
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
