package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/netstation/netstation/cpu"
	"github.com/netstation/netstation/cpu/render"
	"github.com/netstation/netstation/peripherals/display"
	"github.com/netstation/netstation/testbed/spec"
)

// Displays lists the display nodes of a testbed that is up.
func Displays(testbed string) ([]NodePlan, error) {
	plan, err := LoadPlan(Dir(testbed))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	var out []NodePlan
	for _, n := range plan.Nodes {
		if n.Kind == spec.KindDisplay {
			out = append(out, n)
		}
	}
	return out, nil
}

func displayNode(testbed, node string) (string, *NodePlan, error) {
	dir := Dir(testbed)
	plan, err := LoadPlan(dir)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	n, err := plan.Node(node)
	if err != nil {
		return "", nil, err
	}
	if n.Kind != spec.KindDisplay {
		return "", nil, fmt.Errorf("%s is a %s, not a display", n.Name, n.Kind)
	}
	return dir, n, nil
}

// Snapshot returns the PNG of the frame a display shows. With after > 0 it
// waits up to wait for more than after frames to have been presented.
func Snapshot(ctx context.Context, testbed, node string, after uint64, wait time.Duration) ([]byte, display.SnapshotInfo, error) {
	var info display.SnapshotInfo
	dir, n, err := displayNode(testbed, node)
	if err != nil {
		return nil, info, err
	}
	var img []byte
	err = nodeCall(ctx, dir, n.Name, display.OpSnapshot, display.SnapshotArgs{After: after, Wait: wait}, &info,
		func(m json.RawMessage) error {
			var c display.SnapshotChunk
			if err := json.Unmarshal(m, &c); err != nil {
				return err
			}
			img = append(img, c.PNG...)
			return nil
		})
	if err != nil {
		return nil, info, fmt.Errorf("%s: snapshot: %w", n.Name, err)
	}
	if len(img) != info.Size {
		return nil, info, fmt.Errorf("%s: snapshot: got %d of %d PNG bytes", n.Name, len(img), info.Size)
	}
	return img, info, nil
}

// DisplayStats returns a display's counters.
func DisplayStats(ctx context.Context, testbed, node string) (display.Stats, error) {
	var st display.Stats
	dir, n, err := displayNode(testbed, node)
	if err != nil {
		return st, err
	}
	err = call(ctx, dir, n.Name, display.OpStats, nil, &st)
	return st, err
}

// DisplayDemoArgs choose the peripherals and the animation.
type DisplayDemoArgs struct {
	CPU, Display string
	// Args: Display, Local, Width and Height are filled in here.
	Args render.Args
}

// DisplayDemoResult is what both ends saw.
type DisplayDemoResult struct {
	Sent render.Result `json:"sent"`
	// Presented, Tiles and TilesLost are display counters accrued during
	// the demo; Display is the display's counters at the end.
	Presented uint64        `json:"presented"`
	Tiles     uint64        `json:"tiles"`
	TilesLost uint64        `json:"tiles_lost"`
	Display   display.Stats `json:"display"`
}

// DisplayDemo has the cpu render an animation and stream it to the display
// over their user-level stacks.
func DisplayDemo(ctx context.Context, testbed string, a DisplayDemoArgs, progress func(render.Progress)) (*DisplayDemoResult, error) {
	dir, dn, err := displayNode(testbed, a.Display)
	if err != nil {
		return nil, err
	}
	plan, err := LoadPlan(dir)
	if err != nil {
		return nil, err
	}
	cn, err := plan.Node(a.CPU)
	if err != nil {
		return nil, err
	}
	if cn.Kind != spec.KindCPU {
		return nil, fmt.Errorf("display demo needs a cpu (%s is a %s)", cn.Name, cn.Kind)
	}
	if err := checkPath(cn, dn); err != nil {
		return nil, fmt.Errorf("display demo: %w", err)
	}
	before, err := DisplayStats(ctx, testbed, dn.Name)
	if err != nil {
		return nil, err
	}
	a.Args.DisplayName = dn.Name // cpu finds it by membership (gossip)
	a.Args.Width, a.Args.Height = before.Width, before.Height
	a.Args.Local = cn.Addr.Addr()
	res := &DisplayDemoResult{}
	err = nodeCall(ctx, dir, cn.Name, cpu.OpDisplayStream, a.Args, &res.Sent, func(m json.RawMessage) error {
		var p render.Progress
		if progress != nil && json.Unmarshal(m, &p) == nil {
			progress(p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("display demo on %s: %w", cn.Name, err)
	}
	// The last datagrams may still be in the display's queue: wait until
	// its counters stop moving (at most 2 s).
	after := before
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		st, err := DisplayStats(ctx, testbed, dn.Name)
		if err != nil {
			return nil, err
		}
		settled := st.Datagrams == after.Datagrams
		after = st
		if settled {
			break
		}
	}
	res.Display = after
	res.Presented = after.Frames - before.Frames
	res.Tiles = after.Tiles - before.Tiles
	res.TilesLost = after.TilesLost - before.TilesLost
	return res, nil
}
