package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

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

func newBenchCmd() *cobra.Command {
	var (
		tb, from, to, sizes, stacks, plotPath string
		dur                                   time.Duration
		parallel, rttCount                    int
		rate                                  string
		jsonOut, matrix, noGSO                bool
	)
	c := &cobra.Command{
		Use:   "bench [--from A --to B | --matrix] [--size 64..65507] [--time 10s] [--parallel N] [--stack user|kernel|both] [-J] [--plot out.png]",
		Short: "Measure peer-to-peer UDP throughput, loss, jitter and RTT, user-level stack beside the kernel's",
		Long: `Measure peer-to-peer throughput between peripherals: a receiver in one, a
sender in the other, both inside the testbed's namespaces. --stack both (the
default) runs the peripherals' user-level stacks and then the kernel's UDP
sockets over the same fabric (a temporary kernel address in 198.18.0.0/15 on
each port) and prints the ratio. Output is shaped like iperf3's; -J prints
JSON with iperf3's field names; --plot draws throughput against datagram
size for both stacks.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			szs, err := parseSizes(sizes)
			if err != nil {
				return err
			}
			var stackList []string
			switch stacks {
			case "both":
				stackList = []string{"user", "kernel"}
			case "user", "kernel":
				stackList = []string{stacks}
			default:
				return fmt.Errorf("--stack must be user, kernel or both")
			}
			bps := 0.0
			if rate != "" && rate != "0" {
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
			pairs := [][2]string{{from, to}}
			if matrix {
				pairs = nil
				for _, a := range plan.Nodes {
					for _, b := range plan.Nodes {
						if a.Name != b.Name {
							pairs = append(pairs, [2]string{a.Name, b.Name})
						}
					}
				}
			} else if from == "" || to == "" {
				if len(plan.Nodes) < 2 {
					return errors.New("bench needs two peripherals")
				}
				if from == "" {
					from = plan.Nodes[0].Name
				}
				if to == "" {
					to = plan.Nodes[1].Name
					if to == from {
						to = plan.Nodes[0].Name
					}
				}
				pairs = [][2]string{{from, to}}
			}
			live := !jsonOut && isTerminal(os.Stderr)
			var runs []*bench.Report
			var labels []runLabel
			for _, pr := range pairs {
				for _, size := range szs {
					for _, st := range stackList {
						if live {
							fmt.Fprintf(os.Stderr, "%s -> %s, %d B, %s stack ...\n", pr[0], pr[1], size, st)
						}
						rep, err := testbed.Bench(cmd.Context(), name, testbed.BenchArgs{
							From: pr[0], To: pr[1], Stack: st, Size: size, Duration: dur, Parallel: parallel,
							Rate: bps, RTTCount: rttCount, NoGSO: noGSO,
						}, func(iv bench.Interval) {
							if live {
								bench.WriteInterval(os.Stderr, iv, true)
							}
						})
						if err != nil {
							return fmt.Errorf("%s -> %s (%s stack, %d B): %w", pr[0], pr[1], st, size, err)
						}
						runs = append(runs, rep)
						labels = append(labels, runLabel{From: pr[0], To: pr[1], Size: size})
						if !jsonOut && !matrix && len(szs) == 1 {
							fmt.Printf("\n== %s -> %s, %s stack\n", pr[0], pr[1], st)
							if err := rep.Text(os.Stdout); err != nil {
								return err
							}
						}
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
				if len(runs) == 1 {
					return enc.Encode(runs[0])
				}
				return enc.Encode(map[string]any{"runs": runs, "summary": summarize(runs, labels)})
			}
			printSummary(os.Stdout, summarize(runs, labels))
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
	f.StringVar(&stacks, "stack", "both", "user, kernel or both")
	f.StringVarP(&rate, "bitrate", "b", "", "target rate per run, e.g. 500mbit (default: as fast as possible)")
	f.IntVar(&rttCount, "rtt", 2000, "request/response pings after each run for RTT percentiles (0: none)")
	f.BoolVarP(&jsonOut, "json", "J", false, "JSON with iperf3's field names")
	f.BoolVar(&noGSO, "no-gso", false, "user-level stack: one frame per datagram (no UDP segmentation offload), like the kernel baseline's sockets")
	f.StringVar(&plotPath, "plot", "", "draw throughput against datagram size into this PNG")
	return c
}

// summaryRow is one (pair, size) with both stacks side by side.
type summaryRow struct {
	From       string  `json:"from"`
	To         string  `json:"to"`
	Size       int     `json:"size"`
	UserGbps   float64 `json:"user_gbit_per_second,omitempty"`
	UserKpps   float64 `json:"user_kpps,omitempty"`
	UserLoss   float64 `json:"user_lost_percent"`
	UserP50us  float64 `json:"user_rtt_p50_us,omitempty"`
	KernGbps   float64 `json:"kernel_gbit_per_second,omitempty"`
	KernKpps   float64 `json:"kernel_kpps,omitempty"`
	KernLoss   float64 `json:"kernel_lost_percent"`
	KernP50us  float64 `json:"kernel_rtt_p50_us,omitempty"`
	Ratio      float64 `json:"ratio_user_over_kernel,omitempty"`
	RatioRTT50 float64 `json:"rtt_p50_ratio_user_over_kernel,omitempty"`
}

// runLabel names what a run measured, whatever addresses its stack used.
type runLabel struct {
	From, To string
	Size     int
}

func summarize(runs []*bench.Report, labels []runLabel) []summaryRow {
	var rows []summaryRow
	idx := map[runLabel]int{}
	for k, r := range runs {
		key := labels[k]
		p := bench.PointOf(r)
		i, ok := idx[key]
		if !ok {
			i = len(rows)
			idx[key] = i
			rows = append(rows, summaryRow{From: key.From, To: key.To, Size: key.Size})
		}
		row := &rows[i]
		var p50 float64
		if r.Netstation.RTT != nil {
			p50 = r.Netstation.RTT.P50Us
		}
		loss := 0.0
		if r.End.Sum.LossFigures != nil {
			loss = r.End.Sum.LostPercent
		}
		if p.Stack == "kernel" {
			row.KernGbps, row.KernKpps, row.KernLoss, row.KernP50us = p.BitsPerSecond/1e9, p.PacketsPerSecond/1e3, loss, p50
		} else {
			row.UserGbps, row.UserKpps, row.UserLoss, row.UserP50us = p.BitsPerSecond/1e9, p.PacketsPerSecond/1e3, loss, p50
		}
		if row.KernGbps > 0 && row.UserGbps > 0 {
			row.Ratio = row.UserGbps / row.KernGbps
		}
		if row.KernP50us > 0 && row.UserP50us > 0 {
			row.RatioRTT50 = row.UserP50us / row.KernP50us
		}
	}
	return rows
}

func printSummary(w io.Writer, rows []summaryRow) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "from\tto\tsize B\tuser Gbit/s\tuser kpps\tuser loss %\tuser RTT p50 us\tkernel Gbit/s\tkernel kpps\tkernel loss %\tkernel RTT p50 us\tuser/kernel\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.3f\t%.1f\t%.2f\t%.1f\t%.3f\t%.1f\t%.2f\t%.1f\t%s\t\n", r.From, r.To, r.Size,
			r.UserGbps, r.UserKpps, r.UserLoss, r.UserP50us, r.KernGbps, r.KernKpps, r.KernLoss, r.KernP50us, ratioStr(r.Ratio))
	}
	tw.Flush()
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
