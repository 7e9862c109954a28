package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/netstation/netstation/testbed/cluster"
	"github.com/spf13/cobra"
)

func newAgentCmd() *cobra.Command {
	var (
		cfg     cluster.Config
		bind    string
		join    []string
		state   string
		keyFile string
		verbose bool
	)
	c := &cobra.Command{
		Use:   "agent --name HOST --bind ADDR [--join ADDR,...]",
		Short: "Run this host's agent, so that testbeds can span several hosts",
		Long: `Run this host's agent until interrupted. Agents on the hosts of a multi-host
testbed find each other with memberlist on the underlay (the network between
the hosts): --bind is this host's underlay address, --join names one or more
other agents (any one that is up is enough; the others are found by gossip).
Each agent serves a control socket in the state root for the CLI on its host
and an RPC port on the underlay for the other agents.

With agents running, 'netstation up -f topology.yaml' of a topology with a
hosts list works from any host; see docs/MULTIHOST.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := netip.ParseAddr(bind)
			if err != nil {
				return fmt.Errorf("--bind %q: %w", bind, err)
			}
			cfg.Bind = a
			cfg.Join = join
			if keyFile != "" {
				k, err := os.ReadFile(keyFile)
				if err != nil {
					return fmt.Errorf("--key-file: %w", err)
				}
				if cfg.Key = bytes.TrimSpace(k); len(cfg.Key) < 16 {
					return fmt.Errorf("--key-file %s: %d bytes; want at least 16 (e.g. head -c 32 /dev/urandom | base64)", keyFile, len(cfg.Key))
				}
			}
			if state != "" {
				// The agent's testbeds and their supervisors use this root.
				os.Setenv("NETSTATION_STATE_DIR", state)
			}
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			ag, err := cluster.Start(cfg)
			if err != nil {
				return err
			}
			<-cmd.Context().Done()
			return ag.Close()
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.Name, "name", "", "this host's name, as topologies' hosts lists name it")
	f.StringVar(&bind, "bind", "", "this host's IPv4 address on the underlay")
	f.StringSliceVar(&join, "join", nil, "other agents' underlay addresses (ADDR or ADDR:PORT)")
	f.IntVar(&cfg.GossipPort, "gossip-port", cluster.DefaultGossipPort, "memberlist port (UDP and TCP)")
	f.IntVar(&cfg.RPCPort, "rpc-port", cluster.DefaultRPCPort, "port for the other agents' calls (TCP)")
	f.DurationVar(&cfg.ReconcileInterval, "reconcile", cluster.DefaultReconcileInterval, "how often VXLAN forwarding entries are reconciled from membership")
	f.DurationVar(&cfg.RejoinInterval, "rejoin", cluster.DefaultRejoinInterval, "how often the agent re-joins its seeds and hosts it lost")
	f.StringVar(&state, "state", "", "state root (default: $NETSTATION_STATE_DIR or /run/netstation)")
	f.StringVar(&keyFile, "key-file", "", "file holding the secret all agents share (encrypts gossip, authenticates agent RPC)")
	f.BoolVarP(&verbose, "verbose", "v", false, "log memberlist's own messages too")
	_ = c.MarkFlagRequired("name")
	_ = c.MarkFlagRequired("bind")
	return c
}

func newHostsCmd() *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "hosts [-o table|json]",
		Short: "Show the hosts of the agent cluster as this host's agent sees them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			var ms []cluster.Member
			if err := cluster.Call(ctx, "members", nil, &ms, nil); err != nil {
				return err
			}
			if output == "json" {
				return printJSON(ms)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tADDRESS\tSTATE\tSINCE\tMTU\tRPC")
			for _, m := range ms {
				name, since := m.Name, "-"
				if m.Self {
					name += " (this host)"
				} else if !m.Since.IsZero() {
					since = time.Since(m.Since).Round(time.Second).String() + " ago"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", name, m.Addr, m.State, since, m.MTU, m.RPCPort)
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return c
}

// upMultiHost brings a topology with a hosts list up through this host's
// agent.
func upMultiHost(cmd *cobra.Command, file string, timeout time.Duration, quiet bool) error {
	if file == "" {
		return errors.New("a multi-host topology comes from a file (-f)")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	res, err := cluster.Up(cmd.Context(), file, b, timeout)
	if err != nil {
		return err
	}
	if !quiet {
		fmt.Printf("testbed %s up: %d peripherals on %s across %s (MTU %d) in %.2fs\n",
			res.Testbed, len(res.Nodes), res.Subnet, strings.Join(res.Hosts, ", "), res.MTU, res.Took.Seconds())
		for _, n := range res.Nodes {
			fmt.Printf("  %-12s %-8s %-15s %s  on %s\n", n.Name, n.Kind, n.IP, n.MAC, n.Host)
		}
	}
	return nil
}

// downMultiHost is cluster.Down with its output. handled is false when
// the single-host path should run instead.
func downMultiHost(cmd *cobra.Command, name string) (handled bool, err error) {
	res, handled, err := cluster.Down(cmd.Context(), name)
	if !handled {
		if err != nil {
			fmt.Fprintf(os.Stderr, "no agent on this host: removing only this host's part of %s\n", name)
		}
		return false, nil
	}
	hosts := make([]string, 0, len(res.Hosts))
	for h := range res.Hosts {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		fmt.Printf("  %s: %s\n", h, res.Hosts[h])
	}
	if err != nil {
		return true, err
	}
	fmt.Printf("testbed %s down\n", name)
	return true, nil
}
