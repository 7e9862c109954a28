package spec

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseGood(t *testing.T) {
	top, err := Load("testdata/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if top.Name != "lab" || top.Subnet != netip.MustParsePrefix("10.77.0.0/24") || top.Source != "testdata/lab.yaml" {
		t.Errorf("top level = %q %v %q", top.Name, top.Subnet, top.Source)
	}
	if top.HostAccess == nil || top.HostAccess.IP != netip.MustParseAddr("10.77.0.254") {
		t.Errorf("host access = %+v", top.HostAccess)
	}
	if len(top.Segments) != 1 || top.Segments[0].Name != "lan" {
		t.Errorf("segments = %+v", top.Segments)
	}
	if len(top.Nodes) != 3 {
		t.Fatalf("got %d nodes", len(top.Nodes))
	}
	cpu, disk, disp := top.Nodes[0], top.Nodes[1], top.Nodes[2]
	if cpu.Name != "cpu0" || cpu.Kind != KindCPU || cpu.IP != netip.MustParseAddr("10.77.0.10") ||
		cpu.MAC.String() != "02:00:00:00:00:10" || cpu.Segment != "lan" || cpu.Link.RateBits != 1e9 || cpu.Line != 9 {
		t.Errorf("cpu0 = %+v", cpu)
	}
	if disk.Kind != KindDisk || disk.Disk == nil || disk.Disk.SizeBytes != 1<<30 || disk.Line != 15 || disk.IP.IsValid() || disk.MAC != nil {
		t.Errorf("disk0 = %+v", disk)
	}
	if disp.Kind != KindDisplay || disp.Display == nil || *disp.Display != (DisplayParams{1280, 720, "rgba"}) {
		t.Errorf("display0 = %+v", disp)
	}
	if top.Node("disk0") != &top.Nodes[1] || top.Node("nope") != nil {
		t.Error("Node lookup")
	}
}

func TestParseTwoSegments(t *testing.T) {
	top, err := Load("testdata/twoseg.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := top.Nodes[0].Link.RateBits; got != 100e6 {
		t.Errorf("rate = %d", got)
	}
	if got := top.Nodes[2].Disk.SizeBytes; got != 64e6 {
		t.Errorf("size = %d", got)
	}
	if got := *top.Nodes[3].Display; got != (DisplayParams{Width: 640}) {
		t.Errorf("display = %+v", got)
	}
}

func TestDefault(t *testing.T) {
	a, b := Default(), Default()
	if a == b {
		t.Fatal("Default returned the same pointer twice")
	}
	if a.Name != "default" || len(a.Nodes) != 3 {
		t.Fatalf("default = %+v", a)
	}
	want := []struct {
		name string
		kind Kind
	}{{"cpu0", KindCPU}, {"disk0", KindDisk}, {"display0", KindDisplay}}
	for i, w := range want {
		if a.Nodes[i].Name != w.name || a.Nodes[i].Kind != w.kind {
			t.Errorf("node %d = %s %s, want %s %s", i, a.Nodes[i].Name, a.Nodes[i].Kind, w.name, w.kind)
		}
	}
	a.Nodes[0].Name = "changed"
	if b.Nodes[0].Name != "cpu0" {
		t.Error("copies share nodes")
	}
	if err := b.Resolve(netip.MustParsePrefix("10.77.3.0/24")); err != nil {
		t.Fatal(err)
	}
	if len(b.Segments) != 1 || b.Segments[0].Name != DefaultSegment {
		t.Errorf("segments = %+v", b.Segments)
	}
}

// header is prepended to the broken cases that are about nodes.
const header = "name: lab\nsubnet: 10.77.0.0/24\nnodes:\n" // nodes start on line 4

func TestParseBroken(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		line  int
		field string
		err   error
		text  string // a piece of the message
	}{
		{"unknown top key", "name: lab\nsubnett: 10.0.0.0/24\nnodes: [{name: a, kind: cpu}]\n", 2, "subnett", ErrUnknownKey, `unknown key "subnett"`},
		{"unknown node key", header + "  - name: a\n    kind: cpu\n    colour: red\n", 6, "nodes[0].colour", ErrUnknownKey, "known keys: name, kind"},
		{"unknown link key", header + "  - name: a\n    kind: cpu\n    link: {rate: 1gbit, burst: 10}\n", 6, "nodes[0].link.burst", ErrUnknownKey, "burst"},
		{"reserved link key", header + "  - name: a\n    kind: cpu\n    link:\n      jitter: 1ms\n", 7, "nodes[0].link.jitter", ErrNotSupported, "not supported yet"},
		{"loss without %", header + "  - name: a\n    kind: cpu\n    link:\n      loss: 1\n", 7, "nodes[0].link.loss", ErrUnit, "want a number and %"},
		{"loss above 100%", header + "  - name: a\n    kind: cpu\n    link:\n      loss: 101%\n", 7, "nodes[0].link.loss", ErrInvalid, "too large"},
		{"corrupt too fine", header + "  - name: a\n    kind: cpu\n    link:\n      corrupt: 0.00001%\n", 7, "nodes[0].link.corrupt", ErrInvalid, "whole number"},
		{"bad delay", header + "  - name: a\n    kind: cpu\n    link:\n      delay: 5\n", 7, "nodes[0].link.delay", ErrInvalid, "duration"},
		{"negative delay", header + "  - name: a\n    kind: cpu\n    link:\n      delay: -5ms\n", 7, "nodes[0].link.delay", ErrInvalid, "from 0"},
		{"bad rx", header + "  - name: a\n    kind: cpu\n    link:\n      rx: xdp\n", 7, "nodes[0].link.rx", ErrInvalid, "want one of recvmmsg, framering"},
		{"bad seed", header + "  - name: a\n    kind: cpu\n    link:\n      seed: -1\n", 7, "nodes[0].link.seed", ErrInvalid, "whole number"},
		{"reserved node key", header + "  - name: a\n    kind: cpu\n    capabilities: x\n", 6, "nodes[0].capabilities", ErrNotSupported, "later version"},
		{"repeated key", header + "  - name: a\n    kind: cpu\n    kind: disk\n", 6, "nodes[0].kind", ErrDuplicate, "first at line 5"},
		{"missing testbed name", "subnet: 10.77.0.0/24\nnodes: [{name: a, kind: cpu}]\n", 1, "name", ErrMissing, "needs a name"},
		{"bad testbed name", "name: Lab-1\nnodes: [{name: a, kind: cpu}]\n", 1, "name", ErrInvalid, `"Lab-1"`},
		{"long testbed name", "name: abcdefghijk\nnodes: [{name: a, kind: cpu}]\n", 1, "name", ErrInvalid, "1-10"},
		{"empty testbed name", "name:\nnodes: [{name: a, kind: cpu}]\n", 1, "name", ErrMissing, "empty value"},
		{"missing node name", header + "  - kind: cpu\n", 4, "nodes[0].name", ErrMissing, "needs a name"},
		{"bad node name", header + "  - name: CPU_0\n    kind: cpu\n", 4, "nodes[0].name", ErrInvalid, `"CPU_0"`},
		{"duplicate node name", header + "  - name: a\n    kind: cpu\n  - name: b\n    kind: cpu\n  - name: a\n    kind: disk\n", 8, "nodes[2].name", ErrDuplicate, `"a" is used twice (first at line 4)`},
		{"reserved node name", header + "  - name: fabric\n    kind: cpu\n", 4, "nodes[0].name", ErrInvalid, "reserved"},
		{"missing kind", header + "  - name: a\n", 4, "nodes[0].kind", ErrMissing, "needs a kind"},
		{"unknown kind", header + "  - name: a\n    kind: gpu\n", 5, "nodes[0].kind", ErrUnknownKind, `unknown kind "gpu" (want cpu, disk or display)`},
		{"bad CIDR", "name: lab\nsubnet: 10.77.0.0/33\nnodes: [{name: a, kind: cpu}]\n", 2, "subnet", ErrInvalid, "not a CIDR prefix"},
		{"CIDR not an address", "name: lab\nsubnet: lan\nnodes: [{name: a, kind: cpu}]\n", 2, "subnet", ErrInvalid, "not a CIDR prefix"},
		{"CIDR host bits", "name: lab\nsubnet: 10.77.0.1/24\nnodes: [{name: a, kind: cpu}]\n", 2, "subnet", ErrInvalid, "did you mean 10.77.0.0/24"},
		{"CIDR too small", "name: lab\nsubnet: 10.77.0.0/31\nnodes: [{name: a, kind: cpu}]\n", 2, "subnet", ErrInvalid, "/8 to /30"},
		{"IPv6 subnet", "name: lab\nsubnet: fd00::/64\nnodes: [{name: a, kind: cpu}]\n", 2, "subnet", ErrInvalid, "not an IPv4 prefix"},
		{"address outside subnet", header + "  - name: a\n    kind: cpu\n    ip: 10.78.0.5\n", 6, "nodes[0].ip", ErrAddress, "outside the subnet 10.77.0.0/24"},
		{"network address", header + "  - name: a\n    kind: cpu\n    ip: 10.77.0.0\n", 6, "nodes[0].ip", ErrAddress, "network address"},
		{"broadcast address", header + "  - name: a\n    kind: cpu\n    ip: 10.77.0.255\n", 6, "nodes[0].ip", ErrAddress, "broadcast address"},
		{"duplicate address", header + "  - name: a\n    kind: cpu\n    ip: 10.77.0.7\n  - name: b\n    kind: cpu\n    ip: 10.77.0.7\n", 9, "nodes[1].ip", ErrDuplicate, "already used (line 6)"},
		{"address clashes with host access", "name: lab\nsubnet: 10.77.0.0/24\nhost_access: {ip: 10.77.0.7}\nnodes:\n  - name: a\n    kind: cpu\n    ip: 10.77.0.7\n", 7, "nodes[0].ip", ErrDuplicate, "line 3"},
		{"bad address", header + "  - name: a\n    kind: cpu\n    ip: 10.77.0.300\n", 6, "nodes[0].ip", ErrInvalid, "not an IPv4 address"},
		{"IPv6 address", header + "  - name: a\n    kind: cpu\n    ip: fd00::1\n", 6, "nodes[0].ip", ErrInvalid, "not an IPv4 address"},
		{"address without subnet", "name: lab\nnodes:\n  - name: a\n    kind: cpu\n    ip: 10.77.0.5\n", 5, "nodes[0].ip", ErrMissing, "explicit subnet"},
		{"host address outside", "name: lab\nsubnet: 10.77.0.0/24\nhost_access:\n  ip: 10.0.0.1\nnodes: [{name: a, kind: cpu}]\n", 4, "host_access.ip", ErrAddress, "outside"},
		{"multicast MAC", header + "  - name: a\n    kind: cpu\n    mac: 01:00:5e:00:00:01\n", 6, "nodes[0].mac", ErrInvalid, "multicast"},
		{"zero MAC", header + "  - name: a\n    kind: cpu\n    mac: 00:00:00:00:00:00\n", 6, "nodes[0].mac", ErrInvalid, "zero address"},
		{"malformed MAC", header + "  - name: a\n    kind: cpu\n    mac: 02:00:00:00:00\n", 6, "nodes[0].mac", ErrInvalid, "not an Ethernet address"},
		{"long MAC", header + "  - name: a\n    kind: cpu\n    mac: 02:00:00:00:00:00:00:01\n", 6, "nodes[0].mac", ErrInvalid, "not an Ethernet address"},
		{"duplicate MAC", header + "  - name: a\n    kind: cpu\n    mac: 02:00:00:00:00:01\n  - name: b\n    kind: cpu\n    mac: 02:00:00:00:00:01\n", 9, "nodes[1].mac", ErrDuplicate, "line 6"},
		{"unknown segment", header + "  - name: a\n    kind: cpu\n    segment: wan\n", 6, "nodes[0].segment", ErrUnknownSegment, `unknown segment "wan"`},
		{"unknown declared segment", "name: lab\nsegments: [{name: x}, {name: y}]\nnodes:\n  - name: a\n    kind: cpu\n    segment: z\n", 6, "nodes[0].segment", ErrUnknownSegment, `"z"`},
		{"segment needed", "name: lab\nsegments: [{name: x}, {name: y}]\nnodes:\n  - name: a\n    kind: cpu\n", 4, "nodes[0].segment", ErrMissing, "2 segments"},
		{"duplicate segment", "name: lab\nsegments:\n  - name: x\n  - name: x\nnodes: [{name: a, kind: cpu, segment: x}]\n", 4, "segments[1].name", ErrDuplicate, "first at line 3"},
		{"bad segment name", "name: lab\nsegments:\n  - name: X\nnodes: [{name: a, kind: cpu}]\n", 3, "segments[0].name", ErrInvalid, `"X"`},
		{"host segment unknown", "name: lab\nhost_access: {segment: wan}\nnodes: [{name: a, kind: cpu}]\n", 2, "host_access.segment", ErrUnknownSegment, "wan"},
		{"bad rate unit", header + "  - name: a\n    kind: cpu\n    link: {rate: 1gbps}\n", 6, "nodes[0].link.rate", ErrUnit, "bytes per second"},
		{"bad rate number", header + "  - name: a\n    kind: cpu\n    link: {rate: fast}\n", 6, "nodes[0].link.rate", ErrInvalid, "want a number"},
		{"tiny rate", header + "  - name: a\n    kind: cpu\n    link: {rate: 7bit}\n", 6, "nodes[0].link.rate", ErrInvalid, "below 8bit"},
		{"bad size unit", header + "  - name: a\n    kind: disk\n    disk:\n      size: 1gb\n", 7, "nodes[0].disk.size", ErrUnit, "did you mean GB"},
		{"zero size", header + "  - name: a\n    kind: disk\n    disk: {size: 0}\n", 6, "nodes[0].disk.size", ErrInvalid, "positive"},
		{"fractional bytes", header + "  - name: a\n    kind: disk\n    disk: {size: 1.5B}\n", 6, "nodes[0].disk.size", ErrInvalid, "whole number"},
		{"disk on cpu", header + "  - name: a\n    kind: cpu\n    disk: {size: 1GiB}\n", 6, "nodes[0].disk", ErrWrongKind, "belongs to kind disk"},
		{"display on disk", header + "  - name: a\n    kind: disk\n    display: {width: 10}\n", 6, "nodes[0].display", ErrWrongKind, "belongs to kind display"},
		{"display too wide", header + "  - name: a\n    kind: display\n    display:\n      width: 100000\n", 7, "nodes[0].display.width", ErrInvalid, "1 to 8192"},
		{"display width not a number", header + "  - name: a\n    kind: display\n    display: {width: wide}\n", 6, "nodes[0].display.width", ErrInvalid, "whole number"},
		{"display format", header + "  - name: a\n    kind: display\n    display:\n      format: yuv\n", 7, "nodes[0].display.format", ErrInvalid, "unknown pixel format"},
		{"too many nodes", "name: lab\nsubnet: 10.77.0.0/30\nhost_access: {}\nnodes:\n  - {name: a, kind: cpu}\n  - {name: b, kind: cpu}\n", 4, "nodes", ErrSubnetFull, "3 addresses needed but 10.77.0.0/30 has only 2"},
		{"empty node list", "name: lab\nnodes: []\n", 2, "nodes", ErrNoNodes, "at least one node"},
		{"no nodes key", "name: lab\n", 1, "nodes", ErrNoNodes, "at least one node"},
		{"nodes not a list", "name: lab\nnodes:\n  a: {kind: cpu}\n", 3, "nodes", ErrInvalid, "want a list, not a mapping"},
		{"node not a mapping", header + "  - cpu0\n", 4, "nodes[0]", ErrInvalid, `not "cpu0"`},
		{"name is a list", "name: [a, b]\nnodes: [{name: a, kind: cpu}]\n", 1, "name", ErrInvalid, "not a list"},
		{"alias", "name: lab\nnodes:\n  - &n {name: a, kind: cpu}\n  - name: *n\n    kind: cpu\n", 4, "nodes[1].name", ErrInvalid, "aliases"},
		// yaml reports the line where the enclosing block starts.
		{"syntax error", "name: lab\nnodes:\n  - name: a\n   kind: cpu\n", 2, "", ErrSyntax, "expected '-' indicator"},
		{"tab indent", "name: lab\nnodes:\n\t- name: a\n", 3, "", ErrSyntax, "cannot start any token"},
		{"two documents", "name: lab\nnodes: [{name: a, kind: cpu}]\n---\nname: other\n", 3, "", ErrSyntax, "more than one"},
		{"not a mapping", "- a\n- b\n", 1, "", ErrInvalid, "top level must be a mapping"},
		{"empty file", "", 0, "", ErrMissing, "empty"},
		{"only a comment", "# nothing\n", 0, "", ErrMissing, "empty"},
		{"complex key", "? [a]\n: b\nname: lab\nnodes: [{name: a, kind: cpu}]\n", 1, "", ErrInvalid, "plain names"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			top, err := Parse("broken.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error; parsed %+v", top)
			}
			if top != nil {
				t.Error("a topology came back with the error")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T is not a *ValidationError: %v", err, err)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("error does not wrap %v:\n%v", tc.err, err)
			}
			var found *Problem
			for _, p := range ve.Problems {
				if errors.Is(p, tc.err) && p.Field == tc.field {
					found = p
					break
				}
			}
			if found == nil {
				t.Fatalf("no problem for field %q wrapping %v in:\n%v", tc.field, tc.err, err)
			}
			if found.Line != tc.line {
				t.Errorf("line = %d, want %d: %v", found.Line, tc.line, found)
			}
			if !strings.Contains(found.Msg, tc.text) {
				t.Errorf("message %q does not contain %q", found.Msg, tc.text)
			}
			prefix := "broken.yaml:"
			if tc.line > 0 {
				prefix += strconv.Itoa(tc.line) + ": "
			}
			if tc.field != "" {
				prefix += tc.field + ": "
			}
			if s := found.Error(); !strings.HasPrefix(s, prefix) {
				t.Errorf("%q does not start with %q", s, prefix)
			}
			// Every problem in a broken-file report names a line.
			for _, p := range ve.Problems {
				if p.Line == 0 && tc.line != 0 {
					t.Errorf("problem without a line: %v", p)
				}
			}
		})
	}
}

// TestParseReportsEverything checks that one pass reports every problem,
// in line order, as errors.Join would print them.
func TestParseReportsEverything(t *testing.T) {
	src := `name: Lab
subnet: 10.77.0.0/24
nodes:
  - name: a
    kind: gpu
    ip: 10.1.0.1
  - name: a
    kind: cpu
    disk: {size: 1GiB}
    link: {rate: 1 furlong}
`
	_, err := Parse("x.yaml", []byte(src))
	want := []string{
		`x.yaml:1: name: "Lab" must be`,
		`x.yaml:5: nodes[0].kind: unknown kind "gpu"`,
		`x.yaml:6: nodes[0].ip: 10.1.0.1 is outside the subnet`,
		`x.yaml:7: nodes[1].name: node name "a" is used twice`,
		`x.yaml:9: nodes[1].disk: a disk block belongs to kind disk`,
		`x.yaml:10: nodes[1].link.rate: rate "1 furlong": unit "furlong"`,
	}
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("problem %d = %q, want prefix %q", i, lines[i], w)
		}
	}
	// The same report twice: the order is stable.
	_, err2 := Parse("x.yaml", []byte(src))
	if err2.Error() != err.Error() {
		t.Errorf("order changed between runs:\n%v\n--\n%v", err, err2)
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	top := &Topology{
		Name:   "code",
		Subnet: netip.MustParsePrefix("10.77.0.0/24"),
		Nodes: []Node{
			{Name: "a", Kind: KindCPU, MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}},
			{Name: "b", Kind: "tape"},
		},
	}
	err := top.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"topology: nodes[0].mac:", `topology: nodes[1].kind: unknown kind "tape"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v\ndoes not contain %q", err, want)
		}
	}
	top.Nodes[0].MAC[0] = 2
	top.Nodes[1].Kind = KindDisk
	if err := top.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", MaxFileSize)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("big file: %v", err)
	}
}
