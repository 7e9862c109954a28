package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/manager"
	"github.com/netstation/netstation/cpu/storage"
	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/privtest"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/testbed"
)

// toolsBed is a testbed with host access whose peripherals the host's own
// tools reach: cpu0 (iperf3 on its user-level TCP) and disk0 (NBD on its
// user-level TCP, checking capabilities).
func toolsBed(t testing.TB) (b *bed, hostIP, cpuIP, diskIP string, fm *manager.Manager) {
	b = newBed(t)
	b.must("up", "-f", b.topo(b.name, "host_access: {}\n"+`nodes:
  - {name: cpu0, kind: cpu}
  - {name: disk0, kind: disk, disk: {size: 512MiB}}
`))
	plan := b.plan()
	hostIP = plan.Host.Addr.Addr().String()
	for _, n := range plan.Nodes {
		switch n.Name {
		case "cpu0":
			cpuIP = n.Addr.Addr().String()
		case "disk0":
			diskIP = n.Addr.Addr().String()
		}
	}
	dir := filepath.Join(b.state, b.name)
	d, _ := plan.Node("disk0")
	fm = manager.New()
	fm.Add(manager.Disk{Name: "disk0", Addr: d.Addr.Addr(), KeyPath: testbed.NodeKey(dir, "disk0"),
		VersionPath: testbed.NodeCapVersion(dir, "disk0")})
	return b, hostIP, cpuIP, diskIP, fm
}

func runTool(t testing.TB, timeout time.Duration, argv ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return out
}

// TestNBDTools: nbdinfo describes disk0 (NBD on its own TCP), nbdcopy
// writes 256 MiB in and reads it back out with equal digests, fio's nbd
// engine runs random reads — all with a capability in the export name;
// the all-zero one (open mode's) is refused.
func TestNBDTools(t *testing.T) {
	privtest.Tool(t, "nbdinfo", "nbdcopy", "fio")
	b, _, _, diskIP, fm := toolsBed(t)
	grant, err := fm.Mint("disk0", netipOf(t, diskIP), manager.WholeDisk(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	uri := fmt.Sprintf("nbd://%s/%s", diskIP, hex.EncodeToString(grant[:]))
	if size := strings.TrimSpace(string(runTool(t, 30*time.Second, "nbdinfo", "--size", uri))); size != fmt.Sprint(512<<20) {
		t.Fatalf("nbdinfo --size: %s", size)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	out, err := exec.CommandContext(ctx, "nbdinfo", "--size", fmt.Sprintf("nbd://%s/disk0", diskIP)).CombinedOutput()
	cancel()
	if err == nil {
		t.Fatalf("the open-mode export of a capability disk answered: %s", out)
	}

	dir := t.TempDir()
	in, back := filepath.Join(dir, "in"), filepath.Join(dir, "back")
	data := make([]byte, 256<<20)
	rand.Read(data)
	if err := os.WriteFile(in, data, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	runTool(t, 2*time.Minute, "nbdcopy", in, uri)
	wrote := time.Since(start)
	start = time.Now()
	runTool(t, 2*time.Minute, "nbdcopy", uri, back)
	read := time.Since(start)
	got, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < len(data) || sha256.Sum256(got[:len(data)]) != sha256.Sum256(data) {
		t.Fatal("nbdcopy read back other data than it wrote")
	}
	t.Logf("nbdcopy 256 MiB: in %v (%.0f MiB/s), out %v (%.0f MiB/s, the whole 512 MiB disk)",
		wrote.Round(time.Millisecond), 256/wrote.Seconds(), read.Round(time.Millisecond), 512/read.Seconds())

	fio := runTool(t, 2*time.Minute, "fio", "--name=randread", "--ioengine=nbd", "--uri="+uri, "--rw=randread",
		"--bs=4k", "--iodepth=16", "--size=256M", "--time_based", "--runtime=2", "--output-format=json")
	var fj struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOPS float64 `json:"iops"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(fio[bytes.IndexByte(fio, '{'):], &fj); err != nil || len(fj.Jobs) != 1 || fj.Jobs[0].Error != 0 || fj.Jobs[0].Read.IOPS <= 0 {
		t.Fatalf("fio: %v %+v\n%s", err, fj, fio)
	}
	t.Logf("fio nbd 4 KiB random reads, iodepth 16: %.0f IOPS", fj.Jobs[0].Read.IOPS)
	b.must("down", b.name)
	b.assertGone(b.name)
}

// iperf3JSON is the part of iperf3 -J's output checked here.
type iperf3JSON struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		Sum struct { // UDP
			Bytes       float64 `json:"bytes"`
			LostPercent float64 `json:"lost_percent"`
			Packets     float64 `json:"packets"`
		} `json:"sum"`
	} `json:"end"`
}

// TestIperf3: stock iperf3 on the host's kernel stack against cpu0's
// iperf3-compatible server on its own stack: TCP, reverse and UDP, each
// with sane -J figures.
func TestIperf3(t *testing.T) {
	privtest.Tool(t, "iperf3")
	b, hostIP, cpuIP, _, _ := toolsBed(t)
	for _, args := range [][]string{{}, {"-R"}, {"-u", "-b", "200M"}, {"-P", "2"}} {
		argv := append([]string{"iperf3", "-c", cpuIP, "-B", hostIP, "-t", "2", "-J"}, args...)
		var r iperf3JSON
		out := runTool(t, time.Minute, argv...)
		if err := json.Unmarshal(out, &r); err != nil || r.Error != "" {
			t.Fatalf("%v: %v %s\n%s", args, err, r.Error, out)
		}
		e := r.End
		if len(args) > 0 && args[0] == "-u" {
			if e.Sum.Packets == 0 || e.Sum.LostPercent > 10 {
				t.Errorf("%v: %+v", args, e.Sum)
			}
			t.Logf("iperf3 %v: %.0f packets, %.2f %% lost", args, e.Sum.Packets, e.Sum.LostPercent)
			continue
		}
		if e.SumSent.Bytes == 0 || e.SumReceived.Bytes == 0 || e.SumReceived.Bytes > e.SumSent.Bytes {
			t.Errorf("%v: sent %.0f B, received %.0f B", args, e.SumSent.Bytes, e.SumReceived.Bytes)
		}
		t.Logf("iperf3 %v: %.2f Gbit/s received", args, e.SumReceived.BitsPerSecond/1e9)
	}
	b.must("down", b.name)
	b.assertGone(b.name)
}

func netipOf(t testing.TB, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestToolsOverLoss: the standard tools over the peripherals' own TCP on
// a lossy fabric (the fabric's loss injection on the peripheral's port,
// both ways): nbdcopy moves 64 MiB into disk0 and back out byte-exact, and
// iperf3 to cpu0 completes, with retransmissions doing the work.
func TestToolsOverLoss(t *testing.T) {
	privtest.Tool(t, "nbdcopy", "iperf3")
	b, hostIP, cpuIP, diskIP, fm := toolsBed(t)
	b.must("link", "set", "-t", b.name, "disk0", "--loss", "2%", "--seed", "7")
	b.must("link", "set", "-t", b.name, "cpu0", "--loss", "1%", "--seed", "8")
	grant, err := fm.Mint("disk0", netipOf(t, diskIP), manager.WholeDisk(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	uri := fmt.Sprintf("nbd://%s/%s", diskIP, hex.EncodeToString(grant[:]))
	dir := t.TempDir()
	in, back := filepath.Join(dir, "in"), filepath.Join(dir, "back")
	data := make([]byte, 64<<20)
	rand.Read(data)
	if err := os.WriteFile(in, data, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	runTool(t, 3*time.Minute, "nbdcopy", in, uri)
	runTool(t, 3*time.Minute, "nbdcopy", uri, back)
	got, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < len(data) || sha256.Sum256(got[:len(data)]) != sha256.Sum256(data) {
		t.Fatal("nbdcopy over a lossy link read back other data than it wrote")
	}
	t.Logf("nbdcopy 64 MiB in and 512 MiB out over 2 %% loss: %v", time.Since(start).Round(time.Millisecond))

	var r iperf3JSON
	out := runTool(t, time.Minute, "iperf3", "-c", cpuIP, "-B", hostIP, "-t", "2", "-J")
	if err := json.Unmarshal(out, &r); err != nil || r.Error != "" || r.End.SumReceived.Bytes == 0 {
		t.Fatalf("iperf3 over 1 %% loss: %v %s\n%s", err, r.Error, out)
	}
	t.Logf("iperf3 to cpu0 over 1 %% loss: %.2f Gbit/s", r.End.SumReceived.BitsPerSecond/1e9)
	// The loss was real: the fabric dropped frames of both peripherals.
	for _, n := range []string{"disk0", "cpu0"} {
		ls := b.links(n)
		if ls.Kernel == nil || ls.Kernel.Ingress.Dropped+ls.Kernel.Egress.Dropped == 0 {
			t.Errorf("%s: no frame dropped by the fabric's loss injection: %+v", n, ls.Kernel)
		}
	}
	b.must("down", b.name)
	b.assertGone(b.name)
}

// BenchmarkDiskFromHost puts disk0's two protocols side by side with the
// same client stack (the host's kernel, through host access) and the same
// server (disk0's user-level stack), in one run: the UDP storage protocol
// (cpu/storage on a kernel socket, 1 MiB I/O at queue depth 16, no
// workload around it) and NBD (nbdcopy, the stock tool).
func BenchmarkDiskFromHost(b *testing.B) {
	privtest.Tool(b, "nbdcopy")
	for range b.N {
		bd, hostIP, _, diskIP, fm := toolsBed(b)
		grant, err := fm.Mint("disk0", netipOf(b, diskIP), manager.WholeDisk(time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		const size = 512 << 20 // the whole disk
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(hostIP)})
		if err != nil {
			b.Fatal(err)
		}
		dgram.SetKernelBuffers(pc, 8<<20)
		c, err := storage.Dial(pc, &net.UDPAddr{IP: net.ParseIP(diskIP), Port: diskproto.Port}, storage.Options{Capability: grant})
		if err != nil {
			b.Fatal(err)
		}
		const qd, bs = 16, 1 << 20
		buf := make([]byte, bs)
		rand.Read(buf)
		run := func(write bool) float64 {
			var next atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for range qd {
				wg.Go(func() {
					p := make([]byte, bs)
					copy(p, buf)
					for {
						off := next.Add(bs) - bs
						if off >= size {
							return
						}
						var err error
						if write {
							_, err = c.WriteAt(context.Background(), p, off, false)
						} else {
							_, err = c.ReadAt(context.Background(), p, off)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			return size / (1 << 20) / time.Since(start).Seconds()
		}
		b.ReportMetric(run(true), "udp_write_MiB/s")
		b.ReportMetric(run(false), "udp_read_MiB/s")
		st := c.Stats()
		b.ReportMetric(float64(st.Retransmits), "udp_retransmits")
		c.Close()

		uri := fmt.Sprintf("nbd://%s/%s", diskIP, hex.EncodeToString(grant[:]))
		in := filepath.Join(b.TempDir(), "in")
		data := make([]byte, size)
		rand.Read(data)
		if err := os.WriteFile(in, data, 0o600); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		runTool(b, 3*time.Minute, "nbdcopy", in, uri)
		b.ReportMetric(size/(1<<20)/time.Since(start).Seconds(), "nbd_write_MiB/s")
		start = time.Now()
		runTool(b, 3*time.Minute, "nbdcopy", uri, "null:")
		b.ReportMetric(size/(1<<20)/time.Since(start).Seconds(), "nbd_read_MiB/s")
		bd.must("down", bd.name)
	}
}
