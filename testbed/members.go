package testbed

import (
	"context"
	"fmt"

	"github.com/netstation/netstation/peripherals"
)

// Members returns node's view of the testbed's membership: the
// peripherals it found by gossip, with their state and metadata. An empty
// node asks the first node of the plan.
func Members(ctx context.Context, testbed, node string) (peripherals.MembersView, error) {
	var v peripherals.MembersView
	dir := Dir(testbed)
	plan, err := LoadPlan(dir)
	if err != nil {
		return v, err
	}
	if node == "" {
		if len(plan.Nodes) == 0 {
			return v, fmt.Errorf("testbed %s has no nodes", testbed)
		}
		node = plan.Nodes[0].Name
	}
	if _, err := plan.Node(node); err != nil {
		return v, err
	}
	err = call(ctx, dir, node, peripherals.OpMembers, nil, &v)
	return v, err
}
