package spec

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestGraphGolden draws the resolved example files and compares with
// testdata/*.dot and *.mmd; run with -update after a deliberate change.
func TestGraphGolden(t *testing.T) {
	for _, name := range []string{"lab", "twoseg", "default"} {
		t.Run(name, func(t *testing.T) {
			var top *Topology
			if name == "default" {
				top = Default()
			} else {
				var err error
				if top, err = Load(filepath.Join("testdata", name+".yaml")); err != nil {
					t.Fatal(err)
				}
			}
			if err := top.Resolve(netip.MustParsePrefix("10.77.0.0/24")); err != nil {
				t.Fatal(err)
			}
			for ext, got := range map[string]string{".dot": top.DOT(), ".mmd": top.Mermaid()} {
				golden := filepath.Join("testdata", name+ext)
				if *update {
					if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update to create it)", err)
				}
				if got != string(want) {
					t.Errorf("%s differs from %s:\n%s", ext, golden, got)
				}
			}
		})
	}
}

// TestGraphContent checks what the drawings must show, independent of the
// golden files.
func TestGraphContent(t *testing.T) {
	top, err := Load("testdata/twoseg.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := top.Resolve(netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	dot, mmd := top.DOT(), top.Mermaid()
	for _, want := range []string{
		`"segment:front" [shape=box`, `"segment:back" [shape=box`,
		`"node:cpu0" -- "segment:front" [label="100mbit"]`,
		`"node:cpu1" [shape=box3d, label="cpu1\ncpu\n192.168.40.10"]`,
		`"node:disk0" [shape=cylinder, label="disk0\ndisk\n192.168.40.12\n64MB"]`,
		`"host" -- "segment:front"`,
	} {
		if !strings.Contains(dot, want) {
			t.Errorf("DOT lacks %s:\n%s", want, dot)
		}
	}
	for _, want := range []string{
		`s0{{"front<br/>switch"}}`, `n0 ---|"100mbit"| s0`, `n2[("disk0<br/>disk<br/>192.168.40.12<br/>64MB")]`,
		`n3[/"screen<br/>display<br/>192.168.40.13<br/>640x720 rgba"/]`, "host --- s0",
	} {
		if !strings.Contains(mmd, want) {
			t.Errorf("Mermaid lacks %s:\n%s", want, mmd)
		}
	}
	if strings.Count(dot, "{") != strings.Count(dot, "}") {
		t.Error("unbalanced braces in DOT")
	}
}

// TestGraphEscapes draws a topology built in code with hostile names: the
// output must stay one well-formed statement per line.
func TestGraphEscapes(t *testing.T) {
	top := &Topology{Name: `a"b`, Nodes: []Node{{Name: "x\"\n<y>#", Kind: KindCPU, Segment: "s\\"}}}
	dot := top.DOT()
	if !strings.Contains(dot, `"node:x\"\n<y>#"`) || !strings.Contains(dot, `graph "a\"b"`) {
		t.Errorf("DOT escaping:\n%s", dot)
	}
	mmd := top.Mermaid()
	if !strings.Contains(mmd, `x#quot;<br/>#lt;y#gt;#35;`) {
		t.Errorf("Mermaid escaping:\n%s", mmd)
	}
	if strings.Contains(mmd, `"x"`) {
		t.Error("raw quote in Mermaid label")
	}
}
