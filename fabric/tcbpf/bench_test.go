package tcbpf

import (
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

// benchProgram reports the kernel's own per-run time of p on frame
// (BPF_PROG_TEST_RUN with b.N repetitions), which excludes the syscall.
func benchProgram(b *testing.B, p *ebpf.Program, frame []byte) {
	_, per, err := p.Benchmark(frame, b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(per.Nanoseconds()), "kernel-ns/frame")
}

func BenchmarkImpairProgram(b *testing.B) {
	frame := udpFrame(net.HardwareAddr{2, 0, 0, 0, 0, 1}, netip.MustParseAddr("10.0.0.1"), 1400)
	o := newImpairObjs(b)
	for _, c := range []struct {
		name string
		p    Params
	}{
		{"off", Params{}},
		{"seeded-loss5-corrupt1", Params{LossPPM: 50_000, CorruptPPM: 10_000, Seed: 7}},
		{"unseeded-loss5", Params{LossPPM: 50_000}},
		{"seeded-corrupt100", Params{CorruptPPM: PPM, Seed: 7}},
	} {
		b.Run(c.name, func(b *testing.B) {
			if err := o.params.Put(uint32(0), c.p.marshal()); err != nil {
				b.Fatal(err)
			}
			benchProgram(b, o.progs[0], frame)
		})
	}
}

func BenchmarkTemplateProgram(b *testing.B) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	ip := netip.MustParseAddr("10.0.0.1")
	p := newTemplateObjs(b, mac, ip).prog
	benchProgram(b, p, udpFrame(mac, ip, 1400))
}

func BenchmarkDecide(b *testing.B) {
	p := Params{LossPPM: 50_000, CorruptPPM: 10_000, Seed: 7}
	n := 0
	for i := range b.N {
		if d, _ := Decide(p, Ingress, uint64(i)); d {
			n++
		}
	}
	_ = n
}
