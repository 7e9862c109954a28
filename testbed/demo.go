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
	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/testbed/spec"
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
	if err := ctl.Call(ctx, NodeSock(dir, node), op, args, out, nil); err != nil {
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
	a.Args.Disk, a.Args.Local, a.Args.DiskName = dn.Addr.Addr(), cn.Addr.Addr(), dn.Name
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
	err = ctl.Call(ctx, NodeSock(dir, cn.Name), "storage", a.Args, &res, func(m json.RawMessage) error {
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

// DiskStats returns a disk's counters: requests, errors, drops, capability
// refusals by reason, transfer orders.
func DiskStats(ctx context.Context, testbed, node string) (disk.Stats, error) {
	var st disk.Stats
	dir := Dir(testbed)
	plan, err := LoadPlan(dir)
	if err != nil {
		return st, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	n, err := plan.Node(node)
	if err != nil {
		return st, err
	}
	if n.Kind != spec.KindDisk {
		return st, fmt.Errorf("%s is a %s, not a disk", n.Name, n.Kind)
	}
	err = call(ctx, dir, n.Name, "disk-stats", nil, &st)
	return st, err
}

// RevokeDisk bumps a disk's capability version: every capability minted
// before is refused from now on (and after restarts of the disk); the
// file managers mint at the new version.
func RevokeDisk(ctx context.Context, testbed, node string) (uint32, error) {
	if _, err := DiskStats(ctx, testbed, node); err != nil {
		return 0, err
	}
	var r peripherals.RevokeReply
	err := call(ctx, Dir(testbed), node, "disk-revoke", nil, &r)
	return r.Version, err
}

// CapabilityDemoResult is what the capability demo saw: every case, and
// the disk's refusal counters accrued meanwhile, by reason.
type CapabilityDemoResult struct {
	Cases   []cpu.AccessCase  `json:"cases"`
	Refused map[string]uint64 `json:"refused"`
	// Version is the disk's capability version before and after the
	// revocation.
	VersionBefore uint32 `json:"version_before"`
	VersionAfter  uint32 `json:"version_after"`
}

// CapabilityDemo has the cpu (the file manager) present the disk with
// valid, forged, expired, out-of-range, wrong-rights and replayed
// capabilities, then revokes the disk's capabilities and shows the valid
// one refused and a freshly minted one accepted.
func CapabilityDemo(ctx context.Context, testbed, cpuName, diskName string) (*CapabilityDemoResult, error) {
	dir := Dir(testbed)
	plan, err := LoadPlan(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	cn, err := plan.Node(cpuName)
	if err != nil {
		return nil, err
	}
	if cn.Kind != spec.KindCPU {
		return nil, fmt.Errorf("%s is a %s, not a cpu", cn.Name, cn.Kind)
	}
	before, err := DiskStats(ctx, testbed, diskName)
	if err != nil {
		return nil, err
	}
	dn, _ := plan.Node(diskName)
	args := cpu.AccessArgs{Disk: dn.Addr.Addr(), DiskName: dn.Name}
	var first cpu.AccessResult
	if err := call(ctx, dir, cn.Name, "access-check", args, &first); err != nil {
		return nil, err
	}
	v, err := RevokeDisk(ctx, testbed, dn.Name)
	if err != nil {
		return nil, err
	}
	args.Revoked = first.Valid
	var second cpu.AccessResult
	if err := call(ctx, dir, cn.Name, "access-check", args, &second); err != nil {
		return nil, err
	}
	after, err := DiskStats(ctx, testbed, dn.Name)
	if err != nil {
		return nil, err
	}
	res := &CapabilityDemoResult{Cases: append(first.Cases, second.Cases...), Refused: map[string]uint64{},
		VersionBefore: before.Version, VersionAfter: v}
	for k, n := range after.Refused {
		if d := n - before.Refused[k]; d > 0 {
			res.Refused[k] = d
		}
	}
	return res, nil
}
