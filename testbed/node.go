package testbed

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	"github.com/netstation/netstation/cpu"
	"github.com/netstation/netstation/cpu/manager"
	"github.com/netstation/netstation/cpu/render"
	"github.com/netstation/netstation/cpu/workload"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/disk/capability"
	"github.com/netstation/netstation/testbed/spec"
)

// RunNode is the body of `netstation node run`: the process is already in
// the node's namespace (the supervisor started it there); it brings up the
// peripheral and serves until ctx ends or a shutdown is requested.
func RunNode(ctx context.Context, dir, name string, log *slog.Logger) error {
	plan, err := LoadPlan(dir)
	if err != nil {
		return err
	}
	n, err := plan.Node(name)
	if err != nil {
		return err
	}
	mac, err := net.ParseMAC(n.MAC)
	if err != nil {
		return fmt.Errorf("node %s: %w", name, err)
	}
	shaped, applyLink := startNodeLink(dir, plan, n)
	p, err := peripherals.Start(peripherals.Config{
		Name: n.Name, Kind: string(n.Kind), IfName: n.IfName, MAC: mac, Addr: n.Addr,
		MTU: plan.MTU, ControlPath: NodeSock(dir, n.Name), Shaped: shaped, Logger: log,
	})
	if err != nil {
		return err
	}
	applyLink(p)
	peripherals.RegisterProbe(p)
	switch n.Kind {
	case spec.KindDisk:
		d, err := peripherals.StartDisk(p, NodeDisk(dir, n.Name), n.DiskSize, peripherals.DiskAccess{
			Open: n.DiskOpen, KeyPath: NodeKey(dir, n.Name), VersionPath: NodeCapVersion(dir, n.Name)})
		if err != nil {
			p.Close()
			return err
		}
		defer d.Close()
	case spec.KindCPU:
		mgr := fileManager(dir, plan)
		p.Handle("storage", func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
			var a cpu.StorageArgs
			if err := req.Decode(&a); err != nil {
				return nil, err
			}
			return cpu.RunStorage(ctx, p.Stack(), mgr, a, func(pr workload.Progress) { _ = s.Send(pr) })
		})
		p.AddService("storage-client")
		p.Handle("access-check", func(ctx context.Context, req ctl.Request, _ *ctl.Stream) (any, error) {
			var a cpu.AccessArgs
			if err := req.Decode(&a); err != nil {
				return nil, err
			}
			return cpu.RunAccessCheck(ctx, p.Stack(), mgr, a)
		})
		p.AddService("file-manager")
		p.Handle("transfer-store", func(ctx context.Context, req ctl.Request, _ *ctl.Stream) (any, error) {
			var a cpu.TransferStoreArgs
			if err := req.Decode(&a); err != nil {
				return nil, err
			}
			return cpu.StoreTransferImage(ctx, p.Stack(), mgr, a)
		})
		p.Handle("transfer-order", func(ctx context.Context, req ctl.Request, _ *ctl.Stream) (any, error) {
			var a cpu.TransferOrderArgs
			if err := req.Decode(&a); err != nil {
				return nil, err
			}
			return cpu.OrderTransfer(ctx, p.Stack(), mgr, a)
		})
		p.AddService("transfer-orders")
		p.Handle("display-stream", func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
			var a render.Args
			if err := req.Decode(&a); err != nil {
				return nil, err
			}
			return render.Run(ctx, p.Stack(), a, func(pr render.Progress) { _ = s.Send(pr) })
		})
		p.AddService("display-streamer")
	case spec.KindDisplay:
		if _, err := peripherals.StartDisplay(p, n.Width, n.Height, n.Format); err != nil {
			p.Close()
			return err
		}
	}
	select {
	case <-ctx.Done():
	case <-p.Done():
	}
	log.Info("peripheral stopping", "node", name)
	return p.Close()
}

// NodeKey is a disk's capability key file (capability.KeyFile, mode 0600):
// made by the supervisor at up, read by the disk and by the cpu nodes,
// its file managers. Keys never cross the network.
func NodeKey(dir, node string) string { return filepath.Join(dir, "nodes", node+".key") }

// NodeCapVersion is a disk's capability version file: the disk rewrites it
// when it revokes; managers read it when they mint.
func NodeCapVersion(dir, node string) string { return filepath.Join(dir, "nodes", node+".capver") }

// makeDiskKeys gives every disk that checks capabilities a key of its own
// (kept if the supervisor starts again over the same state directory).
func makeDiskKeys(dir string, plan *Plan) error {
	for _, n := range plan.Nodes {
		if n.Kind != spec.KindDisk || n.DiskOpen {
			continue
		}
		if _, err := capability.CreateKeyFile(NodeKey(dir, n.Name), n.Name); err != nil {
			return fmt.Errorf("disk %s: %w", n.Name, err)
		}
	}
	return nil
}

// ErrNoKeySeed: a multi-host testbed has disks that check capabilities
// but its agents share no key to derive the disks' keys from.
var ErrNoKeySeed = errors.New("capability keys of a multi-host testbed derive from the agents' --key-file")

// deriveDiskKeys writes the key file of every disk of a multi-host testbed
// (those on other hosts too: this host's cpus are their file managers),
// each key HMAC-SHA256(seed, "netstation disk key" | testbed | disk), so
// every host computes the same keys and none travels.
func deriveDiskKeys(dir string, plan *Plan, seed []byte) error {
	for _, n := range plan.Nodes {
		if n.Kind != spec.KindDisk || n.DiskOpen {
			continue
		}
		if len(seed) == 0 {
			return fmt.Errorf("%w: disk %s checks capabilities; start the agents with --key-file, or give the disk `access: open`",
				ErrNoKeySeed, n.Name)
		}
		m := hmac.New(sha256.New, seed)
		fmt.Fprintf(m, "netstation disk key\x00%s\x00%s", plan.Testbed, n.Name)
		if _, err := capability.WriteKeyFile(NodeKey(dir, n.Name), n.Name, m.Sum(nil)); err != nil {
			return fmt.Errorf("disk %s: %w", n.Name, err)
		}
	}
	return nil
}

// fileManager is a cpu node's view of the testbed's disks: where their
// keys and versions are, so it can mint capabilities.
func fileManager(dir string, plan *Plan) *manager.Manager {
	m := manager.New()
	for _, n := range plan.Nodes {
		if n.Kind == spec.KindDisk {
			m.Add(manager.Disk{Name: n.Name, Addr: n.Addr.Addr(), Open: n.DiskOpen,
				KeyPath: NodeKey(dir, n.Name), VersionPath: NodeCapVersion(dir, n.Name)})
		}
	}
	return m
}
