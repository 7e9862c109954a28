package testbed

import (
	"context"
	"fmt"
	"io"

	"github.com/netstation/netstation/fabric/capture"
)

// CaptureFabric names the whole fabric as a capture target.
const CaptureFabric = "fabric"

// Capture writes what crosses the named testbed's fabric to w as a pcap
// stream: the fabric-side port of one node (both directions), or with
// target CaptureFabric every frame entering the fabric once. It stops when
// ctx ends (a normal stop) or opts.Count frames were written. It runs in
// the calling process, which must be allowed into the fabric's namespace
// (root).
func Capture(ctx context.Context, testbed, target string, w io.Writer, opts capture.Options) (capture.Stats, error) {
	plan, err := LoadPlan(Dir(testbed))
	if err != nil {
		return capture.Stats{}, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	port := ""
	if target != CaptureFabric {
		n, err := plan.Node(target)
		if err != nil {
			return capture.Stats{}, err
		}
		port = n.Port
	}
	if opts.Filter != "" {
		if _, err := capture.ParseFilter(opts.Filter); err != nil {
			return capture.Stats{}, err
		}
	}
	return capture.Run(ctx, plan.FabricNS, port, w, opts)
}
