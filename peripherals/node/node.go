package node

import (
	"context"
	"fmt"

	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/gossip"
	"github.com/netstation/netstation/stack/link/afpacket"
)

// Config is what a node process runs: the peripheral, and how to open its
// port.
type Config struct {
	// Peripheral is the runtime's configuration but for its Link, which
	// Run opens: AF_PACKET on Peripheral.IfName.
	Peripheral peripherals.Config
	// Shaped: a rate limit sits on the port's egress qdisc, so the socket
	// must not bypass the qdisc (PACKET_QDISC_BYPASS stays off).
	Shaped bool
	// Started, when set, runs once the peripheral is up, before it serves
	// to the end (a testbed hooks its kernel-baseline handling here).
	Started func(*peripherals.Runtime)
}

// Run is the body of a peripheral process, already inside its node's
// network namespace: it opens the namespace's veth with AF_PACKET (the
// kernel has no address on it), accepting only frames for the node's
// address, runs the peripherals runtime with the node's kind on it, and
// serves until ctx ends or a shutdown is requested.
func Run(ctx context.Context, cfg Config) error {
	pc := cfg.Peripheral
	if pc.Members > gossip.LargeCluster {
		if err := setTimerSlack(largeTestbedTimerSlack); err != nil && pc.Logger != nil {
			pc.Logger.Warn("idle cost not lowered", "err", err)
		}
	}
	l, err := afpacket.Open(pc.IfName, afpacket.Options{NoQdiscBypass: cfg.Shaped, Accept: pc.Addr})
	if err != nil {
		return fmt.Errorf("open link %s: %w", pc.IfName, err)
	}
	pc.Link = l
	rt, err := peripherals.Start(ctx, pc)
	if err != nil {
		return err
	}
	if cfg.Started != nil {
		cfg.Started(rt)
	}
	return rt.Wait(ctx)
}
