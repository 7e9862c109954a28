package main

import (
	"encoding/json"
	"testing"
)

// fioJob is the part of fio's JSON the storage demo must fill.
type fioJob struct {
	Jobs []struct {
		Write struct {
			IOBytes int64   `json:"io_bytes"`
			BW      int64   `json:"bw"`
			IOPS    float64 `json:"iops"`
			Clat    struct {
				Percentile map[string]int64 `json:"percentile"`
			} `json:"clat_ns"`
		} `json:"write"`
		Read struct {
			IOBytes int64 `json:"io_bytes"`
			BW      int64 `json:"bw"`
		} `json:"read"`
		Netstation struct {
			Stack string `json:"stack"`
			Match bool   `json:"match"`
			W     string `json:"sha256_written"`
			R     string `json:"sha256_read"`
		} `json:"netstation"`
	} `json:"jobs"`
}

// TestStorageDemo runs the storage demo byte-exact over the user-level
// stacks at 0 %, 1 % and 10 % seeded loss (the fabric's tc BPF loss, `link
// set --loss`), and over kernel sockets.
func TestStorageDemo(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	for _, c := range []struct {
		name string
		args []string
	}{
		{"user", []string{"--size", "32MiB"}},
		{"user-loss1", []string{"--size", "16MiB", "--loss", "1%", "--seed", "7"}},
		{"user-loss10", []string{"--size", "8MiB", "--bs", "256KiB", "--loss", "10%", "--seed", "7"}},
		{"kernel", []string{"--size", "32MiB", "--stack", "kernel"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := b.must(append([]string{"demo", "storage", "-t", b.name, "-o", "json"}, c.args...)...)
			var f fioJob
			if err := json.Unmarshal([]byte(out), &f); err != nil || len(f.Jobs) != 1 {
				t.Fatalf("json: %v\n%s", err, out)
			}
			j := f.Jobs[0]
			if !j.Netstation.Match || j.Netstation.W == "" || j.Netstation.W != j.Netstation.R {
				t.Errorf("data mismatch: %+v", j.Netstation)
			}
			if j.Write.IOBytes == 0 || j.Write.BW <= 0 || j.Read.BW <= 0 || j.Write.Clat.Percentile["99.000000"] <= 0 {
				t.Errorf("missing figures: %+v", j)
			}
			t.Logf("%s: write %d KiB/s, read %d KiB/s", c.name, j.Write.BW, j.Read.BW)
		})
	}
	// The kernel baseline must leave no kernel address behind.
	out := b.must("exec", "-t", b.name, "disk0", "--", "ip", "-o", "-4", "addr", "show", "dev", "eth0")
	if len(out) > 0 {
		t.Errorf("kernel address left on disk0: %s", out)
	}
}
