package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/netstation/netstation/cpu"
	"github.com/netstation/netstation/cpu/workload"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals"
)

// StorageDemoArgs choose the peripherals and shape of the storage demo.
type StorageDemoArgs struct {
	CPU, Disk string
	Args      cpu.StorageArgs // Disk, Local and MaxRequest are filled in here
	// LossPPM drops that fraction of frames in both directions on the
	// disk's link (seeded by Args.Seed), per million.
	LossPPM uint32
}

// call runs one control operation on a node.
func call(ctx context.Context, dir, node, op string, args, out any) error {
	if err := nodeCall(ctx, dir, node, op, args, out, nil); err != nil {
		return fmt.Errorf("%s: %s: %w", node, op, err)
	}
	return nil
}

// StorageDemo runs the storage demo on a testbed that is up: cpu writes,
// flushes, reads back and verifies, over the user-level stacks or, for the
// baseline, over kernel sockets in the same namespaces.
func StorageDemo(ctx context.Context, testbed string, a StorageDemoArgs, progress func(workload.Progress)) (*cpu.StorageResult, error) {
	dir := Dir(testbed)
	plan, err := LoadPlan(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	cn, err := plan.Node(a.CPU)
	if err != nil {
		return nil, err
	}
	dn, err := plan.Node(a.Disk)
	if err != nil {
		return nil, err
	}
	if cn.Kind != "cpu" || dn.Kind != "disk" {
		return nil, fmt.Errorf("storage demo needs a cpu and a disk (got %s %s, %s %s)", cn.Name, cn.Kind, dn.Name, dn.Kind)
	}
	// Always leave the peripherals as we found them: the disk's link
	// settings (which `link set` may have chosen) and the kernel baseline.
	links, err := ShowLinks(ctx, testbed, dn.Name)
	if err != nil || len(links) != 1 {
		return nil, fmt.Errorf("storage demo: read %s's link settings: %v", dn.Name, err)
	}
	before := links[0].Params
	cleanup := func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if a.LossPPM > 0 {
			_, _ = SetLink(c, testbed, LinkChange{Node: dn.Name, LossPPM: &before.LossPPM, Seed: &before.Seed})
		}
		if a.Args.Stack == "kernel" {
			_ = call(c, dir, cn.Name, "kernel", false, nil)
			_ = call(c, dir, dn.Name, "kernel", false, nil)
		}
	}
	defer cleanup()
	if a.LossPPM > 0 {
		// The fabric's loss injection (tc BPF on the disk's port when BPF
		// is available, the peripheral's link layer otherwise).
		seed := a.Args.Seed
		if _, err := SetLink(ctx, testbed, LinkChange{Node: dn.Name, LossPPM: &a.LossPPM, Seed: &seed}); err != nil {
			return nil, err
		}
		if a.Args.MaxRequest == 0 {
			a.Args.MaxRequest = 1344 // one frame per request: see cpu.StorageArgs
		}
	}
	a.Args.Disk, a.Args.Local = dn.Addr.Addr(), cn.Addr.Addr()
	if a.Args.Stack == "kernel" {
		for _, n := range []*NodePlan{cn, dn} {
			if err := call(ctx, dir, n.Name, "kernel", true, nil); err != nil {
				return nil, err
			}
		}
		a.Args.Disk = peripherals.KernelAddr(dn.Addr).Addr()
		a.Args.Local = peripherals.KernelAddr(cn.Addr).Addr()
	}
	var res cpu.StorageResult
	err = nodeCall(ctx, dir, cn.Name, "storage", a.Args, &res, func(m json.RawMessage) error {
		var p workload.Progress
		if progress != nil && json.Unmarshal(m, &p) == nil {
			progress(p)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ctl.ErrRemote) {
			return nil, fmt.Errorf("storage demo on %s: %w", cn.Name, err)
		}
		return nil, err
	}
	res.Report.Options = workload.StorageOptions{Size: a.Args.Size, BlockSize: a.Args.BlockSize, QueueDepth: a.Args.QueueDepth, Seed: a.Args.Seed}
	return &res, nil
}
