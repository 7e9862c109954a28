package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

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
	// LinkRx picks how the port receives: LinkRxModes' "recvmmsg" or
	// "framering" (a topology's link.rx); "" leaves it to $NETSTATION_LINK_RX,
	// then the default.
	LinkRx string
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
	o, err := linkOptions(LinkRx(cfg.LinkRx))
	if err != nil {
		return err
	}
	o.NoQdiscBypass, o.Accept = cfg.Shaped, pc.Addr
	l, err := afpacket.Open(pc.IfName, o)
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

// LinkRxEnv names the environment variable that picks how every
// peripheral started with it receives, unless its topology says
// (Config.LinkRx; the supervisor's environment reaches its nodes):
// "recvmmsg" (the default, afpacket.RxRecvmmsg: bulk
// receive, GSO super-frames lent in batches) or "framering"
// (afpacket.RxFrameRing with sendmmsg: the lowest round-trip latency, for
// polling readers such as bench's --rtt-poll; super-frames cost the
// kernel a clone and a partial copy more, and come a run per recvmmsg).
// For example `NETSTATION_LINK_RX=framering netstation up`.
const LinkRxEnv = "NETSTATION_LINK_RX"

// ErrLinkRx: $NETSTATION_LINK_RX or Config.LinkRx names no receive path.
var ErrLinkRx = errors.New("node: unknown receive path")

// LinkRxModes are the receive paths Config.LinkRx and $NETSTATION_LINK_RX
// name, the default first.
var LinkRxModes = []string{"recvmmsg", "framering"}

// LinkRx is the receive path a node runs with when its configuration
// asks for v (Config.LinkRx): v, else $NETSTATION_LINK_RX, else the
// default.
func LinkRx(v string) string {
	if v == "" {
		v = os.Getenv(LinkRxEnv)
	}
	if v == "" {
		v = LinkRxModes[0]
	}
	return v
}

// linkOptions returns the link options receive path v asks for.
func linkOptions(v string) (afpacket.Options, error) {
	switch v {
	case "", LinkRxModes[0]:
		return afpacket.Options{}, nil
	case LinkRxModes[1]:
		return afpacket.Options{Rx: afpacket.RxFrameRing, Tx: afpacket.TxSendmmsg}, nil
	}
	return afpacket.Options{}, fmt.Errorf("%w %q (%s: link.rx or $%s)", ErrLinkRx, v, strings.Join(LinkRxModes, " or "), LinkRxEnv)
}
