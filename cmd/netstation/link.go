package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/netstation/netstation/testbed"
	"github.com/netstation/netstation/testbed/spec"
	"github.com/spf13/cobra"
)

// addObservability registers link, capture and metrics, and gives status
// its watch mode (-w).
func addObservability(root *cobra.Command) {
	root.AddCommand(newLinkCmd(), newCaptureCmd(), newMetricsCmd())
	for _, c := range root.Commands() {
		if c.Name() == "status" {
			addStatusWatch(c)
		}
	}
}

func newLinkCmd() *cobra.Command {
	var name string
	link := &cobra.Command{
		Use:   "link set|up|down|show",
		Short: "Change or show a node's link: rate, loss, corruption, delay, partitions",
		Long: `Change a node's link while the testbed runs, or show what is in force.

Rate shapes both directions with tbf. Loss, corruption and down act on each
direction of the node's fabric-side port, in the kernel (tc BPF) when the
testbed runs as root, else in the peripheral's own link layer. Delay is
added to the frames the node sends, in its link layer (this kernel has no
netem). A one-way flow through a link with loss p loses p; a ping crosses it
twice and loses 1-(1-p)^2.

Setting a rate on a node that came up without one restarts its peripheral
once (counted in status) so that its link keeps the qdisc.`,
	}
	link.PersistentFlags().StringVarP(&name, "testbed", "t", "", "testbed name")

	var rate, loss, corrupt, delay string
	var seed uint64
	set := &cobra.Command{
		Use:   "set NODE [--rate 1gbit] [--loss 1%] [--corrupt 0.1%] [--delay 5ms] [--seed 7]",
		Short: "Change a node's link (unset flags keep their value; --rate 0 removes the limit)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := testbed.LinkChange{Node: args[0]}
			f := cmd.Flags()
			if f.Changed("rate") {
				v := uint64(0)
				if rate != "0" {
					r, err := spec.ParseRate(rate)
					if err != nil {
						return fmt.Errorf("--rate: %w", err)
					}
					v = r
				}
				c.RateBits = &v
			}
			for _, p := range []struct {
				flag string
				val  string
				dst  **uint32
			}{{"loss", loss, &c.LossPPM}, {"corrupt", corrupt, &c.CorruptPPM}} {
				if f.Changed(p.flag) {
					v, err := spec.ParsePercent(p.val)
					if err != nil {
						return fmt.Errorf("--%s: %w", p.flag, err)
					}
					*p.dst = &v
				}
			}
			if f.Changed("delay") {
				d, err := spec.ParseDelay(delay)
				if err != nil {
					return fmt.Errorf("--delay: %w", err)
				}
				c.Delay = &d
			}
			if f.Changed("seed") {
				c.Seed = &seed
			}
			if c.RateBits == nil && c.LossPPM == nil && c.CorruptPPM == nil && c.Delay == nil && c.Seed == nil {
				return fmt.Errorf("link set %s: nothing to change (give --rate, --loss, --corrupt, --delay or --seed)", args[0])
			}
			return changeLink(cmd, name, c)
		},
	}
	set.Flags().StringVar(&rate, "rate", "", "rate limit, both directions (tc units: 500mbit, 1gbit; 0 = none)")
	set.Flags().StringVar(&loss, "loss", "", "frame loss per direction (1%, 0.1%)")
	set.Flags().StringVar(&corrupt, "corrupt", "", "frame corruption per direction (0.1%)")
	set.Flags().StringVar(&delay, "delay", "", "delay added to the frames the node sends (5ms; 0 = none)")
	set.Flags().Uint64Var(&seed, "seed", 0, "seed for loss and corruption (0 = random)")

	updown := func(use string, down bool) *cobra.Command {
		short := "Cut a node's link (every frame to and from it is dropped)"
		if !down {
			short = "Restore a node's link cut by link down"
		}
		return &cobra.Command{
			Use:   use + " NODE",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return changeLink(cmd, name, testbed.LinkChange{Node: args[0], Down: &down})
			},
		}
	}

	var output string
	show := &cobra.Command{
		Use:   "show [NODE]",
		Short: "Show the links in force, where they are enforced, and their counters",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tb, err := pickTestbed(name)
			if err != nil {
				return err
			}
			node := ""
			if len(args) == 1 {
				node = args[0]
			}
			links, err := testbed.ShowLinks(cmd.Context(), tb, node)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				return printJSON(links)
			case "table", "":
				printLinks(os.Stdout, links)
				return nil
			}
			return fmt.Errorf("unknown output format %q (table or json)", output)
		},
	}
	show.Flags().StringVarP(&output, "output", "o", "table", "table or json")

	link.AddCommand(set, updown("down", true), updown("up", false), show)
	return link
}

func changeLink(cmd *cobra.Command, name string, c testbed.LinkChange) error {
	tb, err := pickTestbed(name)
	if err != nil {
		return err
	}
	ls, err := testbed.SetLink(cmd.Context(), tb, c)
	if err != nil {
		return err
	}
	printLinks(os.Stdout, []testbed.LinkStatus{*ls})
	return nil
}

// formatLink writes the parameters in force the way link set takes them.
func formatLink(p testbed.LinkParams) string {
	s := ""
	add := func(f string, a ...any) {
		if s != "" {
			s += " "
		}
		s += fmt.Sprintf(f, a...)
	}
	if p.Down {
		add("DOWN")
	}
	if p.RateBits > 0 {
		add("rate %s", spec.FormatRate(p.RateBits))
	}
	if p.LossPPM > 0 {
		add("loss %s", spec.FormatPercent(p.LossPPM))
	}
	if p.CorruptPPM > 0 {
		add("corrupt %s", spec.FormatPercent(p.CorruptPPM))
	}
	if p.Delay > 0 {
		add("delay %v", p.Delay)
	}
	if p.Seed != 0 && (p.LossPPM > 0 || p.CorruptPPM > 0) {
		add("seed %d", p.Seed)
	}
	if s == "" {
		s = "unimpaired"
	}
	return s
}

func printLinks(w io.Writer, links []testbed.LinkStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tLINK\tRX\tLOSS BY\tTEMPLATE\tSPOOF DROPS\tLOST\tCORRUPTED\tBLOCKED\tDELAYED")
	for _, l := range links {
		tpl := "off"
		if l.Template {
			tpl = "on"
		}
		var lost, corrupted, blocked, delayed uint64
		if k := l.Kernel; k != nil {
			lost += k.Ingress.Dropped + k.Egress.Dropped
			corrupted += k.Ingress.Corrupted + k.Egress.Corrupted
			blocked += k.Ingress.Blocked + k.Egress.Blocked
		}
		if ll := l.LinkLayer; ll != nil {
			lost += ll.RxDropped + ll.TxDropped
			corrupted += ll.Corrupted
			delayed += ll.Delayed
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", l.Node, formatLink(l.Params), l.Rx, l.LossEnforcedBy, tpl,
			l.TemplateDrops, lost, corrupted, blocked, delayed)
	}
	tw.Flush()
}

// parseInterval reads a watch interval, refusing what would spin.
func parseInterval(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		if n, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			d, err = time.Duration(n*float64(time.Second)), nil
		}
	}
	if err != nil || d < 100*time.Millisecond {
		return 0, fmt.Errorf("interval %q: want a duration of at least 100ms", s)
	}
	return d, nil
}
