package testbed

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/netstation/netstation/cpu"
	"github.com/netstation/netstation/cpu/manager"
	"github.com/netstation/netstation/cpu/render"
	"github.com/netstation/netstation/cpu/workload"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/gossip"
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
	peers := &peerFinder{self: n.Name, bits: n.Addr.Bits()}
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
		if _, err := cpu.StartIperf3(p); err != nil {
			log.Error("iperf3 server not started", "err", err)
		}
		mgr := fileManager(dir, plan)
		p.Handle("storage", func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
			var a cpu.StorageArgs
			if err := req.Decode(&a); err != nil {
				return nil, err
			}
			if !a.Disk.IsValid() {
				if a.Disk, err = peers.find(ctx, a.DiskName, spec.KindDisk, a.Stack == "kernel"); err != nil {
					return nil, err
				}
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
			if !a.Disk.IsValid() {
				if a.Disk, err = peers.find(ctx, a.DiskName, spec.KindDisk, false); err != nil {
					return nil, err
				}
			}
			return cpu.StoreTransferImage(ctx, p.Stack(), mgr, a)
		})
		p.Handle("transfer-order", func(ctx context.Context, req ctl.Request, _ *ctl.Stream) (any, error) {
			var a cpu.TransferOrderArgs
			if err := req.Decode(&a); err != nil {
				return nil, err
			}
			if !a.Disk.IsValid() {
				if a.Disk, err = peers.find(ctx, a.DiskName, spec.KindDisk, false); err != nil {
					return nil, err
				}
			}
			if !a.Display.Addr().IsValid() {
				d, err := peers.find(ctx, a.DisplayName, spec.KindDisplay, false)
				if err != nil {
					return nil, err
				}
				a.Display = netip.AddrPortFrom(d, 0)
			}
			return cpu.OrderTransfer(ctx, p.Stack(), mgr, a)
		})
		p.AddService("transfer-orders")
		p.Handle("display-stream", func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
			var a render.Args
			if err := req.Decode(&a); err != nil {
				return nil, err
			}
			if !a.Display.Addr().IsValid() {
				d, err := peers.find(ctx, a.DisplayName, spec.KindDisplay, false)
				if err != nil {
					return nil, err
				}
				a.Display = netip.AddrPortFrom(d, 0)
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
	// Join the testbed's membership last, so the metadata lists every
	// service. The first three nodes are the seeds; everyone re-joins
	// them while one is missing.
	meta := gossip.Meta{Services: p.ServicePorts(), DiskBytes: n.DiskSize}
	if n.Kind == spec.KindDisplay {
		meta.Width, meta.Height = cmp.Or(n.Width, 1280), cmp.Or(n.Height, 720)
	}
	var seeds []netip.AddrPort
	for _, s := range plan.Nodes[:min(3, len(plan.Nodes))] {
		seeds = append(seeds, netip.AddrPortFrom(s.Addr.Addr(), gossip.Port))
	}
	if g, err := peripherals.StartGossip(p, meta, seeds); err != nil {
		log.Error("gossip: not joining the membership", "err", err)
	} else {
		peers.set(g)
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

// peerFinder is how a cpu finds the peripherals it works with: by name, in
// its membership view (gossip), not from the plan's addresses.
type peerFinder struct {
	self string
	bits int // the subnet's prefix length, for kernel baseline addresses
	mu   sync.Mutex
	node *gossip.Node
}

func (f *peerFinder) set(n *gossip.Node) {
	f.mu.Lock()
	f.node = n
	f.mu.Unlock()
}

// find returns the address of the alive member called name, of kind, on
// the user-level stacks or (kernel) the kernel baseline's. A member not
// yet in the view (just after up) is waited for, a little.
func (f *peerFinder) find(ctx context.Context, name string, kind spec.Kind, kernel bool) (netip.Addr, error) {
	if name == "" {
		return netip.Addr{}, fmt.Errorf("no %s named and no address given", kind)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	last := "not in the membership view"
	for {
		f.mu.Lock()
		n := f.node
		f.mu.Unlock()
		if n != nil {
			if m, ok := n.Lookup(name); ok {
				switch {
				case m.Meta.Kind != string(kind):
					return netip.Addr{}, fmt.Errorf("%s is a %s, not a %s", name, m.Meta.Kind, kind)
				case m.State == gossip.Alive && kernel:
					return peripherals.KernelAddr(netip.PrefixFrom(m.Addr.Addr(), f.bits)).Addr(), nil
				case m.State == gossip.Alive:
					return m.Addr.Addr(), nil
				}
				last = string(m.State)
			}
		} else {
			last = "membership not joined"
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, fmt.Errorf("%s cannot find %s: %s (netstation members --from %s)", f.self, name, last, f.self)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
