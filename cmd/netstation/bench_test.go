package main

import (
	"encoding/json"
	"testing"
)

// TestBenchStacks runs `netstation bench` on the user-level stack, the
// kernel's, and both, and checks the JSON carries iperf3's field names.
func TestBenchStacks(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	for _, st := range []string{"user", "kernel"} {
		out := b.must("bench", "-t", b.name, "--from", "cpu0", "--to", "disk0", "--stack", st,
			"--time", "1s", "--size", "512", "--rtt", "200", "-J")
		var r map[string]any
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%s: JSON: %v\n%s", st, err, out)
		}
		for _, path := range [][]string{
			{"start", "test_start", "protocol"}, {"start", "connecting_to", "host"},
			{"end", "sum", "bits_per_second"}, {"end", "sum", "lost_percent"}, {"end", "sum", "jitter_ms"},
			{"end", "sum_received", "bits_per_second"}, {"netstation", "stack"}, {"netstation", "rtt", "p50_us"},
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
	}
	out := b.must("bench", "-t", b.name, "--stack", "both", "--time", "1s", "--size", "64,1472", "--rtt", "100", "-J")
	var both struct {
		Runs    []map[string]any `json:"runs"`
		Summary []struct {
			Size  int     `json:"size"`
			User  float64 `json:"user_gbit_per_second"`
			Kern  float64 `json:"kernel_gbit_per_second"`
			Ratio float64 `json:"ratio_user_over_kernel"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out), &both); err != nil {
		t.Fatalf("both: %v\n%s", err, out)
	}
	if len(both.Runs) != 4 || len(both.Summary) != 2 {
		t.Fatalf("both: %d runs, %d summary rows", len(both.Runs), len(both.Summary))
	}
	for _, s := range both.Summary {
		if s.User <= 0 || s.Kern <= 0 || s.Ratio <= 0 {
			t.Errorf("summary row %+v lacks a figure", s)
		}
	}
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
