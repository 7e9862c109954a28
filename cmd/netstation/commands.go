package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/node"
	"github.com/netstation/netstation/testbed"
	"github.com/netstation/netstation/testbed/cluster"
	"github.com/netstation/netstation/testbed/spec"
	"github.com/spf13/cobra"
)

// loadTopology reads -f, or the embedded default testbed when empty.
func loadTopology(file string) (*spec.Topology, error) {
	if file == "" {
		return spec.Default(), nil
	}
	return spec.Load(file)
}

// pickTestbed resolves the testbed a command acts on: the flag, else the
// only testbed that is up; with several up, "default" when it is among
// them (named on stderr, so nobody acts on it unknowingly), else none:
// the user must choose (docs/CLI.md, "Which testbed").
func pickTestbed(flag string) (string, error) {
	return pickTestbedFrom(flag, testbed.List, os.Stderr)
}

func pickTestbedFrom(flag string, list func() ([]string, error), note io.Writer) (string, error) {
	if flag != "" {
		return flag, nil
	}
	names, err := list()
	if err != nil {
		return "", err
	}
	switch len(names) {
	case 0:
		return "", errors.New("no testbed is up (run `netstation up`)")
	case 1:
		return names[0], nil
	}
	if slices.Contains(names, "default") {
		fmt.Fprintf(note, "netstation: using testbed default (up: %s; choose another with -t)\n", strings.Join(names, ", "))
		return "default", nil
	}
	return "", fmt.Errorf("several testbeds are up (%s) and none is named default: choose one with -t", strings.Join(names, ", "))
}

func newUpCmd() *cobra.Command {
	var file string
	var timeout time.Duration
	var quiet bool
	c := &cobra.Command{
		Use:   "up [-f topology.yaml]",
		Short: "Bring a testbed up (the embedded default testbed without -f)",
		Long: `Bring a testbed up: one network namespace per peripheral, a bridge fabric in a
namespace of its own, and one supervised peripheral process per node. Without
-f, the embedded default testbed (cpu0, disk0, display0) comes up. Running up
again on a testbed that is up is a no-op.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := loadTopology(file)
			if err != nil {
				return err
			}
			if len(t.Hosts) > 0 {
				return upMultiHost(cmd, file, timeout, quiet) // agent.go
			}
			t0 := time.Now()
			opt := testbed.UpOptions{Timeout: timeout}
			// Host-wide changes are said even with -q.
			opt.Notice = func(s string) { fmt.Fprintf(os.Stderr, "netstation: %s\n", s) }
			var prog *upProgress
			if !quiet && isTerminal(os.Stderr) {
				prog = &upProgress{out: os.Stderr, start: t0}
				opt.Progress = prog.show
			}
			plan, err := testbed.Up(cmd.Context(), t, opt)
			prog.done()
			if err != nil {
				return err
			}
			if !quiet {
				fmt.Printf("testbed %s up: %d peripherals on %s in %.2fs\n", plan.Testbed, len(plan.Nodes), plan.Subnet, time.Since(t0).Seconds())
				for _, n := range plan.Nodes {
					fmt.Printf("  %-12s %-8s %-15s %s\n", n.Name, n.Kind, n.Addr.Addr(), n.MAC)
				}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "topology file (YAML)")
	c.Flags().DurationVar(&timeout, "timeout", 0, "give up if the testbed is not ready by then (default 90 s, longer for testbeds over 400 nodes)")
	c.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing on success")
	return c
}

// upProgress shows a bring-up's counts on a terminal, on one line that it
// rewrites, once up has taken longer than progressAfter (a small testbed
// comes up before anything is shown).
type upProgress struct {
	out   io.Writer
	start time.Time
	last  time.Time
	shown bool
}

func (u *upProgress) show(p testbed.Progress) {
	now := time.Now()
	if now.Sub(u.start) < progressAfter || now.Sub(u.last) < 100*time.Millisecond || p.Nodes == 0 {
		return
	}
	u.last, u.shown = now, true
	fmt.Fprintf(u.out, "\r%5.1fs  %s: namespaces %d/%d  started %d/%d  ready %d/%d \033[K",
		now.Sub(u.start).Seconds(), p.Phase, p.Namespaces, p.Nodes, p.Started, p.Nodes, p.Ready, p.Nodes)
}

// done ends the progress line, if one was shown.
func (u *upProgress) done() {
	if u != nil && u.shown {
		fmt.Fprint(u.out, "\r\033[K")
	}
}

func newDownCmd() *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:   "down [NAME] | --all",
		Short: "Remove a testbed (or every testbed) completely",
		Long: `Remove a testbed: its processes, namespaces, links and state. Works after a
crash or kill -9 of any part, from the state journal and the testbed's name
prefix. Namespaces with the name's prefix that this state directory
(NETSTATION_STATE_DIR) has no record of are swept as leftovers, unless
processes still run in them: then the testbed belongs to another state
directory, and down refuses and names them.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if all {
				if len(args) > 0 {
					return errors.New("give a NAME or --all, not both")
				}
				// A testbed with a part here goes from every host.
				for _, n := range cluster.LocalTestbeds() {
					if _, err := downMultiHost(cmd, n); err != nil {
						return err
					}
				}
				names, err := testbed.DownAll(cmd.Context())
				for _, n := range names {
					fmt.Printf("testbed %s down\n", n)
				}
				return err
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			if name != "" {
				if handled, err := downMultiHost(cmd, name); handled {
					return err
				}
			}
			name, err := pickTestbed(name)
			if err != nil {
				return err
			}
			if err := testbed.Down(cmd.Context(), name); err != nil {
				return err
			}
			fmt.Printf("testbed %s down\n", name)
			return nil
		},
	}
	c.Flags().BoolVar(&all, "all", false, "remove every testbed")
	return c
}

func newStatusCmd() *cobra.Command {
	var name, output string
	var full bool
	c := &cobra.Command{
		Use:   "status [-t NAME] [-o table|json]",
		Short: "Show the peripherals of a testbed with their state and counters",
		Long: `Show the peripherals of the testbeds that are up (or of -t's) with their state
and counters. -o json prints a JSON list with one object per testbed, with or
without -t (a list of one): {name, subnet, phase, pid, nodes: [{name, kind, ip,
mac, pid, state, restarts, rx, tx, drops, services, ...}], ...}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			names := []string{name}
			if name == "" {
				var err error
				if names, err = testbed.List(); err != nil {
					return err
				}
				for _, n := range cluster.Testbeds(cmd.Context()) {
					if !slices.Contains(names, n) {
						names = append(names, n)
					}
				}
				if len(names) == 0 {
					return errors.New("no testbed is up (run `netstation up`)")
				}
			}
			var all []testbed.Status
			for _, n := range names {
				ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
				st, err := cluster.Status(ctx, n)
				cancel()
				if err != nil {
					return err
				}
				all = append(all, st)
			}
			switch output {
			case "json":
				// One shape with and without -t: a list of testbeds
				// (docs/CLI.md; TestJSONShapes keeps it).
				return printJSON(all)
			case "table", "":
				for i, st := range all {
					if i > 0 {
						fmt.Println()
					}
					if full || len(st.Nodes) <= statusTableMax {
						printStatus(os.Stdout, st)
					} else {
						printStatusSummary(os.Stdout, st)
					}
				}
				return nil
			}
			return fmt.Errorf("unknown output format %q (table or json)", output)
		},
	}
	c.Flags().BoolVar(&full, "all", false, "the full table, however many nodes (default: a summary above "+fmt.Sprint(statusTableMax)+")")
	c.Flags().StringVarP(&name, "testbed", "t", "", "testbed name (default: all)")
	c.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return c
}

// statusTableMax is the most nodes `status` lists one per line by default;
// above it, printStatusSummary.
const statusTableMax = 50

// statusProblemsShown is how many problem nodes the summary lists.
const statusProblemsShown = 10

// printStatusSummary shows a large testbed in a few lines: nodes per
// state and kind, totals, and the first nodes with a problem (not
// running, restarted, or dropping), each as a line of the full table.
func printStatusSummary(w io.Writer, st testbed.Status) {
	fmt.Fprintf(w, "testbed %s (%s): %s", st.Name, st.Subnet, st.Phase)
	if st.Error != "" {
		fmt.Fprintf(w, ": %s", st.Error)
	}
	fmt.Fprintln(w)
	if st.Templates != "" && st.Templates != testbed.TemplatesOn {
		fmt.Fprintf(w, "kernel transmit templates %s\n", st.Templates)
	}
	states, kinds := map[string]int{}, map[string]int{}
	var restarts int
	var rx, tx, drops uint64
	var problems []testbed.NodeStatus
	nproblems := 0
	for _, n := range st.Nodes {
		states[n.State]++
		kinds[n.Kind]++
		restarts += n.Restarts
		rx, tx, drops = rx+n.RX, tx+n.TX, drops+n.Drops
		if n.State != testbed.StateRunning || n.Restarts > 0 {
			nproblems++
			if len(problems) < statusProblemsShown {
				problems = append(problems, n)
			}
		}
	}
	counts := func(m map[string]int) string {
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
		}
		return strings.Join(parts, ", ")
	}
	fmt.Fprintf(w, "%d nodes: %s (%s)\n", len(st.Nodes), counts(states), counts(kinds))
	fmt.Fprintf(w, "restarts %d, frames rx %d tx %d, drops %d\n", restarts, rx, tx, drops)
	if nproblems == 0 {
		fmt.Fprintln(w, "no problems (the table of every node: --all; everything: -o json)")
		return
	}
	fmt.Fprintf(w, "%d nodes not running or restarted; the first %d (all: --all or -o json):\n", nproblems, len(problems))
	printNodeTable(w, problems)
}

func printStatus(w io.Writer, st testbed.Status) {
	fmt.Fprintf(w, "testbed %s (%s): %s", st.Name, st.Subnet, st.Phase)
	if st.Error != "" {
		fmt.Fprintf(w, ": %s", st.Error)
	}
	fmt.Fprintln(w)
	if st.Templates != "" { // as status -w shows it
		fmt.Fprintf(w, "kernel transmit templates %s\n", st.Templates)
	}
	printNodeTable(w, st.Nodes)
}

// printNodeTable prints nodes one per line.
func printNodeTable(w io.Writer, nodes []testbed.NodeStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	multi := slices.ContainsFunc(nodes, func(n testbed.NodeStatus) bool { return n.Host != "" })
	host := func(n testbed.NodeStatus) string {
		if multi {
			return n.Host + "\t"
		}
		return ""
	}
	if multi {
		fmt.Fprint(tw, "HOST\t")
	}
	fmt.Fprintln(tw, "NODE\tKIND\tIP\tMAC\tPID\tSTATE\tRESTARTS\tRX\tTX\tDROPS\tSERVICES")
	for _, n := range nodes {
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%s\n", host(n), n.Name, n.Kind, n.IP, n.MAC, n.PID,
			n.State, n.Restarts, n.RX, n.TX, n.Drops, strings.Join(n.Services, ","))
	}
	tw.Flush()
}

func newExecCmd() *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:   "exec NODE -- CMD [ARGS...]",
		Short: "Run a command inside a peripheral's network namespace",
		Long: `Run a command inside a peripheral's network namespace, with this terminal's
standard input and output. Note that the peripheral's IP address belongs to
its user-level stack, not to the kernel: kernel tools in the namespace see
the veth with no address.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			tb, err := pickTestbed(name)
			if err != nil {
				return err
			}
			x := exec.Command(args[1], args[2:]...)
			x.Stdin, x.Stdout, x.Stderr = os.Stdin, os.Stdout, os.Stderr
			if err := testbed.Exec(tb, args[0], x); err != nil {
				return err
			}
			// Forward interrupts to the child; it decides.
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sig)
			go func() {
				for s := range sig {
					_ = x.Process.Signal(s)
				}
			}()
			err = x.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return exitError{ee.ExitCode()}
			}
			return err
		},
	}
	c.Flags().StringVarP(&name, "testbed", "t", "", "testbed name")
	return c
}

// levelFilter copies whole lines, leaving out slog lines below min (lines
// without a level, such as a panic's, always pass).
type levelFilter struct {
	w       io.Writer
	min     slog.Level
	partial []byte
}

func (f *levelFilter) Write(b []byte) (int, error) {
	f.partial = append(f.partial, b...)
	for {
		i := bytes.IndexByte(f.partial, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := f.partial[:i+1]
		if f.keep(line) {
			if _, err := f.w.Write(line); err != nil {
				return 0, err
			}
		}
		f.partial = f.partial[i+1:]
	}
}

func (f *levelFilter) keep(line []byte) bool {
	_, rest, ok := bytes.Cut(line, []byte(" level="))
	if !ok {
		return true
	}
	word, _, _ := bytes.Cut(rest, []byte(" "))
	var l slog.Level
	if l.UnmarshalText(word) != nil {
		return true
	}
	return l >= f.min
}

func newLogsCmd() *cobra.Command {
	var name, level string
	var follow bool
	c := &cobra.Command{
		Use:   "logs NODE|supervisor",
		Short: "Print a peripheral's (or the supervisor's) log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tb, err := pickTestbed(name)
			if err != nil {
				return err
			}
			path := testbed.NodeLog(testbed.Dir(tb), args[0])
			if args[0] == "supervisor" {
				path = testbed.Dir(tb) + "/supervisor.log"
			} else if plan, err := testbed.LoadPlan(testbed.Dir(tb)); err == nil {
				if _, err := plan.Node(args[0]); err != nil {
					return err
				}
			}
			var min slog.Level
			if err := min.UnmarshalText([]byte(level)); err != nil {
				return fmt.Errorf("--level %q: want debug, info, warn or error", level)
			}
			f, err := os.Open(path)
			if err != nil {
				return fmt.Errorf("no log for %s in testbed %s", args[0], tb)
			}
			defer f.Close()
			out := &levelFilter{w: os.Stdout, min: min}
			for {
				if _, err := io.Copy(out, f); err != nil {
					return err
				}
				if !follow {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(200 * time.Millisecond):
				}
			}
		},
	}
	c.Flags().StringVarP(&name, "testbed", "t", "", "testbed name")
	c.Flags().StringVar(&level, "level", "info", "the least level shown: debug, info, warn or error")
	c.Flags().BoolVarP(&follow, "follow", "F", false, "keep printing as the log grows")
	return c
}

func newPingCmd() *cobra.Command {
	var name string
	var args peripherals.PingArgs
	c := &cobra.Command{
		Use:   "ping A B",
		Short: "Ping peripheral B (name or IP) from peripheral A over their user-level stacks",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, a []string) error {
			tb, err := pickTestbed(name)
			if err != nil {
				return err
			}
			fmt.Printf("PING %s -> %s (user-level stacks), %d data bytes\n", a[0], a[1], args.Size)
			sum, err := testbed.Ping(cmd.Context(), tb, a[0], a[1], args, func(r peripherals.PingReply) {
				if r.Error != "" {
					fmt.Printf("seq=%d %s\n", r.Seq, r.Error)
				} else {
					fmt.Printf("seq=%d time=%.1f us\n", r.Seq, r.RTTus)
				}
			})
			if err != nil {
				return err
			}
			loss := 100.0
			if sum.Sent > 0 {
				loss = 100 * float64(sum.Sent-sum.Received) / float64(sum.Sent)
			}
			fmt.Printf("%d sent, %d received, %.0f%% loss, rtt min/avg/max = %.1f/%.1f/%.1f us\n",
				sum.Sent, sum.Received, loss, sum.MinUs, sum.AvgUs, sum.MaxUs)
			if sum.Received == 0 {
				return fmt.Errorf("%s did not answer", a[1])
			}
			return nil
		},
	}
	c.Flags().StringVarP(&name, "testbed", "t", "", "testbed name")
	c.Flags().IntVarP(&args.Count, "count", "c", 3, "echo requests to send")
	c.Flags().IntVarP(&args.Size, "size", "s", 56, "payload bytes")
	c.Flags().DurationVarP(&args.Interval, "interval", "i", 200*time.Millisecond, "between requests")
	c.Flags().DurationVarP(&args.Timeout, "wait", "W", time.Second, "time to wait for each reply")
	return c
}

func newGraphCmd() *cobra.Command {
	var file, format, tb string
	c := &cobra.Command{
		Use:   "graph [-f topology.yaml | -t NAME] [--format dot|mermaid]",
		Short: "Draw a topology as Graphviz DOT or Mermaid",
		Long: `Draw a topology as Graphviz DOT or Mermaid: each segment a switch, each node
with its kind, address and parameters, each link with what it does to frames
(rate, loss, corruption, delay, or DOWN). With -f, the file's topology. Without
it, the running testbed (-t, or the one up, as other commands choose) with its
links as they are now (link set, link down); with none up, the embedded
default testbed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var t *spec.Topology
			up, _ := testbed.List()
			if file == "" && (tb != "" || len(up) > 0) {
				name, err := pickTestbed(tb)
				if err != nil {
					return err
				}
				if t, err = testbed.LiveTopology(cmd.Context(), name); err != nil {
					return err
				}
			} else {
				var err error
				if t, err = loadTopology(file); err != nil {
					return err
				}
				if err := t.Resolve(defaultGraphSubnet(t)); err != nil {
					return err
				}
			}
			switch format {
			case "dot":
				fmt.Print(t.DOT())
			case "mermaid":
				fmt.Print(t.Mermaid())
			default:
				return fmt.Errorf("unknown format %q (dot or mermaid)", format)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "topology file (default: the running testbed, else the embedded default)")
	c.Flags().StringVarP(&tb, "testbed", "t", "", "running testbed to draw")
	c.Flags().StringVar(&format, "format", "dot", "dot or mermaid")
	return c
}

func newValidateCmd() *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "validate -f topology.yaml",
		Short: "Check a topology file without creating anything",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("validate needs -f FILE")
			}
			t, err := spec.Load(file)
			if err != nil {
				return err
			}
			fmt.Printf("%s: ok (testbed %s, %d nodes, %d segments)\n", file, t.Name, len(t.Nodes), max(len(t.Segments), 1))
			for _, w := range t.Warnings() {
				fmt.Printf("%s: warning: %s\n", file, w)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "topology file")
	return c
}

func newSuperviseCmd() *cobra.Command {
	var dir string
	return hidden(&cobra.Command{
		Use:   "supervise --state DIR",
		Short: "Run a testbed's supervisor (started by up)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			defer profile("supervisor")()
			return testbed.RunSupervisor(cmd.Context(), dir, slog.New(slog.NewTextHandler(os.Stderr, nil)))
		},
	}, &dir)
}

// profile starts the CPU profile of a testbed process named name when
// $NETSTATION_CPUPROFILE_DIR is set, and returns what stops it and writes
// a heap profile beside it (name.pprof, name.heap.pprof; for `go tool
// pprof`): how a testbed's start-up and steady state are measured.
func profile(name string) (stop func()) {
	pd := os.Getenv("NETSTATION_CPUPROFILE_DIR")
	if pd == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(pd, name+".pprof"))
	if err != nil || pprof.StartCPUProfile(f) != nil {
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		if h, err := os.Create(filepath.Join(pd, name+".heap.pprof")); err == nil {
			_ = pprof.Lookup("heap").WriteTo(h, 0)
			h.Close()
		}
	}
}

func newNodeCmd() *cobra.Command {
	nodeCmd := &cobra.Command{Use: "node", Short: "Peripheral processes (started by the supervisor)", Hidden: true}
	var dir, name string
	run := &cobra.Command{
		Use:   "run --state DIR --name NODE",
		Short: "Run one peripheral inside its namespace",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// $NETSTATION_CPUPROFILE_DIR: each peripheral writes its
			// profiles there when it stops.
			defer profile(name)()
			// Everything down to debug goes to the node's log file;
			// `netstation logs` shows info and above unless --level debug.
			cfg, err := testbed.NodeConfig(dir, name, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
			if err != nil {
				return err
			}
			return node.Run(cmd.Context(), cfg)
		},
	}
	run.Flags().StringVar(&dir, "state", "", "testbed state directory")
	run.Flags().StringVar(&name, "name", "", "node name")
	nodeCmd.AddCommand(run)
	return nodeCmd
}

func hidden(c *cobra.Command, dir *string) *cobra.Command {
	c.Hidden = true
	c.Flags().StringVar(dir, "state", "", "testbed state directory")
	return c
}
