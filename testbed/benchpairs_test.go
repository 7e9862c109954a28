package testbed

import (
	"fmt"
	"testing"
)

func TestBenchPairs(t *testing.T) {
	p := &Plan{Nodes: []NodePlan{{Name: "cpu0"}, {Name: "disk0"}, {Name: "disp0"}}}
	for _, c := range []struct {
		from, to string
		matrix   bool
		want     string
	}{
		{"", "", false, "[[cpu0 disk0]]"},
		{"disk0", "", false, "[[disk0 cpu0]]"},
		{"", "cpu0", false, "[[disk0 cpu0]]"},
		{"cpu0", "", false, "[[cpu0 disk0]]"},
		{"disk0", "disp0", false, "[[disk0 disp0]]"},
		{"", "", true, "[[cpu0 disk0] [cpu0 disp0] [disk0 cpu0] [disk0 disp0] [disp0 cpu0] [disp0 disk0]]"},
	} {
		got, err := p.BenchPairs(c.from, c.to, c.matrix)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != c.want {
			t.Errorf("BenchPairs(%q, %q, %v) = %v, want %s", c.from, c.to, c.matrix, got, c.want)
		}
	}
	if _, err := (&Plan{Nodes: []NodePlan{{Name: "a"}}}).BenchPairs("", "", false); err == nil {
		t.Error("one node: no error")
	}
}
