package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/bench"
	"github.com/netstation/netstation/testbed"
	"github.com/spf13/cobra"
)

// benchSizes are the points of a --size A..B sweep.
var benchSizes = []int{64, 128, 256, 512, 1024, 1472, 4096, 8192, 16384, 32768, 65507}

// parseSizes reads "1472", "64,1472,9000" or "64..65507" (a sweep over
// benchSizes within the range, ends included).
func parseSizes(s string) ([]int, error) {
	if lo, hi, ok := strings.Cut(s, ".."); ok {
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || a > b {
			return nil, fmt.Errorf("bad size range %q (want e.g. 64..65507)", s)
		}
		out := []int{a}
		for _, v := range benchSizes {
			if v > a && v < b {
				out = append(out, v)
			}
		}
		if b != a {
			out = append(out, b)
		}
		return out, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("bad size %q", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// benchStacks maps --stack to the stacks run, in order. With --no-gso
// the kernel's best and plain modes are the same thing: kernel-plain.
func benchStacks(flag string, noGSO bool) ([]string, error) {
	var out []string
	switch flag {
	case "both":
		out = []string{peripherals.StackUser, peripherals.StackKernel}
	case "all":
		out = []string{peripherals.StackUser, peripherals.StackKernel, peripherals.StackKernelPlain}
	case peripherals.StackUser, peripherals.StackKernel, peripherals.StackKernelPlain:
		out = []string{flag}
	default:
		return nil, fmt.Errorf("--stack must be user, kernel, kernel-plain, both or all")
	}
	if !noGSO {
		return out, nil
	}
	var d []string
	for _, s := range out {
		if s == peripherals.StackKernel {
			s = peripherals.StackKernelPlain
		}
		if !slices.Contains(d, s) {
			d = append(d, s)
		}
	}
	return d, nil
}

func newBenchCmd() *cobra.Command {
	var (
		tb, from, to, sizes, stacks, plotPath string
		dur                                   time.Duration
		parallel, rttCount                    int
		rttPoll                               time.Duration
		rate                                  string
		jsonOut, matrix, noGSO, reference     bool
	)
	c := &cobra.Command{
		Use:   "bench [--from A --to B | --matrix] [--size 64..65507] [--time 10s] [--parallel N] [--stack user|kernel|kernel-plain|both|all] [-b auto|max|RATE] [-J] [--plot out.png]",
		Short: "Measure peer-to-peer UDP throughput, loss, jitter and RTT, user-level stack beside the kernel at its best",
		Long: fmt.Sprintf(`Measure peer-to-peer throughput between peripherals: a receiver in one, a
sender in the other, both inside the testbed's namespaces.

Stacks (--stack): user is the peripherals' user-level stacks; kernel is the
kernel's UDP sockets at their best (UDP_SEGMENT super-datagrams on send,
UDP_GRO on receive, 64 MiB buffers, sendmmsg/recvmmsg) on a temporary
kernel address in 198.18.0.0/15 on each port; kernel-plain is the kernel's
sockets sending one frame per datagram (no UDP_SEGMENT/GRO). both (the
default) is user + kernel, all is the three. The ratio is always the
user-level stack over the best kernel configuration measured in the run.
--no-gso turns segmentation offload off on every stack (user and kernel
alike: kernel means kernel-plain then), to compare like with like.

Rate (-b): auto (the default) lets the receiver slow the sender: the
receiving application reports how far it has read (every %d datagrams,
in-band on the test's own sockets) and each stream stays at most %d
datagrams ahead of that, so the figure is what the receiver sustains, not
what an unpaced sender threw away at its buffers (iperf3 paces UDP by
default for the same reason; this is a window, as in TCP, so no rate has to
be guessed). max sends as fast as possible, to see the overflow; a run whose
receiver dropped more than a few percent says so beside its figure. A rate
(e.g. 500mbit) paces the sender at it, without credit. The figure is always
what the receiver kept; loss is split into loss on the way and overflow at
the receiver (its socket queue or, for the user-level stack, its ring).

--reference also runs, for each size, a standalone kernel sender/receiver
pair between the same two ports (UDP_SEGMENT + UDP_GRO written directly on
the kernel's system calls, nothing of netstation's in its data path,
unpaced) and prints the kernel baseline's throughput as a fraction of it:
the check that bench's kernel is the kernel at its best (root testbeds).
It takes three alternating rounds (bench's kernel baseline unpaced, then
the pair) and reports medians, so one busy moment does not decide it.

RTT (--rtt N): N request/response pings of 64 B after each run, taken twice:
both peripherals' processes pinned to one CPU, then to two different CPUs
(every thread, sched_setaffinity); p50, p99 and p99.9 of each. The user
stack's readers poll the link for --rtt-poll before they sleep; a kernel
run then takes its round trips again on sockets that do the same
(SO_BUSY_POLL for --rtt-poll, the ports' GRO on so their packets come
through NAPI): the kernel-busypoll rows, the kernel at its best for
latency. A kernel that refuses SO_BUSY_POLL (rootless testbeds) gets a
note instead. The user stack's rows end with its p50 and p99 over the
best kernel's in the same pinning (the kernel configuration with the
lowest p50 there). The peripherals' own receive path counts: a node
whose topology says link: {rx: framering} (or every node of a testbed
brought up with NETSTATION_LINK_RX=framering in the environment) reads
its port from a TPACKET_V2 ring that polling readers read with no system
call, the lowest-latency path (the default, recvmmsg, suits bulk
receive); "link show" names each node's. See docs/ARCHITECTURE.md,
"Request/response latency".

Output is shaped like iperf3's. -J prints one JSON object whatever the
stacks and sizes: {"runs": [...], "summary": [...], "reference": [...]}, where
each run is an iperf3 -J report (start, intervals, end, with iperf3's field
names, plus a "netstation" object) and summary has a row per pair and size
with every stack side by side. --plot draws throughput against datagram size,
one curve per stack.`, bench.DefaultWindow/4, bench.DefaultWindow),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			szs, err := parseSizes(sizes)
			if err != nil {
				return err
			}
			stackList, err := benchStacks(stacks, noGSO)
			if err != nil {
				return err
			}
			bps := 0.0
			switch rate {
			case "", "auto":
				bps = testbed.RateAuto
			case "0", "max":
			default:
				r, err := parseRateFlag(rate)
				if err != nil {
					return err
				}
				bps = r
			}
			name, err := pickTestbed(tb)
			if err != nil {
				return err
			}
			plan, err := testbed.LoadPlan(testbed.Dir(name))
			if err != nil {
				return err
			}
			pairs, err := plan.BenchPairs(from, to, matrix)
			if err != nil {
				return err
			}
			live := !jsonOut && isTerminal(os.Stderr)
			var runs []*bench.Report
			var labels []testbed.BenchLabel
			var refs []*testbed.RefComparison
			for _, pr := range pairs {
				for _, size := range szs {
					for _, st := range stackList {
						if live {
							fmt.Fprintf(os.Stderr, "%s -> %s, %d B, %s stack ...\n", pr[0], pr[1], size, st)
						}
						rep, err := testbed.Bench(cmd.Context(), name, testbed.BenchArgs{
							From: pr[0], To: pr[1], Stack: st, Size: size, Duration: dur, Parallel: parallel,
							Rate: bps, RTTCount: rttCount, RTTPoll: rttPoll, NoGSO: noGSO,
						}, func(iv bench.Interval) {
							if live {
								bench.WriteInterval(os.Stderr, iv, true)
							}
						})
						if err != nil {
							return fmt.Errorf("%s -> %s (%s stack, %d B): %w", pr[0], pr[1], st, size, err)
						}
						runs = append(runs, rep)
						labels = append(labels, testbed.BenchLabel{From: pr[0], To: pr[1], Size: size})
						if !jsonOut && !matrix && len(szs) == 1 {
							fmt.Printf("\n== %s -> %s, %s stack\n", pr[0], pr[1], st)
							if err := rep.Text(os.Stdout); err != nil {
								return err
							}
						}
					}
					if reference {
						if live {
							fmt.Fprintf(os.Stderr, "%s -> %s, %d B, standalone kernel reference pair ...\n", pr[0], pr[1], size)
						}
						cmp := &testbed.RefComparison{From: pr[0], To: pr[1], Size: size}
						for round := 0; round < testbed.RefRounds; round++ {
							krep, err := testbed.Bench(cmd.Context(), name, testbed.BenchArgs{
								From: pr[0], To: pr[1], Stack: peripherals.StackKernel, Size: size, Duration: dur, Parallel: parallel,
							}, nil)
							if err != nil {
								return fmt.Errorf("%s -> %s (kernel, reference round, %d B): %w", pr[0], pr[1], size, err)
							}
							ref, err := testbed.BenchReference(cmd.Context(), name, pr[0], pr[1], size, dur)
							if err != nil {
								return fmt.Errorf("%s -> %s (reference pair, %d B): %w", pr[0], pr[1], size, err)
							}
							cmp.Rounds = append(cmp.Rounds, testbed.RefRound{Kernel: bench.PointOf(krep).BitsPerSecond / 1e9, KernelCPUns: krep.Netstation.CPUNanosPerDatagram,
								Reference: ref, ReferenceGbps: ref.BitsPerSecondReceived / 1e9})
						}
						cmp.Finish()
						refs = append(refs, cmp)
					}
				}
			}
			if plotPath != "" {
				var pts []bench.Point
				for _, r := range runs {
					pts = append(pts, bench.PointOf(r))
				}
				f, err := os.Create(plotPath)
				if err != nil {
					return err
				}
				perr := bench.Plot(f, fmt.Sprintf("%s -> %s", pairs[0][0], pairs[0][1]), pts)
				if cerr := f.Close(); perr == nil {
					perr = cerr
				}
				if perr != nil {
					return perr
				}
			}
			if jsonOut {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "\t")
				// One shape for every --stack and size list (docs/CLI.md;
				// TestJSONShapes keeps it): each run is an iperf3 -J report.
				return enc.Encode(testbed.BenchJSON{Runs: runs, Summary: testbed.WithReference(testbed.BenchSummary(runs, labels), refs), Reference: refs})
			}
			printSummary(os.Stdout, testbed.WithReference(testbed.BenchSummary(runs, labels), refs))
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&tb, "testbed", "t", "", "testbed name")
	f.StringVar(&from, "from", "", "sending peripheral (default: the first node)")
	f.StringVar(&to, "to", "", "receiving peripheral (default: the second node)")
	f.BoolVar(&matrix, "matrix", false, "every ordered pair of peripherals")
	f.StringVar(&sizes, "size", "1472", "datagram payload bytes: N, a list, or a sweep A..B")
	f.DurationVar(&dur, "time", 10*time.Second, "duration of each run")
	f.IntVarP(&parallel, "parallel", "P", 1, "parallel streams")
	f.StringVar(&stacks, "stack", "both", "user, kernel (UDP_SEGMENT+UDP_GRO), kernel-plain (a frame per datagram), both (user+kernel) or all")
	f.StringVarP(&rate, "bitrate", "b", "auto", fmt.Sprintf("sender rate: auto (held by the receiver: at most %d datagrams per stream ahead of what it read), max (unpaced) or a rate, e.g. 500mbit", bench.DefaultWindow))
	f.IntVar(&rttCount, "rtt", 10000, "request/response pings after each run, per pinning (one CPU, two CPUs) (0: none)")
	f.DurationVar(&rttPoll, "rtt-poll", 200*time.Microsecond, "user stack: how long a round trip's reader drives the link itself before it sleeps (run to completion, as SO_BUSY_POLL; 0: off)")
	f.BoolVarP(&jsonOut, "json", "J", false, "JSON with iperf3's field names")
	f.BoolVar(&noGSO, "no-gso", false, "one frame per datagram on every stack: the user-level stack without GSO, the kernel without UDP_SEGMENT/UDP_GRO (kernel-plain)")
	f.StringVar(&plotPath, "plot", "", "draw throughput against datagram size into this PNG")
	f.BoolVar(&reference, "reference", false, "also run a standalone UDP_SEGMENT+UDP_GRO kernel pair between the same ports and compare the kernel baseline with it")
	return c
}

// cpuStr formats a CPU cost figure, "-" when it was not measured.
func cpuStr(v float64, format string) string {
	if v <= 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func printSummary(w io.Writer, rows []testbed.BenchSummaryRow) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	cols := []struct {
		name string
		get  func(testbed.BenchSummaryRow) *testbed.BenchFigures
	}{
		{"user", func(r testbed.BenchSummaryRow) *testbed.BenchFigures { return r.User }},
		{"kernel", func(r testbed.BenchSummaryRow) *testbed.BenchFigures { return r.KernelBest }},
		{"kernel-plain", func(r testbed.BenchSummaryRow) *testbed.BenchFigures { return r.KernelPlain }},
	}
	var used []int
	for i, c := range cols {
		for _, r := range rows {
			if c.get(r) != nil {
				used = append(used, i)
				break
			}
		}
	}
	head := "from\tto\tsize B\t"
	for _, i := range used {
		n := cols[i].name
		head += n + " Gbit/s\t" + n + " kpps\t" + n + " loss way/rcvr %\t" + n + " cpu s/GB\t" + n + " cpu ns/dgram\t"
	}
	hasRef := false
	for _, r := range rows {
		hasRef = hasRef || r.Reference != nil
	}
	if hasRef {
		head += fmt.Sprintf("user/best kernel\treference pair Gbit/s\treference kpps\treference cpu ns/dgram\tkernel/reference (median of %d rounds)\t", testbed.RefRounds)
	} else {
		head += "user/best kernel\t"
	}
	fmt.Fprintln(tw, head)
	var notes []string
	for _, r := range rows {
		line := fmt.Sprintf("%s\t%s\t%d\t", r.From, r.To, r.Size)
		for _, i := range used {
			f := cols[i].get(r)
			if f == nil {
				line += "-\t-\t-\t-\t-\t"
				continue
			}
			mark := ""
			if f.Overflow > bench.OverflowWarnPercent {
				mark = " !"
				notes = append(notes, fmt.Sprintf("%s %d B: the receiver dropped %.1f%% (the figure is what it kept)", cols[i].name, r.Size, f.Overflow))
			}
			line += fmt.Sprintf("%.3f\t%.1f\t%.2f/%.2f%s\t%s\t%s\t", f.Gbps, f.Kpps, f.LinkLost, f.Overflow, mark, cpuStr(f.CPUsPerGB, "%.3f"), cpuStr(f.CPUnsPerPkt, "%.0f"))
		}
		rs := ratioStr(r.Ratio)
		if r.Ratio > 0 {
			rs += " (vs " + r.BestKernel + ")"
		}
		line += rs + "\t"
		if hasRef {
			if r.Reference != nil {
				line += fmt.Sprintf("%.3f\t%.1f\t%s\t%s\t", r.Reference.Gbps, r.Reference.Kpps, cpuStr(r.Reference.CPUnsPerPkt, "%.0f"), ratioStr(r.RefRatio))
			} else {
				line += "-\t-\t-\t-\t"
			}
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	for _, n := range notes {
		fmt.Fprintln(w, "! "+n)
	}
	// Round trips, one line per stack and pinning.
	var lines, rttNotes []string
	for _, r := range rows {
		for _, i := range used {
			f := cols[i].get(r)
			if f == nil {
				continue
			}
			for _, rt := range []struct {
				stack string
				f     *testbed.BenchRTT
			}{{cols[i].name, f.RTTSame}, {cols[i].name, f.RTTCrossCPU}, {"kernel-busypoll", f.RTTBusyPollSame}, {"kernel-busypoll", f.RTTBusyPollCrossCPU}} {
				if rt.f != nil {
					vs := "\t\t"
					if v := r.RTTSame; cols[i].name == "user" && rt.f == f.RTTSame && v != nil {
						vs = fmt.Sprintf("%.2fx / %.2fx\t(vs %s)\t", v.P50Ratio, v.P99Ratio, v.BestKernel)
					} else if v := r.RTTCrossCPU; cols[i].name == "user" && rt.f == f.RTTCrossCPU && v != nil {
						vs = fmt.Sprintf("%.2fx / %.2fx\t(vs %s)\t", v.P50Ratio, v.P99Ratio, v.BestKernel)
					}
					lines = append(lines, fmt.Sprintf("%s\t%s\t%d\t%s\t%s\t%d\t%.1f\t%.1f\t%.1f\t%s", r.From, r.To, r.Size, rt.stack, rt.f.Pinning, rt.f.Count, rt.f.P50, rt.f.P99, rt.f.P999, vs))
				}
			}
			if f.RTTBusyPollError != "" {
				rttNotes = append(rttNotes, fmt.Sprintf("kernel-busypoll %d B: no figure: %s", r.Size, f.RTTBusyPollError))
			}
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "from\tto\tafter size B\tstack\tpinning\tround trips (64 B)\tRTT p50 us\tp99 us\tp99.9 us\tuser/best kernel p50 / p99\t\t")
	for _, l := range lines {
		fmt.Fprintln(tw, l)
	}
	tw.Flush()
	for _, n := range rttNotes {
		fmt.Fprintln(w, "! "+n)
	}
}

func ratioStr(r float64) string {
	if r == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", r)
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// parseRateFlag reads tc-style rates (500mbit) via the topology's parser.
func parseRateFlag(s string) (float64, error) {
	v, err := specParseRate(s)
	return float64(v), err
}
