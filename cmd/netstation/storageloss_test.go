package main

import (
	"bytes"
	"context"
	"crypto/rand"
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
	"github.com/netstation/netstation/fabric/tcbpf"
	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/privtest"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/testbed"
)

// BenchmarkStorageLoss is issue 15's comparison, in one run on one
// testbed with host access: at 0 %, 1 % and 10 % frame loss on disk0's
// port (`netstation link set --loss`, the fabric's tc BPF, both
// directions), the goodput of
//   - demo: cpu0 -> disk0, the storage protocol between the peripherals'
//     user-level stacks (`netstation demo storage`, 32 MiB, 1 MiB I/O,
//     queue depth 16, SHA-256 checked);
//   - udp: the host's kernel -> disk0, the storage protocol (32 MiB, 1 MiB
//     I/O, queue depth 16, every byte read back compared);
//   - nbd: the host's kernel -> disk0, nbdcopy over NBD on disk0's own TCP
//     (32 MiB in, the whole 32 MiB disk out, compared);
//   - nbdkit: the host's kernel -> nbdkit (file plugin, the kernel's TCP)
//     in a kernel namespace of its own on the same bridge, whose port
//     carries the same tc BPF impairment (same loss, same seed), nbdcopy
//     the same way.
//
// Each lossy row also reports its ratio to the lossless row of the same
// run (targets: >= 0.5 at 1 %, >= 0.2 at 10 %). Root: namespaces, BPF.
func BenchmarkStorageLoss(b *testing.B) {
	privtest.Tool(b, "nbdcopy", "nbdkit", "nbdinfo")
	const size = 32 << 20
	for range b.N {
		bd := newBed(b)
		bd.must("up", "-f", bd.topo(bd.name, "host_access: {}\n"+`nodes:
  - {name: cpu0, kind: cpu}
  - {name: disk0, kind: disk, disk: {size: 32MiB}}
`))
		plan := bd.plan()
		hostIP := plan.Host.Addr.Addr().String()
		d, _ := plan.Node("disk0")
		diskIP := d.Addr.Addr().String()
		dir := filepath.Join(bd.state, bd.name)
		fm := manager.New()
		fm.Add(manager.Disk{Name: "disk0", Addr: d.Addr.Addr(), KeyPath: testbed.NodeKey(dir, "disk0"),
			VersionPath: testbed.NodeCapVersion(dir, "disk0")})
		grant, err := fm.Mint("disk0", d.Addr.Addr(), manager.WholeDisk(time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		data := make([]byte, size)
		rand.Read(data)
		in := filepath.Join(b.TempDir(), "in")
		if err := os.WriteFile(in, data, 0o600); err != nil {
			b.Fatal(err)
		}
		nbdkitURI, nbdkitLoss := nbdkitPeer(b, plan, size)
		lossless := map[string]float64{}
		report := func(loss, name string, mibs float64) {
			b.ReportMetric(mibs, name+"_MiB/s@"+loss)
			if loss == "0" {
				lossless[name] = mibs
			} else if l := lossless[name]; l > 0 {
				b.ReportMetric(mibs/l, name+"_ratio@"+loss)
			}
		}
		for _, loss := range []string{"0", "1%", "10%"} {
			// The demo sets (and restores) the loss itself.
			out := bd.must("demo", "storage", "-t", bd.name, "--size", "32MiB", "--loss", loss, "-o", "json")
			var f fioJob
			if err := json.Unmarshal([]byte(out), &f); err != nil || len(f.Jobs) != 1 || !f.Jobs[0].Netstation.Match {
				b.Fatalf("demo at %s loss: %v\n%s", loss, err, out)
			}
			report(loss, "demo_write", float64(f.Jobs[0].Write.BW)/1024)
			report(loss, "demo_read", float64(f.Jobs[0].Read.BW)/1024)

			bd.must("link", "set", "-t", bd.name, "disk0", "--loss", loss, "--seed", "7")
			w, r, st := hostUDP(b, hostIP, diskIP, grant, data)
			report(loss, "udp_write", w)
			report(loss, "udp_read", r)
			b.Logf("udp at %s loss: %d requests, %d retransmits (%d on feedback, %d probes), %d loss events, cwnd %d, pace rate %d MiB/s",
				loss, st.Requests, st.Retransmits, st.FeedbackResend, st.Probes, st.LossEvents, st.Cwnd, st.PaceRate>>20)

			uri := fmt.Sprintf("nbd://%s/%s", diskIP, hex.EncodeToString(grant[:]))
			out2 := filepath.Join(b.TempDir(), "out")
			start := time.Now()
			runTool(b, 10*time.Minute, "nbdcopy", in, uri)
			report(loss, "nbd_write", size/(1<<20)/time.Since(start).Seconds())
			start = time.Now()
			runTool(b, 10*time.Minute, "nbdcopy", uri, out2)
			report(loss, "nbd_read", size/(1<<20)/time.Since(start).Seconds())
			if got, err := os.ReadFile(out2); err != nil || !bytes.Equal(got, data) {
				b.Fatalf("nbd at %s loss: data read back differs (%v)", loss, err)
			}
			bd.must("link", "set", "-t", bd.name, "disk0", "--loss", "0")

			nbdkitLoss(loss)
			start = time.Now()
			runTool(b, 10*time.Minute, "nbdcopy", in, nbdkitURI)
			report(loss, "nbdkit_write", size/(1<<20)/time.Since(start).Seconds())
			start = time.Now()
			runTool(b, 10*time.Minute, "nbdcopy", nbdkitURI, out2+".k")
			report(loss, "nbdkit_read", size/(1<<20)/time.Since(start).Seconds())
			if got, err := os.ReadFile(out2 + ".k"); err != nil || !bytes.Equal(got, data) {
				b.Fatalf("nbdkit at %s loss: data read back differs (%v)", loss, err)
			}
			nbdkitLoss("0")
		}
		bd.must("down", bd.name)
	}
}

// hostUDP writes data to disk0 over the storage protocol from a kernel
// socket on the host's address, reads it back, compares, and returns the
// write and read goodput in MiB/s.
func hostUDP(b *testing.B, hostIP, diskIP string, grant [diskproto.CapabilitySize]byte, data []byte) (float64, float64, storage.Stats) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(hostIP)})
	if err != nil {
		b.Fatal(err)
	}
	dgram.SetKernelBuffers(pc, 8<<20)
	c, err := storage.Dial(pc, &net.UDPAddr{IP: net.ParseIP(diskIP), Port: diskproto.Port}, storage.Options{Capability: grant})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const qd, bs = 16, 1 << 20
	got := make([]byte, len(data))
	run := func(write bool) float64 {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range qd {
			wg.Go(func() {
				for {
					off := next.Add(bs) - bs
					if off >= int64(len(data)) {
						return
					}
					var err error
					if write {
						_, err = c.WriteAt(context.Background(), data[off:off+bs], off, false)
					} else {
						_, err = c.ReadAt(context.Background(), got[off:off+bs], off)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return float64(len(data)) / (1 << 20) / time.Since(start).Seconds()
	}
	w := run(true)
	r := run(false)
	if !bytes.Equal(got, data) {
		b.Fatal("storage protocol: data read back differs")
	}
	return w, r, c.Stats()
}

// nbdkitPeer starts nbdkit (file plugin on a size-byte file, the kernel's
// TCP) in a kernel namespace of the testbed's (so `down` removes it) on
// disk0's bridge, at the subnet's .240, with a tc BPF impairment on its
// fabric port like `link set --loss` puts on disk0's. It returns the URI
// and a function setting the loss ("0", "1%", ...; seed 7).
func nbdkitPeer(b *testing.B, plan *testbed.Plan, size int64) (string, func(string)) {
	d, _ := plan.Node("disk0")
	ns := testbed.Prefix(plan.Testbed) + "nbdkit"
	port := "nk" + plan.Testbed
	if len(port) > 15 {
		port = port[:15]
	}
	addr := netip.AddrFrom4(func() [4]byte { a := plan.Subnet.Addr().As4(); a[3] = 240; return a }())
	sh := func(argv ...string) {
		b.Helper()
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	sh("ip", "netns", "add", ns)
	b.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	sh("ip", "link", "add", port, "type", "veth", "peer", "name", port+"p")
	sh("ip", "link", "set", port, "netns", plan.FabricNS)
	sh("ip", "link", "set", port+"p", "netns", ns)
	sh("ip", "-n", plan.FabricNS, "link", "set", port, "master", d.Bridge, "up")
	sh("ip", "-n", ns, "link", "set", port+"p", "name", "eth0")
	sh("ip", "-n", ns, "addr", "add", netip.PrefixFrom(addr, plan.Subnet.Bits()).String(), "dev", "eth0")
	sh("ip", "-n", ns, "link", "set", "eth0", "up")
	sh("ip", "-n", ns, "link", "set", "lo", "up")
	img := filepath.Join(b.TempDir(), "nbdkit.img")
	if err := os.Truncate(img, size); err != nil {
		f, err := os.Create(img)
		if err != nil {
			b.Fatal(err)
		}
		f.Truncate(size)
		f.Close()
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "nbdkit", "-f", "-i", addr.String(), "-p", "10809", "file", "file="+img)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	uri := fmt.Sprintf("nbd://%s:10809/", addr)
	for i := 0; ; i++ {
		if exec.Command("nbdinfo", "--size", uri).Run() == nil {
			break
		}
		if i > 100 {
			b.Fatalf("nbdkit at %s does not answer", uri)
		}
		time.Sleep(100 * time.Millisecond)
	}
	imp, err := tcbpf.Attach(plan.FabricNS, port)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { imp.Close(); tcbpf.Detach(plan.FabricNS, port) })
	return uri, func(loss string) {
		ppm, err := parsePercent(loss)
		if err != nil {
			b.Fatal(err)
		}
		if err := imp.Set(tcbpf.Params{LossPPM: ppm, Seed: 7}); err != nil {
			b.Fatal(err)
		}
	}
}
