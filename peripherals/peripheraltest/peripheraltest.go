package peripheraltest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/gossip"
	"github.com/netstation/netstation/stack/link/mem"
)

// Node is one peripheral of an in-process testbed.
type Node struct {
	Name   string
	Kind   string // a registered kind
	Params peripherals.Params
}

// Options shape an in-process testbed. The zero value is a /24 at
// 10.77.0.0, MTU 1500, links without offloads.
type Options struct {
	Subnet netip.Prefix // default 10.77.0.0/24
	MTU    int          // default 1500
	// Link are the switch's port options (offloads, queue depth, loss).
	Link mem.Options
	// Logger receives the peripherals' logs; nil: discarded.
	Logger *slog.Logger
}

// Testbed is a testbed in one process: its nodes, planned (names,
// addresses, MACs, parameters) by New, run by Start on ports of one
// in-memory switch, each with its control socket in Dir.
type Testbed struct {
	// Dir is the testbed's state directory (peripherals.Config.StateDir):
	// a test puts the files the testbed would make at up there between
	// New and Start (a disk's capability key, for one).
	Dir    string
	Switch *mem.Switch
	Peers  []peripherals.Peer
	opts   Options
	macs   []net.HardwareAddr
	nodes  map[string]*peripherals.Runtime
	t      testing.TB
}

// New plans a testbed of nodes: addresses from .10 upward, in order,
// locally administered MACs. Nothing runs until Start.
func New(t testing.TB, o Options, nodes ...Node) *Testbed {
	t.Helper()
	if !o.Subnet.IsValid() {
		o.Subnet = netip.MustParsePrefix("10.77.0.0/24")
	}
	if o.MTU == 0 {
		o.MTU = 1500
	}
	if o.Link.MTU == 0 {
		o.Link.MTU = o.MTU
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "nodes"), 0o700); err != nil {
		t.Fatal(err)
	}
	tb := &Testbed{Dir: dir, opts: o, nodes: map[string]*peripherals.Runtime{}, t: t}
	a := o.Subnet.Masked().Addr()
	for range 10 {
		a = a.Next()
	}
	for i, n := range nodes {
		tb.Peers = append(tb.Peers, peripherals.Peer{Name: n.Name, Kind: n.Kind, Addr: netip.PrefixFrom(a, o.Subnet.Bits()), Params: n.Params})
		tb.macs = append(tb.macs, net.HardwareAddr{0x02, 0x6e, 0x73, 0, byte(i >> 8), byte(i)})
		a = a.Next()
	}
	return tb
}

// Start runs every node, all at once as a supervisor does (a node joining
// the membership waits for seeds that are not up yet), each joining the
// membership (the first three are the seeds), and stops them all when the
// test ends. It fails the test if a node does not start.
func (tb *Testbed) Start(ctx context.Context) {
	tb.t.Helper()
	tb.Switch = mem.NewSwitch(tb.opts.Link)
	tb.t.Cleanup(func() { tb.Switch.Close() })
	var seeds []netip.AddrPort
	for _, p := range tb.Peers[:min(3, len(tb.Peers))] {
		seeds = append(seeds, netip.AddrPortFrom(p.Addr.Addr(), gossip.Port))
	}
	rts := make([]*peripherals.Runtime, len(tb.Peers))
	errs := make([]error, len(tb.Peers))
	var wg sync.WaitGroup
	for i, p := range tb.Peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rts[i], errs[i] = peripherals.Start(ctx, peripherals.Config{
				Name: p.Name, Kind: p.Kind, Link: tb.Switch.Port(tb.macs[i]), MAC: tb.macs[i], Addr: p.Addr,
				MTU: tb.opts.MTU, ControlPath: tb.Sock(p.Name), Params: p.Params, StateDir: tb.Dir,
				Testbed: tb.Peers, Seeds: seeds, Logger: tb.opts.Logger.With("node", p.Name),
			})
		}()
	}
	wg.Wait()
	for i, rt := range rts {
		if rt != nil {
			tb.nodes[tb.Peers[i].Name] = rt
			tb.t.Cleanup(func() { rt.Close() })
		}
	}
	if err := errors.Join(errs...); err != nil {
		tb.t.Fatalf("start: %v", err)
	}
}

// Node returns the running peripheral called name (nil before Start).
func (tb *Testbed) Node(name string) *peripherals.Runtime { return tb.nodes[name] }

// Peer returns the planned node called name.
func (tb *Testbed) Peer(name string) peripherals.Peer {
	for _, p := range tb.Peers {
		if p.Name == name {
			return p
		}
	}
	tb.t.Fatalf("no node %s in the testbed", name)
	return peripherals.Peer{}
}

// Sock is node's control socket.
func (tb *Testbed) Sock(node string) string { return peripherals.NodeFile(tb.Dir, node, "sock") }

// Call runs op on node over its control socket, as the CLI does; each
// (nil: ignored) receives the intermediate responses.
func (tb *Testbed) Call(ctx context.Context, node string, op peripherals.Op, args, out any, each func(json.RawMessage) error) error {
	if err := ctl.Call(ctx, tb.Sock(node), string(op), args, out, each); err != nil {
		return fmt.Errorf("%s: %s: %w", node, op, err)
	}
	return nil
}

// WaitMembership waits until every node sees every other alive, so that
// lookups by name answer at once.
func (tb *Testbed) WaitMembership(ctx context.Context) error {
	for {
		all := true
		for _, p := range tb.Peers {
			var v peripherals.MembersView
			if err := tb.Call(ctx, p.Name, peripherals.OpMembers, nil, &v, nil); err != nil {
				return err
			}
			alive := 0
			for _, m := range v.Members {
				if m.State == gossip.Alive {
					alive++
				}
			}
			if alive < len(tb.Peers) {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("membership did not converge: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
