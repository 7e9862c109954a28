package fabric

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkStar50 builds and tears down a testbed's fabric: a bridge
// namespace and 50 namespaces, each with a veth to the bridge (IPv6 off,
// up) and a kernel address, through one Session. It reports the
// milliseconds of the build (up-ms), of Cleanup (down-ms) and until the
// kernel has really destroyed the namespaces (settle-ms: a sentinel veth
// from the host into the last namespace, outside the cleaned prefix,
// disappears only then). The next iteration's build overlaps any teardown
// the kernel still does after that, as a testbed coming up right after
// another went down would.
func BenchmarkStar50(b *testing.B) { benchStar(b, 50) }

// BenchmarkStar100 is BenchmarkStar50 at the size of the scale
// target (100 peripherals).
func BenchmarkStar100(b *testing.B) { benchStar(b, 100) }

func benchStar(b *testing.B, n int) {
	var up, down, settle time.Duration
	sentinelPrefix := testPrefix(b)
	for b.Loop() {
		p := testPrefix(b)
		s, err := NewSession()
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		_, leaves := star(b, s, p, n, 0)
		for j, leaf := range leaves {
			if err := s.SetAddr(leaf, "eth0", addrFor(j)); err != nil {
				b.Fatal(err)
			}
		}
		t1 := time.Now()
		b.StopTimer()
		sentinel := sentinelPrefix + "s"
		if err := s.CreateVeth(VethSpec{NameA: sentinel, NameB: "sentinel", NamespaceB: leaves[n-1]}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t2 := time.Now()
		if err := s.Cleanup(p); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		h, err := s.Handle("")
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := h.LinkByName(sentinel); err != nil {
				break
			}
			if time.Since(t3) > 30*time.Second {
				b.Fatal("namespaces not destroyed after 30 s")
			}
			time.Sleep(time.Millisecond)
		}
		up += t1.Sub(t0)
		down += t3.Sub(t2)
		settle += time.Since(t2)
		s.Close()
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(up), "up-ms")
	b.ReportMetric(ms(down), "down-ms")
	b.ReportMetric(ms(settle), "settle-ms")
}

func addrFor(j int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("10.215.%d.%d/16", j/250, j%250+1))
}
