package testbed

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/netstation/netstation/cpu"
	"github.com/netstation/netstation/cpu/render"
	"github.com/netstation/netstation/cpu/workload"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals"
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
		d, err := peripherals.StartDisk(p, NodeDisk(dir, n.Name), n.DiskSize)
		if err != nil {
			p.Close()
			return err
		}
		defer d.Close()
	case spec.KindCPU:
		p.Handle("storage", func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
			var a cpu.StorageArgs
			if err := req.Decode(&a); err != nil {
				return nil, err
			}
			return cpu.RunStorage(ctx, p.Stack(), a, func(pr workload.Progress) { _ = s.Send(pr) })
		})
		p.AddService("storage-client")
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
