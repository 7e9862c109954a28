package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scaleRun brings up a testbed of n peripherals, checks it, and takes it
// down, returning the wall times and the mean RSS per peripheral process.
func scaleRun(t testing.TB, b *bed, n int) (up, down time.Duration, rssMiB, pssMiB float64) {
	var sb strings.Builder
	sb.WriteString("nodes:\n")
	kinds := []string{"cpu", "disk", "display"}
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, "  - {name: p%d, kind: %s}\n", i, kinds[i%3])
	}
	f := b.topo(b.name, sb.String())
	t0 := time.Now()
	b.must("up", "-q", "-f", f)
	up = time.Since(t0)
	st := b.status(b.name)
	var total, totalPss float64
	for _, nd := range st.Nodes {
		if nd.State != "running" {
			t.Errorf("%s: %s", nd.Name, nd.State)
		}
		total += memKiB(fmt.Sprintf("/proc/%d/status", nd.PID), "VmRSS:") / 1024
		totalPss += memKiB(fmt.Sprintf("/proc/%d/smaps_rollup", nd.PID), "Pss:") / 1024
	}
	rssMiB = total / float64(len(st.Nodes))
	pssMiB = totalPss / float64(len(st.Nodes))
	// A few pings across the fabric prove the stacks are up, not only the
	// processes.
	for _, pair := range [][2]string{{"p0", fmt.Sprintf("p%d", n-1)}, {fmt.Sprintf("p%d", n/2), "p1"}} {
		if out, err := b.run("ping", "-t", b.name, "-c", "1", pair[0], pair[1]); err != nil {
			t.Errorf("ping %v: %v\n%s", pair, err, out)
		}
	}
	t0 = time.Now()
	b.must("down", b.name)
	down = time.Since(t0)
	b.assertGone(b.name)
	return up, down, rssMiB, pssMiB
}

// memKiB reads one "Key: N kB" line of a /proc file. VmRSS counts the
// netstation binary's text, shared by every peripheral, in full; Pss
// (smaps_rollup) divides shared pages among their users, so it is what one
// more peripheral costs.
func memKiB(path, key string) float64 {
	s, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(s), "\n") {
		if strings.HasPrefix(l, key) {
			f := strings.Fields(l)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb
		}
	}
	return 0
}

// TestScale100 is the acceptance run: 100 peripherals up and down, clean.
// Times are logged, not asserted; BenchmarkScale100 records them.
func TestScale100(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	b := newBed(t)
	up, down, r, pss := scaleRun(t, b, 100)
	t.Logf("100 peripherals: up %.2fs, down %.2fs, per peripheral RSS %.1f MiB, PSS %.1f MiB", up.Seconds(), down.Seconds(), r, pss)
}

func BenchmarkScale100(b *testing.B) {
	for i := 0; i < b.N; i++ {
		bd := newBed(b)
		up, down, r, pss := scaleRun(b, bd, 100)
		b.ReportMetric(up.Seconds(), "up_s")
		b.ReportMetric(down.Seconds(), "down_s")
		b.ReportMetric(r, "rss_MiB/peripheral")
		b.ReportMetric(pss, "pss_MiB/peripheral")
	}
}
