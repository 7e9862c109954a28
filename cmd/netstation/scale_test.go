package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/gossip"
	"github.com/netstation/netstation/testbed"
)

// scaleFigures are what one scale run measured.
type scaleFigures struct {
	up, down time.Duration
	// converged: from ready until every peripheral's view lists every
	// other one alive (0 if not measured).
	converged time.Duration
	// rssMiB, pssMiB: mean per peripheral, when measured (after the
	// settle time, gossip converged).
	rssMiB, pssMiB float64
	// idleCores: CPU time of every process of the testbed per second of
	// wall time, while idle.
	idleCores float64
	// deadSeen: from freezing one peripheral until every other one's
	// view shows it dead.
	deadSeen time.Duration
}

// scaleOptions choose what a scale run measures beyond up, pings, down.
type scaleOptions struct {
	gossip     bool          // wait for every view to be complete
	viewsLimit time.Duration // after ready
	settle     time.Duration // then wait this long before measuring memory and idle CPU
	// freeze one peripheral: every other must see it dead within
	// freezeLimit.
	freeze      bool
	freezeLimit time.Duration
}

// scaleTopology writes a topology of n peripherals, a third of each kind.
func scaleTopology(b *bed, n int) string {
	var sb strings.Builder
	sb.WriteString("nodes:\n")
	kinds := []string{"cpu", "disk", "display"}
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, "  - {name: p%d, kind: %s}\n", i, kinds[i%3])
	}
	return b.topo(b.name, sb.String())
}

// scaleRun brings up a testbed of n peripherals, checks every one is
// running and answers pings over its stack, measures what opt asks, and
// takes it down, checking that nothing is left.
func scaleRun(t testing.TB, b *bed, n int, opt scaleOptions) scaleFigures {
	var f scaleFigures
	topo := scaleTopology(b, n)
	t0 := time.Now()
	scaleMust(t, b, "up", "-q", "--timeout", "300s", "-f", topo)
	f.up = time.Since(t0)
	ready := time.Now()
	dir := filepath.Join(b.state, b.name)
	if opt.gossip {
		// First, before anything else asks the peripherals for work.
		names := make([]testbed.NodeStatus, n)
		for i := range names {
			names[i].Name = fmt.Sprintf("p%d", i)
		}
		if waitViews(t, dir, names, "", opt.viewsLimit) > 0 {
			f.converged = time.Since(ready)
		}
	}
	st := b.status(b.name)
	if len(st.Nodes) != n {
		t.Fatalf("status -o json lists %d nodes, want %d", len(st.Nodes), n)
	}
	for _, nd := range st.Nodes {
		if nd.State != testbed.StateRunning || nd.PID == 0 {
			t.Errorf("%s: %s (pid %d)", nd.Name, nd.State, nd.PID)
		}
	}
	// The default status of a large testbed is a summary.
	if out := b.must("status", "-t", b.name); n > 50 && !strings.Contains(out, fmt.Sprintf("%d nodes: %d running", n, n)) {
		t.Errorf("status summary does not count %d running:\n%s", n, out)
	}
	pingSweep(t, dir, st.Nodes)
	if opt.settle > 0 {
		time.Sleep(opt.settle)
	}
	var totalRss, totalPss float64
	for _, nd := range st.Nodes {
		totalRss += memKiB(fmt.Sprintf("/proc/%d/status", nd.PID), "VmRSS:") / 1024
		totalPss += memKiB(fmt.Sprintf("/proc/%d/smaps_rollup", nd.PID), "Pss:") / 1024
	}
	f.rssMiB, f.pssMiB = totalRss/float64(n), totalPss/float64(n)
	f.idleCores = cpuOf(b.state, 10*time.Second)
	if opt.freeze {
		f.deadSeen = freezeOne(t, dir, st.Nodes, opt.freezeLimit)
	}
	if keep := os.Getenv("NETSTATION_SCALE_LOG"); keep != "" {
		// The supervisor's per-phase timings, for a by-hand run.
		if log, err := os.ReadFile(filepath.Join(dir, "supervisor.log")); err == nil {
			_ = os.WriteFile(keep, log, 0o644)
		}
	}
	t0 = time.Now()
	scaleMust(t, b, "down", b.name)
	f.down = time.Since(t0)
	b.assertGone(b.name)
	return f
}

// scaleMust runs a netstation command without bed.run's 90 s limit: up
// and down of 1,000 peripherals on a loaded machine may take longer.
func scaleMust(t testing.TB, b *bed, args ...string) {
	t.Helper()
	if out, err := b.cmd(args...).CombinedOutput(); err != nil {
		t.Fatalf("netstation %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// pingSweep has every peripheral ping two others over its own stack (its
// neighbour and the one half-way round), 32 at a time, through the
// peripherals' control sockets: each of n stacks sends and each answers.
func pingSweep(t testing.TB, dir string, nodes []testbed.NodeStatus) {
	n := len(nodes)
	var wg sync.WaitGroup
	var failed atomic.Int64
	sem := make(chan struct{}, 32)
	for i := range nodes {
		for _, j := range []int{(i + 1) % n, (i + n/2) % n} {
			if j == i {
				continue
			}
			wg.Add(1)
			go func(from, to testbed.NodeStatus) {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				var sum peripherals.PingSummary
				// Patient: on a loaded machine a peripheral may wait
				// seconds for a CPU; any answer proves its stack.
				a := peripherals.PingArgs{Dst: netip.MustParseAddr(to.IP), Count: 3, Interval: 100 * time.Millisecond, Timeout: 5 * time.Second}
				err := ctl.Call(ctx, testbed.NodeSock(dir, from.Name), "ping", a, &sum, func(json.RawMessage) error { return nil })
				if err != nil || sum.Received == 0 {
					if failed.Add(1) <= 10 {
						t.Errorf("ping %s -> %s: %v (%d/%d answered)", from.Name, to.Name, err, sum.Received, sum.Sent)
					}
				}
			}(nodes[i], nodes[j])
		}
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Errorf("%d pings of %d peripherals failed", f, n)
	}
}

// viewOf returns how many members node's view holds in state, and
// whether the member named about is in it in that state. It asks for
// counts, not the view (200 KB of JSON at 1,000 members, polled from
// every peripheral).
func viewOf(dir, node string, state gossip.State, about string) (count int, has bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var v peripherals.MembersView
	if err := ctl.Call(ctx, testbed.NodeSock(dir, node), "members", peripherals.MembersArgs{Name: about, Count: true}, &v, nil); err != nil {
		return 0, false, err
	}
	for _, m := range v.Members {
		if m.Name == about && m.State == state {
			has = true
		}
	}
	switch state {
	case gossip.Alive:
		count = v.Alive
	case gossip.Dead:
		count = v.Dead
	}
	return count, has, nil
}

// untilAll asks every pending node, 16 at a time, every pause until done
// reports true for each or limit passes; it returns the time taken and
// what is still pending.
func untilAll(pending map[string]bool, limit, pause time.Duration, done func(name string) bool) (time.Duration, int) {
	t0 := time.Now()
	for time.Since(t0) < limit {
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		names := make([]string, 0, len(pending))
		for name := range pending {
			names = append(names, name)
		}
		for _, name := range names { // the goroutines delete from pending
			wg.Add(1)
			go func(name string) {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				if done(name) {
					mu.Lock()
					delete(pending, name)
					mu.Unlock()
				}
			}(name)
		}
		wg.Wait()
		if len(pending) == 0 {
			return time.Since(t0), 0
		}
		time.Sleep(pause)
	}
	return time.Since(t0), len(pending)
}

// waitViews waits until every node's view has every node alive (except
// one called skip) and returns how long that took, or fails after limit.
func waitViews(t testing.TB, dir string, nodes []testbed.NodeStatus, skip string, limit time.Duration) time.Duration {
	pending := map[string]bool{}
	for _, nd := range nodes {
		if nd.Name != skip {
			pending[nd.Name] = true
		}
	}
	want := len(pending)
	complete := func(name string) bool {
		c, _, err := viewOf(dir, name, gossip.Alive, "")
		return err == nil && c >= want
	}
	// A sample of 16 first: polling all of 1,000 views while they fill
	// took CPU from the exchanges that fill them. Every view is checked
	// after.
	t0 := time.Now()
	if len(pending) > 64 {
		sample := map[string]bool{}
		for _, nd := range nodes {
			if nd.Name != skip && len(sample) < 16 {
				sample[nd.Name] = true
			}
		}
		for i := len(nodes) - 1; i >= 0 && len(sample) < 16+8; i-- {
			if nodes[i].Name != skip {
				sample[nodes[i].Name] = true
			}
		}
		untilAll(sample, limit, 500*time.Millisecond, complete)
	}
	_, left := untilAll(pending, max(limit-time.Since(t0), time.Millisecond), 500*time.Millisecond, complete)
	d := time.Since(t0)
	if left > 0 {
		t.Errorf("%d of %d views still incomplete %v after ready", left, want, limit)
		return 0
	}
	return d
}

// freezeOne stops (SIGSTOP) the last peripheral and returns how long
// until every other one's view has it dead, failing past limit; then lets
// it go on.
func freezeOne(t testing.TB, dir string, nodes []testbed.NodeStatus, limit time.Duration) time.Duration {
	victim := nodes[len(nodes)-1]
	if err := syscall.Kill(victim.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// For the supervisor's log (NETSTATION_SCALE_LOG): when the watchdog
	// declared it, against when it stopped.
	t.Logf("froze %s at %s", victim.Name, time.Now().UTC().Format("15:04:05.000"))
	defer syscall.Kill(victim.PID, syscall.SIGCONT)
	pending := map[string]bool{}
	for _, nd := range nodes[:len(nodes)-1] {
		pending[nd.Name] = true
	}
	var mu sync.Mutex
	unanswered := map[string]bool{} // at the last look
	d, left := untilAll(pending, limit+10*time.Second, 250*time.Millisecond, func(name string) bool {
		_, dead, err := viewOf(dir, name, gossip.Dead, victim.Name)
		mu.Lock()
		unanswered[name] = err != nil
		mu.Unlock()
		return err == nil && dead
	})
	if left > 0 {
		// Which: views that hold it alive, or peripherals that did not
		// answer (a starved machine) at the last look.
		silent := 0
		for name := range pending {
			if unanswered[name] {
				silent++
			}
		}
		t.Errorf("frozen %s: %d views still do not have it dead after %v (%d of them did not answer at the last look)",
			victim.Name, left, limit+10*time.Second, silent)
		return 0
	}
	if d > limit {
		t.Errorf("frozen %s seen dead by all after %v, want <= %v", victim.Name, d, limit)
	}
	return d
}

// cpuOf returns the CPU time (user + system) the processes of every
// testbed under the state root used per second over d: 1.0 is one core.
func cpuOf(state string, d time.Duration) float64 {
	sum := func() float64 {
		out, _ := exec.Command("pgrep", "-f", "--", "--state "+state).Output()
		var ticks float64
		for _, p := range strings.Fields(string(out)) {
			b, err := os.ReadFile("/proc/" + p + "/stat")
			if err != nil {
				continue
			}
			s := string(b)
			f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
			u, _ := strconv.ParseFloat(f[11], 64)
			k, _ := strconv.ParseFloat(f[12], 64)
			ticks += u + k
		}
		return ticks / 100 // USER_HZ
	}
	a := sum()
	time.Sleep(d)
	return (sum() - a) / d.Seconds()
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

// TestScale200 is CI's scale run: 200 peripherals up, every one running
// and answering pings over its stack, every gossip view complete (within
// 60 s of ready here, 30 s in the benchmark), a frozen member seen dead by
// all (within 15 s here, 10 s in the benchmark), down leaving nothing. Times are logged, not asserted (CI machines
// differ); BenchmarkScale records them.
func TestScale200(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	b := newBed(t)
	// The limits are issue 16's (views complete 30 s after ready, a frozen
	// member dead in 10 s) plus slack for a CI machine running other
	// packages' tests at once; the benchmark holds issue 16's. On a quiet
	// machine the last views completed 50 s after ready (2026-12-01, first
	// half): the stragglers waited for a settle exchange (every 10 s while
	// short); since the joins wait for every peripheral to answer and
	// changes are retransmitted 2 x log10(n), 10.8 s (second half).
	f := scaleRun(t, b, 200, scaleOptions{gossip: true, viewsLimit: 90 * time.Second, freeze: true, freezeLimit: 15 * time.Second})
	t.Logf("200 peripherals: up %.2fs, views complete %.1fs after ready, frozen member dead in all views after %.1fs, down %.2fs, per peripheral RSS %.1f MiB, PSS %.1f MiB, idle %.0f %% of a core",
		f.up.Seconds(), f.converged.Seconds(), f.deadSeen.Seconds(), f.down.Seconds(), f.rssMiB, f.pssMiB, 100*f.idleCores)
}

func benchScale(b *testing.B, n int) {
	for i := 0; i < b.N; i++ {
		bd := newBed(b)
		// The limits are caps, not issue 16's targets (views 30 s, dead
		// 10 s): the benchmark reports the figure a missed target shows,
		// where failing at the target would hide every other figure.
		f := scaleRun(b, bd, n, scaleOptions{gossip: true, viewsLimit: 5 * time.Minute, settle: 30 * time.Second, freeze: true, freezeLimit: time.Minute})
		b.Logf("%d peripherals: up %.2fs, views complete %.1fs after ready, frozen member dead in all views after %.1fs, down %.2fs, per peripheral RSS %.1f MiB, PSS %.1f MiB, idle %.0f %% of a core",
			n, f.up.Seconds(), f.converged.Seconds(), f.deadSeen.Seconds(), f.down.Seconds(), f.rssMiB, f.pssMiB, 100*f.idleCores)
		b.ReportMetric(f.up.Seconds(), "up_s")
		b.ReportMetric(f.down.Seconds(), "down_s")
		b.ReportMetric(f.converged.Seconds(), "views_s")
		b.ReportMetric(f.deadSeen.Seconds(), "dead_seen_s")
		b.ReportMetric(f.rssMiB, "rss_MiB/peripheral")
		b.ReportMetric(f.pssMiB, "pss_MiB/peripheral")
		b.ReportMetric(100*f.idleCores, "idle_%core")
	}
}

// BenchmarkScale100 and BenchmarkScale1000: up, pings, gossip views
// complete, memory 30 s after, idle CPU, a frozen member seen dead, down.
// scripts/scale.sh runs them beside Mininet's hosts.
// BenchmarkScale200 is CI's size (TestScale200) with the benchmark's
// figures: A/B comparisons outside the windows where 1,000 may run
// ($NETSTATION_GOSSIP=large=100 gives it the settings of 1,000).
func BenchmarkScale100(b *testing.B)  { benchScale(b, 100) }
func BenchmarkScale200(b *testing.B)  { benchScale(b, 200) }
func BenchmarkScale1000(b *testing.B) { benchScale(b, 1000) }
