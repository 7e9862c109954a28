package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestProcessCPUGrows: a reading after burning CPU is above one before.
func TestProcessCPUGrows(t *testing.T) {
	before := ProcessCPU()
	deadline := time.Now().Add(10 * time.Second)
	x := uint64(1)
	for ProcessCPU().Sub(before).Total() <= 0 {
		if time.Now().After(deadline) {
			t.Fatal("process CPU time did not grow in 10 s of spinning")
		}
		for i := 0; i < 1e6; i++ {
			x = x*6364136223846793005 + 1
		}
	}
	if d := ProcessCPU().Sub(before); d.User < 0 || d.System < 0 {
		t.Fatalf("CPU time went backwards: %+v (x %d)", d, x)
	}
}

// TestMergeCPUCost: both ends' CPU time per GB and per datagram received.
func TestMergeCPUCost(t *testing.T) {
	snd := &Result{Role: RoleSender, Stack: "user", Parallel: 1, CPU: CPUTime{User: 600 * time.Millisecond, System: 400 * time.Millisecond},
		Sum: Totals{Bytes: 2e9, Packets: 2e6, End: time.Second}}
	rcv := &Result{Role: RoleReceiver, Stack: "user", Parallel: 1, CPU: CPUTime{User: 2 * time.Second},
		Sum: Totals{Bytes: 1e9, Packets: 1e6, End: time.Second}}
	r := Merge(snd, rcv)
	n := r.Netstation
	if n.SenderCPU == nil || n.ReceiverCPU == nil || n.SenderCPU.Total() != time.Second || n.ReceiverCPU.Total() != 2*time.Second {
		t.Fatalf("cpu %+v %+v", n.SenderCPU, n.ReceiverCPU)
	}
	if n.CPUSecondsPerGB != 3 || n.CPUNanosPerDatagram != 3000 {
		t.Fatalf("%.3f CPU-s/GB, %.1f ns/datagram; want 3 and 3000", n.CPUSecondsPerGB, n.CPUNanosPerDatagram)
	}
	var b bytes.Buffer
	if err := r.Text(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "3.000 CPU-s per GB received, 3000 CPU-ns per datagram") {
		t.Fatalf("text lacks the CPU cost:\n%s", b.String())
	}
	// A side that did not measure: no cost figure rather than a wrong one.
	snd.CPU = CPUTime{}
	if n := Merge(snd, rcv).Netstation; n.CPUSecondsPerGB != 0 || n.SenderCPU != nil {
		t.Fatalf("cost without a sender's CPU: %+v", n)
	}
}
