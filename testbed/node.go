package testbed

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"strconv"

	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/gossip"
	"github.com/netstation/netstation/peripherals/node"
	"github.com/netstation/netstation/testbed/spec"
)

// NodeConfig is what `netstation node run` runs for node name of the
// testbed in state directory dir (peripherals/node.Run): the node's
// identity, kind and parameters, the testbed's nodes and membership seeds
// from the plan, and its link settings (shaping, the recorded link-layer
// impairment, and the anti-spoofing template relaxed while a kernel
// baseline runs).
func NodeConfig(dir, name string, log *slog.Logger) (node.Config, error) {
	plan, err := LoadPlan(dir)
	if err != nil {
		return node.Config{}, err
	}
	n, err := plan.Node(name)
	if err != nil {
		return node.Config{}, err
	}
	mac, err := net.ParseMAC(n.MAC)
	if err != nil {
		return node.Config{}, fmt.Errorf("node %s: %w", name, err)
	}
	nl := startNodeLink(dir, plan, n)
	// The membership's seeds are nodes of the node's own segment (nodes of
	// other segments can never answer: nothing routes between segments);
	// everyone re-joins them while one is missing.
	var segment []NodePlan
	neighbors := map[netip.Addr]net.HardwareAddr{}
	for _, s := range plan.Nodes {
		if s.Segment == n.Segment {
			segment = append(segment, s)
			if m, err := net.ParseMAC(s.MAC); err == nil && s.Name != n.Name {
				neighbors[s.Addr.Addr()] = m
			}
		}
	}
	beat, err := openBeat()
	if err != nil {
		// The peripheral runs without; memberlist's probes still find it
		// if it hangs.
		log.Warn("no heartbeat for the supervisor's watchdog", "err", err)
	}
	var seeds []netip.AddrPort
	for _, i := range seedsOf(segment, n) {
		seeds = append(seeds, netip.AddrPortFrom(segment[i].Addr.Addr(), gossip.Port))
	}
	return node.Config{
		Peripheral: peripherals.Config{
			Name: n.Name, Kind: string(n.Kind), IfName: n.IfName, MAC: mac, Addr: n.Addr,
			MTU: plan.MTU, ControlPath: NodeSock(dir, n.Name), Impair: nl.impair, Logger: log,
			Params: n.KindParams(), StateDir: dir, Testbed: plan.Peers(), Seeds: seeds, Members: len(segment),
			Neighbors: neighbors, DeferJoin: os.Getenv(deferJoinEnv) == "1", Beat: beat,
			BeatEvery: watchSettings().beat,
		},
		Shaped:  nl.shaped,
		LinkRx:  n.LinkRx,
		Started: nl.apply,
	}, nil
}

// seedsOf returns the indexes in nodes (n's segment) of the nodes n joins the membership
// through (and re-joins while one is missing). A join is a full state
// exchange with every seed given, so when every node joined the first
// three, those three did 3 x n exchanges at start: at 200 peripherals they
// stopped answering pings for 15 s and more (issue 16). Now the first
// 3 + n/64 nodes are seeds (3 at up to 63 nodes, 18 at 1,000) and each
// node joins two of them, picked by its position, so a seed serves about
// 2n/k joins; the seeds join seed 0 and the next one, which ties them
// together.
func seedsOf(nodes []NodePlan, n *NodePlan) []int {
	k := seedCount(len(nodes))
	if k <= 3 {
		out := make([]int, k)
		for i := range out {
			out[i] = i
		}
		return out
	}
	pos := 0
	for i := range nodes {
		if nodes[i].Name == n.Name {
			pos = i
			break
		}
	}
	if pos < k {
		return []int{0, (pos + 1) % k}
	}
	return []int{pos % k, (pos + 1) % k}
}

// seedCount is how many of a segment's n nodes (the first ones) are
// membership seeds.
func seedCount(n int) int { return min(n, 3+n/64) }

// KindParams are the node's parameters as its kind takes them: the
// topology's params block, with the disk and display blocks' fields under
// their parameter names.
func (n *NodePlan) KindParams() peripherals.Params {
	ps := peripherals.Params{}
	maps.Copy(ps, n.Params)
	switch n.Kind {
	case spec.KindDisk:
		if n.DiskSize != 0 {
			ps["size"] = strconv.FormatInt(n.DiskSize, 10)
		}
		if n.DiskOpen {
			ps["access"] = spec.AccessOpen
		}
	case spec.KindDisplay:
		if n.Width != 0 {
			ps["width"] = strconv.Itoa(n.Width)
		}
		if n.Height != 0 {
			ps["height"] = strconv.Itoa(n.Height)
		}
		if n.Format != "" {
			ps["format"] = n.Format
		}
	}
	if len(ps) == 0 {
		return nil
	}
	return ps
}

// Peers lists the plan's nodes as the peripherals see them.
func (p *Plan) Peers() []peripherals.Peer {
	out := make([]peripherals.Peer, 0, len(p.Nodes))
	for i := range p.Nodes {
		n := &p.Nodes[i]
		out = append(out, peripherals.Peer{Name: n.Name, Kind: string(n.Kind), Addr: n.Addr, Params: n.KindParams()})
	}
	return out
}

// NodeKey is a disk's capability key file (capability.KeyFile, mode 0600):
// made by the supervisor at up, read by the disk and by the cpu nodes,
// its file managers. Keys never cross the network.
func NodeKey(dir, node string) string {
	return peripherals.NodeFile(dir, node, capability.KeyFileExt)
}

// NodeCapVersion is a disk's capability version file: the disk rewrites it
// when it revokes; managers read it when they mint.
func NodeCapVersion(dir, node string) string {
	return peripherals.NodeFile(dir, node, capability.VersionFileExt)
}

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
