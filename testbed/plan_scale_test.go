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
