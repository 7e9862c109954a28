package main

import (
	"encoding/json"
	"testing"

	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/internal/ethtool"
)

// portOffloads are the offloads a busy-polling bench switches for its
// round trips and must put back: TSO on the bridge's side of cpu0's and
// disk0's ports, GRO on the ports themselves.
type portOffloads struct{ bridgeTSO, portGRO [2]bool }

func offloads(t *testing.T, b *bed) portOffloads {
	t.Helper()
	plan := b.plan()
	var o portOffloads
	for i, name := range []string{"cpu0", "disk0"} {
		n, err := plan.Node(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := fabric.Do(plan.FabricNS, func() (err error) {
			o.bridgeTSO[i], err = ethtool.Get(n.Port, ethtool.TSO)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := fabric.Do(n.NS, func() (err error) {
			o.portGRO[i], err = ethtool.Get(n.IfName, ethtool.GRO)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

// TestBenchStacks runs `netstation bench` on the user-level stack, the
// kernel's at its best and the plain kernel sockets, then all three, and
// checks the JSON carries iperf3's field names, the kernel's offloads
// were really used (datagrams per message and per buffer), loss is split,
// and both pinned RTT runs are there.
func TestBenchStacks(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	before := offloads(t, b)
	for _, st := range []string{"user", "kernel", "kernel-plain"} {
		out := b.must("bench", "-t", b.name, "--from", "cpu0", "--to", "disk0", "--stack", st,
			"--time", "1s", "--size", "1472", "--rtt", "200", "-b", "max", "-J")
		var all struct {
			Runs []map[string]any `json:"runs"`
		}
		if err := json.Unmarshal([]byte(out), &all); err != nil || len(all.Runs) != 1 {
			t.Fatalf("%s: JSON: %v\n%s", st, err, out)
		}
		r := all.Runs[0] // an iperf3 -J report
		for _, path := range [][]string{
			{"start", "test_start", "protocol"}, {"start", "connecting_to", "host"},
			{"end", "sum", "bits_per_second"}, {"end", "sum", "lost_percent"}, {"end", "sum", "jitter_ms"},
			{"end", "sum_received", "bits_per_second"}, {"netstation", "stack"}, {"netstation", "rtt", "p50_us"},
			{"netstation", "rtt", "p99_9_us"}, {"netstation", "rtt", "pinning"}, {"netstation", "rtt_cross_cpu", "pinning"},
			{"netstation", "receiver_overflow_packets"}, {"netstation", "link_lost_packets"}, {"netstation", "pacing"},
		} {
			if v := dig(r, path...); v == nil {
				t.Errorf("%s: no %v in the JSON", st, path)
			}
		}
		if iv, ok := r["intervals"].([]any); !ok || len(iv) == 0 {
			t.Errorf("%s: no intervals", st)
		}
		if bps, _ := dig(r, "end", "sum_received", "bits_per_second").(float64); bps <= 0 {
			t.Errorf("%s: received nothing", st)
		}
		if got := dig(r, "netstation", "stack"); got != st {
			t.Errorf("stack = %v, want %s", got, st)
		}
		perSend, _ := dig(r, "netstation", "datagrams_per_send").(float64)
		perRecv, _ := dig(r, "netstation", "datagrams_per_receive").(float64)
		switch st {
		case "kernel": // 1472 B: up to 44 per UDP_SEGMENT send
			if perSend < 4 || perRecv < 2 {
				t.Errorf("kernel at its best: %.1f datagrams per send, %.1f per receive", perSend, perRecv)
			}
		case "kernel-plain":
			if perSend != 1 || perRecv != 1 {
				t.Errorf("kernel-plain: %.1f datagrams per send, %.1f per receive", perSend, perRecv)
			}
		}
		if same, cross := dig(r, "netstation", "rtt", "pinning"), dig(r, "netstation", "rtt_cross_cpu", "pinning"); same == cross {
			t.Errorf("pinnings %v and %v", same, cross)
		}
		// The kernel at its best for latency: its round trips again on
		// busy-polling sockets, in both pinnings, through NAPI (the
		// peripheral refuses the figure otherwise); no other stack has
		// them.
		busy := dig(r, "netstation", "rtt_busypoll", "p50_us")
		busyCross := dig(r, "netstation", "rtt_busypoll_cross_cpu", "pinning")
		if st == "kernel" {
			if busy == nil || busyCross == nil {
				t.Errorf("kernel: no busy-polling round trips (%v)", dig(r, "netstation", "rtt_busypoll_error"))
			}
		} else if busy != nil || busyCross != nil {
			t.Errorf("%s: busy-polling round trips on a stack that has none", st)
		}
	}
	if after := offloads(t, b); after != before {
		t.Errorf("busy polling left the ports' offloads changed: %+v, were %+v", after, before)
	}
	out := b.must("bench", "-t", b.name, "--stack", "all", "--time", "1s", "--size", "64,1472", "--rtt", "100", "-J")
	type figs struct {
		Gbps     float64 `json:"gbit_per_second"`
		CPUPerGB float64 `json:"cpu_seconds_per_gb"`
		CPUPerDg float64 `json:"cpu_ns_per_datagram"`
	}
	var all struct {
		Runs    []map[string]any `json:"runs"`
		Summary []struct {
			Size  int     `json:"size"`
			User  *figs   `json:"user"`
			Best  *figs   `json:"kernel_gso_gro"`
			Plain *figs   `json:"kernel_plain"`
			Vs    string  `json:"best_kernel"`
			Ratio float64 `json:"ratio_user_over_best_kernel"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatalf("all: %v\n%s", err, out)
	}
	if len(all.Runs) != 6 || len(all.Summary) != 2 {
		t.Fatalf("all: %d runs, %d summary rows", len(all.Runs), len(all.Summary))
	}
	for _, s := range all.Summary {
		if s.User == nil || s.Best == nil || s.Plain == nil || s.User.Gbps <= 0 || s.Best.Gbps <= 0 || s.Plain.Gbps <= 0 || s.Ratio <= 0 {
			t.Fatalf("summary row %+v lacks a figure", s)
		}
		// CPU cost per byte and per datagram, for every stack (issue 14).
		for _, f := range []*figs{s.User, s.Best, s.Plain} {
			if f.CPUPerGB <= 0 || f.CPUPerDg <= 0 {
				t.Errorf("%d B: no CPU cost in %+v", s.Size, *f)
			}
		}
		best := max(s.Best.Gbps, s.Plain.Gbps)
		if got := s.User.Gbps / best; got < s.Ratio*0.999 || got > s.Ratio*1.001 {
			t.Errorf("%d B: ratio %.3f is not against the best kernel (%.3f)", s.Size, s.Ratio, got)
		}
	}
	for _, r := range all.Runs {
		if p, _ := dig(r, "netstation", "pacing").(string); p == "" || p == "unpaced" {
			t.Errorf("default rate: pacing %q, want auto", p)
		}
		// The default holds the sender to what the receiver reads: it
		// must not overflow (issue 14: at most 1 % lost at the receiver).
		if w, _ := dig(r, "netstation", "credit_window").(float64); w <= 0 {
			t.Errorf("default rate: no credit window (%v)", dig(r, "netstation", "pacing"))
		}
		if ov, _ := dig(r, "netstation", "receiver_overflow_percent").(float64); ov > 1 {
			t.Errorf("default rate, %v stack, %v B: the receiver dropped %.2f%%", dig(r, "netstation", "stack"), dig(r, "start", "test_start", "blksize"), ov)
		}
	}

	// The standalone reference pair between the same ports.
	out = b.must("bench", "-t", b.name, "--stack", "kernel", "--reference", "--time", "1s", "--size", "1472", "--rtt", "0", "-b", "max", "-J")
	var ref struct {
		Reference []struct {
			Rounds []struct {
				Ref struct {
					PerRecv float64 `json:"datagrams_per_receive"`
					Bps     float64 `json:"bits_per_second_received"`
				} `json:"reference"`
			} `json:"rounds"`
		} `json:"reference"`
		Summary []struct {
			Ratio float64 `json:"ratio_kernel_over_reference_pair"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out), &ref); err != nil {
		t.Fatalf("reference: %v\n%s", err, out)
	}
	if len(ref.Reference) != 1 || len(ref.Reference[0].Rounds) != 3 || len(ref.Summary) != 1 || ref.Summary[0].Ratio <= 0 {
		t.Fatalf("reference pair: %s", out)
	}
	for _, r := range ref.Reference[0].Rounds {
		if r.Ref.Bps <= 0 || r.Ref.PerRecv < 2 { // UDP_GRO: several datagrams per recvmsg
			t.Errorf("reference round: %+v", r)
		}
	}
	t.Logf("kernel baseline / reference pair at 1472 B: %.2f", ref.Summary[0].Ratio)
}

func dig(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}
