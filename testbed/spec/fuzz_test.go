package spec

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse. It must never panic or hang;
// it must return either a topology or a *ValidationError whose every
// problem names the source; and whatever it accepts must Resolve, draw and
// validate again.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add(defaultYAML)
	for _, s := range []string{
		"", "name: a\nnodes: [{name: b, kind: cpu}]\n", "- a\n", "a: &x [*x]\n",
		"name: lab\nsubnet: 10.0.0.0/30\nhost_access: {}\nnodes: [{name: a, kind: cpu}, {name: b, kind: disk, disk: {size: 1.5KB}}]\n",
		"name: lab\nnodes:\n  - {name: a, kind: display, display: {width: 8192, height: 1, format: rgb}, link: {rate: 1.5gbit}}\n",
		"name: lab\nsegments: [{name: x}, {name: y}]\nnodes: [{name: a, kind: cpu, segment: y, mac: '02:00:00:00:00:01'}]\n",
		"name: lab\nhosts: [h1, h2]\nnodes: [{name: a, kind: cpu, host: h2}, {name: b, kind: disk}]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		top, err := Parse("fuzz.yaml", data)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("error is not a non-empty *ValidationError: %T %v", err, err)
			}
			for _, p := range ve.Problems {
				if p.Source != "fuzz.yaml" || p.Err == nil || !strings.HasPrefix(p.Error(), "fuzz.yaml") {
					t.Fatalf("badly formed problem %#v", p)
				}
			}
			if top != nil {
				t.Fatal("topology returned with an error")
			}
			return
		}
		if err := top.Validate(); err != nil {
			t.Fatalf("parsed topology does not validate: %v", err)
		}
		_ = top.DOT()
		_ = top.Mermaid()
		if err := top.Resolve(netip.MustParsePrefix("10.77.0.0/24")); err != nil {
			// Only a file without a subnet whose nodes do not fit the
			// default /24 may fail here.
			if top.Subnet.IsValid() || !errors.Is(err, ErrSubnetFull) {
				t.Fatalf("accepted topology does not resolve: %v", err)
			}
			return
		}
		for _, n := range top.Nodes {
			if !n.IP.IsValid() || len(n.MAC) != 6 || n.Segment == "" {
				t.Fatalf("unresolved node %+v", n)
			}
			if len(top.Hosts) > 0 && !slices.Contains(top.Hosts, n.Host) {
				t.Fatalf("node %s placed on %q, not one of %v", n.Name, n.Host, top.Hosts)
			}
		}
		_ = top.DOT()
		_ = top.Mermaid()
	})
}

// FuzzUnits checks that ParseRate and ParseSize never panic and that
// whatever they accept formats back to the same value.
func FuzzUnits(f *testing.F) {
	for _, s := range []string{"1gbit", "1.5mbit", "8", "1GiB", "64MB", "0.5KiB", "1e9", "1..2", "99999999999999999999999TiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if r, err := ParseRate(s); err == nil {
			if back, err := ParseRate(FormatRate(r)); err != nil || back != r {
				t.Fatalf("rate %q = %d formats as %q, parses back to %d, %v", s, r, FormatRate(r), back, err)
			}
		}
		if n, err := ParseSize(s); err == nil {
			if n <= 0 {
				t.Fatalf("size %q = %d", s, n)
			}
			if back, err := ParseSize(FormatSize(n)); err != nil || back != n {
				t.Fatalf("size %q = %d formats as %q, parses back to %d, %v", s, n, FormatSize(n), back, err)
			}
		}
	})
}
