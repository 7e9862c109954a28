package spec

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocsTopology keeps docs/topology.md honest: its YAML examples parse,
// and it names every key the parser knows.
func TestDocsTopology(t *testing.T) {
	doc, err := os.ReadFile("../../docs/topology.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(doc, -1)
	if len(blocks) < 2 {
		t.Fatalf("found %d yaml blocks", len(blocks))
	}
	for i, b := range blocks {
		if _, err := Parse(fmt.Sprintf("topology.md block %d", i), b[1]); err != nil {
			t.Errorf("example %d does not parse: %v", i, err)
		}
	}
	var uncommented []string
	for _, l := range strings.SplitAfter(string(defaultYAML), "\n") {
		if !strings.HasPrefix(l, "#") {
			uncommented = append(uncommented, l)
		}
	}
	if got, want := string(blocks[len(blocks)-1][1]), strings.Join(uncommented, ""); got != want {
		t.Errorf("the default testbed in the docs differs from default.yaml:\n%s\nwant:\n%s", got, want)
	}
	for _, key := range []string{
		"`name`", "`subnet`", "`host_access`", "`host_access.ip`", "`host_access.segment`", "`segments`",
		"`segments[].name`", "`hosts`", "`nodes[].host`", "`nodes`", "`nodes[].name`", "`nodes[].kind`", "`nodes[].ip`", "`nodes[].mac`",
		"`nodes[].segment`", "`nodes[].link.rate`", "`nodes[].link.loss`", "`nodes[].link.corrupt`", "`nodes[].link.delay`", "`nodes[].link.seed`", "`nodes[].disk.size`", "`nodes[].display.width`",
		"`nodes[].display.height`", "`nodes[].display.format`", "`nodes[].params`",
	} {
		if !strings.Contains(string(doc), key) {
			t.Errorf("docs/topology.md does not describe %s", key)
		}
	}
	for _, k := range append(append(append([]string{}, reservedTopKeys...), reservedNodeKeys...), reservedLinkKeys...) {
		if !strings.Contains(string(doc), "`"+k+"`") && !strings.Contains(string(doc), "."+k+"`") {
			t.Errorf("docs/topology.md does not list reserved key %s", k)
		}
	}
}

func bigTopology(n int) []byte {
	var b strings.Builder
	b.WriteString("name: big\nsubnet: 10.77.0.0/16\nhost_access: {}\nnodes:\n")
	kinds := []string{"cpu", "disk", "display"}
	for i := range n {
		fmt.Fprintf(&b, "  - name: n%d\n    kind: %s\n    link: {rate: 100mbit}\n", i, kinds[i%3])
	}
	return []byte(b.String())
}

// BenchmarkParse100 parses a 100-node file, what `up` does once.
func BenchmarkParse100(b *testing.B) {
	data := bigTopology(100)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse("big.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResolve1000 resolves a 1000-node topology.
func BenchmarkResolve1000(b *testing.B) {
	top, err := Parse("big.yaml", bigTopology(1000))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c := top.Clone()
		if err := c.Resolve(netip.Prefix{}); err != nil {
			b.Fatal(err)
		}
	}
}
