package testbed

import (
	"slices"
	"testing"

	"github.com/netstation/netstation/peripherals/node"
	"github.com/netstation/netstation/testbed/spec"
)

// TestLinkRxModes: a topology's link.rx takes exactly the receive paths a
// peripheral knows (spec cannot import the peripheral's package), and an
// unset one is reported as the path the peripheral runs.
func TestLinkRxModes(t *testing.T) {
	if !slices.Equal(spec.LinkRxModes, node.LinkRxModes) {
		t.Fatalf("spec.LinkRxModes %v, node.LinkRxModes %v", spec.LinkRxModes, node.LinkRxModes)
	}
	t.Setenv(node.LinkRxEnv, "")
	if got := node.LinkRx(""); got != spec.LinkRxBatch {
		t.Errorf("default receive path %q, want %q", got, spec.LinkRxBatch)
	}
	t.Setenv(node.LinkRxEnv, spec.LinkRxFrameRing)
	if got := node.LinkRx(""); got != spec.LinkRxFrameRing {
		t.Errorf("with $%s=framering: %q", node.LinkRxEnv, got)
	}
	if got := node.LinkRx(spec.LinkRxBatch); got != spec.LinkRxBatch {
		t.Errorf("a topology's link.rx loses to the environment: %q", got)
	}
}
