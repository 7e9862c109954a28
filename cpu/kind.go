package cpu

import (
	"context"
	"net/netip"

	"github.com/netstation/netstation/cpu/manager"
	"github.com/netstation/netstation/cpu/render"
	"github.com/netstation/netstation/cpu/workload"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/peripherals"
)

// Kind is the processor: it runs the workloads and drives the other
// peripherals over their wire protocols — the storage client, the disks'
// file manager (it mints their capabilities), third-party transfer orders,
// the tile streamer — and serves iperf3. Like every kind it is a plug-in
// of the runtime; it finds disks and displays by name in its membership
// view.
var Kind = peripherals.Kind{
	Name:  "cpu",
	Doc:   "the processor: workloads, the disks' file manager, transfer orders, the tile streamer, iperf3",
	Start: start,
}

// The kinds the cpu talks to, by the names their packages register (the
// cpu does not import them: it speaks their wire formats, internal/wire).
const (
	kindDisk    = "disk"
	kindDisplay = "display"
)

// The cpu's control ops.
const (
	OpStorage       peripherals.Op = "storage"        // StorageArgs -> workload.Progress..., StorageResult
	OpAccessCheck   peripherals.Op = "access-check"   // AccessArgs -> AccessResult
	OpTransferStore peripherals.Op = "transfer-store" // TransferStoreArgs -> TransferStoreResult
	OpTransferOrder peripherals.Op = "transfer-order" // TransferOrderArgs -> transfer.Result
	OpDisplayStream peripherals.Op = "display-stream" // render.Args -> render.Progress..., render.Result
)

// FileManager is a cpu's view of the testbed's disks: where their keys and
// versions are, so it can mint capabilities for them.
func FileManager(rt *peripherals.Runtime) *manager.Manager {
	m := manager.New()
	for _, n := range rt.Testbed() {
		if n.Kind == kindDisk {
			m.Add(manager.Disk{Name: n.Name, Addr: n.Addr.Addr(), Open: n.Params["access"] == "open",
				KeyPath: rt.NodeFile(n.Name, capability.KeyFileExt), VersionPath: rt.NodeFile(n.Name, capability.VersionFileExt)})
		}
	}
	return m
}

func start(ctx context.Context, rt *peripherals.Runtime) (func() error, error) {
	if _, err := StartIperf3(rt); err != nil {
		rt.Logger().Error("iperf3 server not started", "err", err)
	}
	mgr := FileManager(rt)
	// A disk or display named but not addressed is looked up by name in
	// the membership.
	disk := func(ctx context.Context, addr *netip.Addr, name string, kernel bool) error {
		if addr.IsValid() {
			return nil
		}
		a, err := rt.FindPeer(ctx, name, kindDisk, kernel)
		*addr = a
		return err
	}
	display := func(ctx context.Context, addr *netip.AddrPort, name string) error {
		if addr.Addr().IsValid() {
			return nil
		}
		a, err := rt.FindPeer(ctx, name, kindDisplay, false)
		*addr = netip.AddrPortFrom(a, 0)
		return err
	}
	peripherals.HandleArgs(rt, OpStorage, func(ctx context.Context, a StorageArgs, s *ctl.Stream) (any, error) {
		if err := disk(ctx, &a.Disk, a.DiskName, a.Stack == "kernel"); err != nil {
			return nil, err
		}
		return RunStorage(ctx, rt.Stack(), mgr, a, func(pr workload.Progress) { _ = s.Send(pr) })
	})
	rt.AddService("storage-client")
	peripherals.HandleArgs(rt, OpAccessCheck, func(ctx context.Context, a AccessArgs, _ *ctl.Stream) (any, error) {
		if err := disk(ctx, &a.Disk, a.DiskName, false); err != nil {
			return nil, err
		}
		return RunAccessCheck(ctx, rt.Stack(), mgr, a)
	})
	rt.AddService("file-manager")
	peripherals.HandleArgs(rt, OpTransferStore, func(ctx context.Context, a TransferStoreArgs, _ *ctl.Stream) (any, error) {
		if err := disk(ctx, &a.Disk, a.DiskName, false); err != nil {
			return nil, err
		}
		return StoreTransferImage(ctx, rt.Stack(), mgr, a)
	})
	peripherals.HandleArgs(rt, OpTransferOrder, func(ctx context.Context, a TransferOrderArgs, _ *ctl.Stream) (any, error) {
		if err := disk(ctx, &a.Disk, a.DiskName, false); err != nil {
			return nil, err
		}
		if err := display(ctx, &a.Display, a.DisplayName); err != nil {
			return nil, err
		}
		return OrderTransfer(ctx, rt.Stack(), mgr, a)
	})
	rt.AddService("transfer-orders")
	peripherals.HandleArgs(rt, OpDisplayStream, func(ctx context.Context, a render.Args, s *ctl.Stream) (any, error) {
		if err := display(ctx, &a.Display, a.DisplayName); err != nil {
			return nil, err
		}
		return render.Run(ctx, rt.Stack(), a, func(pr render.Progress) { _ = s.Send(pr) })
	})
	rt.AddService("display-streamer")
	return nil, nil
}
