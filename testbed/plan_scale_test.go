package testbed

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/netstation/netstation/testbed/spec"
)

// TestPlanBridgePorts: 1,023 ports on a segment plan; one more is refused
// with ErrTooManyPorts before anything exists.
func TestPlanBridgePorts(t *testing.T) {
	for _, tc := range []struct {
		nodes      int
		hostAccess bool
		ok         bool
	}{{1023, false, true}, {1022, true, true}, {1024, false, false}, {1023, true, false}} {
		var sb strings.Builder
		sb.WriteString("name: ports\nnodes:\n")
		for i := range tc.nodes {
			fmt.Fprintf(&sb, "  - {name: n%d, kind: cpu}\n", i)
		}
		if tc.hostAccess {
			sb.WriteString("host_access: {}\n")
		}
		top, err := spec.Parse("ports.yaml", []byte(sb.String()))
		if err != nil {
			t.Fatal(err)
		}
		subnet, err := spec.PickSubnetFor(nil, tc.nodes+1)
		if err != nil {
			t.Fatal(err)
		}
		if err := top.Resolve(subnet); err != nil {
			t.Fatal(err)
		}
		_, err = NewPlan(top)
		if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrTooManyPorts) {
			t.Errorf("%d nodes, host access %v: %v", tc.nodes, tc.hostAccess, err)
		}
	}
}

// TestSeedsOf: small testbeds join the first three nodes; large ones
// spread their joins so that no seed serves many more than 2n/k.
func TestSeedsOf(t *testing.T) {
	nodes := func(n int) []NodePlan {
		out := make([]NodePlan, n)
		for i := range out {
			out[i].Name = fmt.Sprintf("n%d", i)
		}
		return out
	}
	small := nodes(10)
	if got := seedsOf(small, &small[7]); fmt.Sprint(got) != "[0 1 2]" {
		t.Errorf("10 nodes: seeds %v, want [0 1 2]", got)
	}
	big := nodes(1000)
	load := map[int]int{}
	for i := range big {
		s := seedsOf(big, &big[i])
		if len(s) != 2 {
			t.Fatalf("node %d: seeds %v", i, s)
		}
		for _, j := range s {
			if j >= 18 {
				t.Fatalf("node %d: seed %d is not among the first 18", i, j)
			}
			load[j]++
		}
	}
	for j, l := range load {
		if l > 2*1000/18+20 {
			t.Errorf("seed %d serves %d joins, want about %d", j, l, 2*1000/18)
		}
	}
}
