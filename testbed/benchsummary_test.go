package testbed

import (
	"math"
	"testing"

	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/bench"
)

// TestBenchSummaryRTTVersus: the user-level round trips are compared, per
// pinning, with the kernel configuration whose p50 is lowest in that
// pinning: the plain kernel on one CPU, the busy-polling kernel across
// CPUs here.
func TestBenchSummaryRTTVersus(t *testing.T) {
	rep := func(stack string, same, cross, busySame, busyCross [2]float64) *bench.Report {
		r := &bench.Report{}
		r.Netstation.Stack = stack
		r.Start.TestStart.Blksize = 64
		fig := func(v [2]float64) *bench.RTTFigures {
			if v[0] == 0 {
				return nil
			}
			return &bench.RTTFigures{P50Us: v[0], P99Us: v[1], Answered: 100}
		}
		r.Netstation.RTT, r.Netstation.RTTCrossCPU = fig(same), fig(cross)
		r.Netstation.RTTBusyPoll, r.Netstation.RTTBusyPollCrossCPU = fig(busySame), fig(busyCross)
		return r
	}
	none := [2]float64{}
	runs := []*bench.Report{
		rep(peripherals.StackUser, [2]float64{12, 60}, [2]float64{9, 50}, none, none),
		rep(peripherals.StackKernel, [2]float64{16, 80}, [2]float64{170, 300}, [2]float64{440, 500}, [2]float64{7.5, 90}),
		rep(peripherals.StackKernelPlain, [2]float64{17, 70}, [2]float64{175, 320}, none, none),
	}
	lab := BenchLabel{From: "cpu0", To: "disk0", Size: 64}
	rows := BenchSummary(runs, []BenchLabel{lab, lab, lab})
	if len(rows) != 1 {
		t.Fatalf("%d rows", len(rows))
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if v := rows[0].RTTSame; v == nil || v.BestKernel != peripherals.StackKernel || !near(v.P50Ratio, 12.0/16) || !near(v.P99Ratio, 60.0/80) {
		t.Errorf("same CPU: %+v, want 0.75x / 0.75x vs kernel", v)
	}
	if v := rows[0].RTTCrossCPU; v == nil || v.BestKernel != peripherals.StackKernelBusyPoll || !near(v.P50Ratio, 9/7.5) || !near(v.P99Ratio, 50.0/90) {
		t.Errorf("cross CPU: %+v, want 1.2x / 0.56x vs kernel-busypoll", v)
	}
	// Without a kernel run there is nothing to compare with.
	if rows := BenchSummary(runs[:1], []BenchLabel{lab}); rows[0].RTTSame != nil || rows[0].RTTCrossCPU != nil {
		t.Errorf("user alone: %+v / %+v", rows[0].RTTSame, rows[0].RTTCrossCPU)
	}
}
