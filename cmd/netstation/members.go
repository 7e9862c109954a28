package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/netstation/netstation/testbed"
	"github.com/spf13/cobra"
)

func newMembersCmd() *cobra.Command {
	var tb, from, output string
	c := &cobra.Command{
		Use:   "members [-t TESTBED] [--from NODE] [-o json]",
		Short: "Show the peripherals one peripheral found by gossip",
		Long: `Every peripheral joins a memberlist (SWIM) cluster over its own user-level
stack (UDP and TCP port 7946) and publishes its kind, service ports and
capacity. members prints one peripheral's view: who it knows, in which state
(alive or dead; memberlist keeps its SWIM suspicion to itself) since when, and what they offer. A peripheral killed
without a goodbye turns dead in every view within seconds; its restart turns
alive again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			name, err := pickTestbed(tb)
			if err != nil {
				return err
			}
			v, err := testbed.Members(cmd.Context(), name, from)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(v)
			}
			if err := checkOutput(output); err != nil {
				return err
			}
			fmt.Printf("view of %s (%d members, %d packets in, %d out)\n", v.Node, v.Stats.Members, v.Stats.PacketsIn, v.Stats.PacketsOut)
			w := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tKIND\tADDR\tSTATE\tSINCE\tSERVICES\tCAPACITY")
			for _, m := range v.Members {
				var svc []string
				for s, p := range m.Meta.Services {
					svc = append(svc, fmt.Sprintf("%s:%d", s, p))
				}
				sort.Strings(svc)
				capacity := ""
				switch {
				case m.Meta.DiskBytes > 0:
					capacity = fmt.Sprintf("%d MiB", m.Meta.DiskBytes>>20)
				case m.Meta.Width > 0:
					capacity = fmt.Sprintf("%dx%d", m.Meta.Width, m.Meta.Height)
				}
				since := ""
				if !m.Since.IsZero() {
					since = time.Since(m.Since).Round(100*time.Millisecond).String() + " ago"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Meta.Kind, m.Addr.Addr(), m.State, since, strings.Join(svc, ","), capacity)
			}
			return w.Flush()
		},
	}
	f := c.Flags()
	f.StringVarP(&tb, "testbed", "t", "", "testbed (default: the only one up)")
	f.StringVar(&from, "from", "", "whose view (default: the first node)")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	return c
}
