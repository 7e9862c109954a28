package spec

import (
	"strings"
	"testing"
)

// TestWarningsSegments: a topology whose nodes sit on several segments
// gets a warning naming who can never reach whom; one segment gets none.
func TestWarningsSegments(t *testing.T) {
	two, err := Parse("two.yaml", []byte(`name: lab
segments: [{name: front}, {name: back}]
nodes:
  - {name: cpu0, kind: cpu, segment: front}
  - {name: disk0, kind: disk, segment: front}
  - {name: disk1, kind: disk, segment: back}
`))
	if err != nil {
		t.Fatal(err)
	}
	w := two.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "front (cpu0, disk0); back (disk1)") {
		t.Errorf("warnings: %q", w)
	}
	one, err := Parse("one.yaml", []byte("name: lab\nnodes:\n  - {name: cpu0, kind: cpu}\n  - {name: disk0, kind: disk}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if w := one.Warnings(); len(w) != 0 {
		t.Errorf("one segment: %q", w)
	}
}
