package testbed

import (
	"slices"

	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/bench"
)

// BenchJSON is bench -J's one shape.
type BenchJSON struct {
	Runs      []*bench.Report   `json:"runs"`
	Summary   []BenchSummaryRow `json:"summary"`
	Reference []*RefComparison  `json:"reference,omitempty"`
}

// BenchFigures are one stack's figures in a summary row.
type BenchFigures struct {
	Gbps     float64 `json:"gbit_per_second"`
	Kpps     float64 `json:"kpps"`
	LinkLost float64 `json:"link_lost_percent"`
	Overflow float64 `json:"receiver_overflow_percent"`
	// CPUsPerGB and CPUnsPerPkt are both ends' process CPU time (user +
	// system) per GB and per datagram received (0: not measured).
	CPUsPerGB   float64   `json:"cpu_seconds_per_gb,omitempty"`
	CPUnsPerPkt float64   `json:"cpu_ns_per_datagram,omitempty"`
	RTTSame     *BenchRTT `json:"rtt_same_cpu,omitempty"`
	RTTCrossCPU *BenchRTT `json:"rtt_cross_cpu,omitempty"`
	// The kernel's round trips again on busy-polling sockets (kernel
	// runs only; bench.Report's RTTBusyPoll), or why they are missing.
	RTTBusyPollSame     *BenchRTT `json:"rtt_busypoll_same_cpu,omitempty"`
	RTTBusyPollCrossCPU *BenchRTT `json:"rtt_busypoll_cross_cpu,omitempty"`
	RTTBusyPollError    string    `json:"rtt_busypoll_error,omitempty"`
}

// BenchRTT is one request/response run's percentiles and where it ran.
type BenchRTT struct {
	Pinning string  `json:"pinning"`
	P50     float64 `json:"p50_us"`
	P99     float64 `json:"p99_us"`
	P999    float64 `json:"p99_9_us"`
	Count   int     `json:"answered"`
}

func benchRTTOf(f *bench.RTTFigures) *BenchRTT {
	if f == nil {
		return nil
	}
	return &BenchRTT{Pinning: f.Pinning, P50: f.P50Us, P99: f.P99Us, P999: f.P999Us, Count: f.Answered}
}

// BenchSummaryRow is one (pair, size) with every stack side by side. The
// ratio is always against the best kernel configuration measured.
type BenchSummaryRow struct {
	From        string        `json:"from"`
	To          string        `json:"to"`
	Size        int           `json:"size"`
	User        *BenchFigures `json:"user,omitempty"`
	KernelBest  *BenchFigures `json:"kernel_gso_gro,omitempty"`
	KernelPlain *BenchFigures `json:"kernel_plain,omitempty"`
	// BestKernel names the kernel configuration the ratio is against.
	BestKernel string  `json:"best_kernel,omitempty"`
	Ratio      float64 `json:"ratio_user_over_best_kernel,omitempty"`
	// RTTSame and RTTCrossCPU are the user-level round trips over the
	// best kernel's, per pinning (RTTVersus).
	RTTSame     *RTTVersus `json:"rtt_same_cpu_user_over_best_kernel,omitempty"`
	RTTCrossCPU *RTTVersus `json:"rtt_cross_cpu_user_over_best_kernel,omitempty"`
	// Reference is the standalone UDP_SEGMENT+UDP_GRO pair (--reference,
	// median of the rounds) and RefRatio the median over alternating
	// rounds of the kernel baseline's unpaced throughput over the pair's.
	Reference *BenchFigures `json:"kernel_reference_pair,omitempty"`
	RefRatio  float64       `json:"ratio_kernel_over_reference_pair,omitempty"`
}

// RefRounds is how many alternating rounds (bench's kernel baseline, then
// the reference pair, both unpaced) --reference takes: on a shared
// machine one round each can land on a quiet and a busy moment.
const RefRounds = 3

// RefRound is one alternating round of --reference.
type RefRound struct {
	Kernel        float64    `json:"kernel_gbit_per_second"` // bench's kernel baseline, unpaced
	KernelCPUns   float64    `json:"kernel_cpu_ns_per_datagram"`
	ReferenceGbps float64    `json:"reference_gbit_per_second"`
	Reference     *RefResult `json:"reference"`
}

// RefComparison is --reference for one (pair, size): the rounds and
// their medians; Ratio is the median of the rounds' kernel/reference.
type RefComparison struct {
	From            string     `json:"from"`
	To              string     `json:"to"`
	Size            int        `json:"size"`
	Rounds          []RefRound `json:"rounds"`
	KernelMedian    float64    `json:"kernel_gbit_per_second_median"`
	ReferenceMedian float64    `json:"reference_gbit_per_second_median"`
	ReferenceKpps   float64    `json:"reference_kpps_median"`
	// ReferenceCPUns is the pair's median CPU time per datagram (both
	// sides), beside bench's kernel baseline's in each round.
	ReferenceCPUns float64 `json:"reference_cpu_ns_per_datagram_median"`
	Ratio          float64 `json:"ratio_kernel_over_reference_median"`
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Finish computes the medians and the ratio once every round is in.
func (c *RefComparison) Finish() {
	var k, r, kpps, cpu, ratio []float64
	for _, x := range c.Rounds {
		k, r = append(k, x.Kernel), append(r, x.ReferenceGbps)
		kpps = append(kpps, x.Reference.PacketsPerSecondReceived/1e3)
		cpu = append(cpu, x.Reference.CPUNanosPerDatagram)
		if x.ReferenceGbps > 0 {
			ratio = append(ratio, x.Kernel/x.ReferenceGbps)
		}
	}
	c.KernelMedian, c.ReferenceMedian, c.ReferenceKpps, c.Ratio = median(k), median(r), median(kpps), median(ratio)
	c.ReferenceCPUns = median(cpu)
}

// WithReference adds the reference comparisons to their rows.
func WithReference(rows []BenchSummaryRow, refs []*RefComparison) []BenchSummaryRow {
	for _, c := range refs {
		for i := range rows {
			r := &rows[i]
			if r.From == c.From && r.To == c.To && r.Size == c.Size {
				r.Reference = &BenchFigures{Gbps: c.ReferenceMedian, Kpps: c.ReferenceKpps, CPUnsPerPkt: c.ReferenceCPUns}
				r.RefRatio = c.Ratio
			}
		}
	}
	return rows
}

// BenchLabel names what a run measured, whatever addresses its stack used.
type BenchLabel struct {
	From, To string
	Size     int
}

// BenchSummary folds runs (labelled by labels[i]) into one row per (pair,
// size), every stack side by side, the ratio against the best kernel.
func BenchSummary(runs []*bench.Report, labels []BenchLabel) []BenchSummaryRow {
	var rows []BenchSummaryRow
	idx := map[BenchLabel]int{}
	for k, r := range runs {
		key := labels[k]
		p := bench.PointOf(r)
		i, ok := idx[key]
		if !ok {
			i = len(rows)
			idx[key] = i
			rows = append(rows, BenchSummaryRow{From: key.From, To: key.To, Size: key.Size})
		}
		row := &rows[i]
		f := &BenchFigures{Gbps: p.BitsPerSecond / 1e9, Kpps: p.PacketsPerSecond / 1e3,
			CPUsPerGB: r.Netstation.CPUSecondsPerGB, CPUnsPerPkt: r.Netstation.CPUNanosPerDatagram,
			RTTSame: benchRTTOf(r.Netstation.RTT), RTTCrossCPU: benchRTTOf(r.Netstation.RTTCrossCPU),
			RTTBusyPollSame: benchRTTOf(r.Netstation.RTTBusyPoll), RTTBusyPollCrossCPU: benchRTTOf(r.Netstation.RTTBusyPollCrossCPU),
			RTTBusyPollError: r.Netstation.RTTBusyPollError}
		if e := r.End.SumReceived.Packets; e > 0 && r.Netstation.HaveReceiver {
			f.LinkLost = 100 * float64(r.Netstation.LinkLost) / float64(e)
			f.Overflow = r.Netstation.ReceiverOverflowPercent
		}
		switch p.Stack {
		case peripherals.StackKernel:
			row.KernelBest = f
		case peripherals.StackKernelPlain:
			row.KernelPlain = f
		default:
			row.User = f
		}
		row.BestKernel, row.Ratio = "", 0
		best := 0.0
		for _, k := range []struct {
			name string
			f    *BenchFigures
		}{{peripherals.StackKernel, row.KernelBest}, {peripherals.StackKernelPlain, row.KernelPlain}} {
			if k.f != nil && k.f.Gbps > best {
				best, row.BestKernel = k.f.Gbps, k.name
			}
		}
		if best > 0 && row.User != nil {
			row.Ratio = row.User.Gbps / best
		}
		row.RTTSame = rttVersus(row, func(f *BenchFigures) []rttCandidate {
			return []rttCandidate{{"", f.RTTSame}, {peripherals.StackKernelBusyPoll, f.RTTBusyPollSame}}
		})
		row.RTTCrossCPU = rttVersus(row, func(f *BenchFigures) []rttCandidate {
			return []rttCandidate{{"", f.RTTCrossCPU}, {peripherals.StackKernelBusyPoll, f.RTTBusyPollCrossCPU}}
		})
	}
	return rows
}

// RTTVersus is the user-level stack's round trip in one pinning over the
// best kernel's in the same pinning: the kernel configuration with the
// lowest p50 among those measured (plain, busy-polling, kernel-plain).
type RTTVersus struct {
	BestKernel string  `json:"best_kernel"`
	P50Ratio   float64 `json:"p50_ratio"`
	P99Ratio   float64 `json:"p99_ratio"`
}

type rttCandidate struct {
	stack string // "" for the run's own stack
	rt    *BenchRTT
}

// rttVersus compares row's user-level round trip (the first candidate
// pick returns for it) with the kernel candidates; nil without both.
func rttVersus(row *BenchSummaryRow, pick func(*BenchFigures) []rttCandidate) *RTTVersus {
	if row.User == nil {
		return nil
	}
	user := pick(row.User)[0].rt
	if user == nil {
		return nil
	}
	var best *BenchRTT
	name := ""
	for _, k := range []struct {
		name string
		f    *BenchFigures
	}{{peripherals.StackKernel, row.KernelBest}, {peripherals.StackKernelPlain, row.KernelPlain}} {
		if k.f == nil {
			continue
		}
		for _, c := range pick(k.f) {
			if c.rt != nil && c.rt.P50 > 0 && (best == nil || c.rt.P50 < best.P50) {
				best, name = c.rt, k.name
				if c.stack != "" {
					name = c.stack
				}
			}
		}
	}
	if best == nil || best.P99 <= 0 {
		return nil
	}
	return &RTTVersus{BestKernel: name, P50Ratio: user.P50 / best.P50, P99Ratio: user.P99 / best.P99}
}
