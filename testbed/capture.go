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
	ns, port, err := CapturePoint(testbed, target)
	if err != nil {
		return capture.Stats{}, err
	}
	if opts.Filter != "" {
		if _, err := capture.ParseFilter(opts.Filter); err != nil {
			return capture.Stats{}, err
		}
	}
	return capture.Run(ctx, ns, port, w, opts)
}

// CapturePoint resolves a capture target of the named testbed (a node, or
// CaptureFabric) to the fabric's namespace and the node's fabric-side port
// ("" for the whole fabric).
func CapturePoint(testbed, target string) (ns, port string, err error) {
	plan, err := LoadPlan(Dir(testbed))
	if err != nil {
		return "", "", fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	if target != CaptureFabric {
		n, err := plan.Node(target)
		if err != nil {
			return "", "", err
		}
		port = n.Port
	}
	return plan.FabricNS, port, nil
}
