package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/netstation/netstation/cpu"
	"github.com/netstation/netstation/cpu/workload"
	"github.com/netstation/netstation/testbed"
	"github.com/netstation/netstation/testbed/spec"
	"github.com/spf13/cobra"
)

func newDemoCmd() *cobra.Command {
	demo := &cobra.Command{Use: "demo", Short: "Run a demo on a testbed"}
	demo.AddCommand(newStorageDemoCmd())
	demo.AddCommand(newDisplayDemoCmd())
	demo.AddCommand(newCapabilityDemoCmd())
	demo.AddCommand(newTransferDemoCmd())
	return demo
}

func newTransferDemoCmd() *cobra.Command {
	var (
		tb, output, tile string
		a                testbed.TransferDemoArgs
	)
	c := &cobra.Command{
		Use:   "transfer [--frames 1] [--tile 20x18] [--pattern mandelbrot] [-o json]",
		Short: "Third-party transfer: cpu0 orders disk0 to send an image straight to display0",
		Long: `The third-party transfer demo (CMU NASD, ISI Netstation): the processor renders
a test image the size of the display and stores it on the disk (storage
protocol, with a capability it mints as the disk's file manager). Then it sends
the disk one TRANSFER order — source range, the display's address, the tile
layout, how many frames, a capability bound to that display — and waits. The
disk reads the range and streams it as display-protocol tiles straight to the
display, paced by the display's reports and resending lost tiles; the display
reports each frame on screen to the processor. The demo then compares the
display's frame with the image pixel for pixel and prints the bytes that
crossed each peripheral's stack during the order: none of the image passes
through the processor. --frames N sends the stored frame N times in one order
and gives frames/s and Mbit/s.
The default testbed is brought up if no testbed is up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := fmt.Sscanf(tile, "%dx%d", &a.TileW, &a.TileH); err != nil {
				return fmt.Errorf("--tile %q: want WxH, e.g. 20x18", tile)
			}
			if err := checkOutput(output); err != nil {
				return err
			}
			name, err := ensureTestbed(cmd, tb)
			if err != nil {
				return err
			}
			view := newProgressView("transfer", a.Disk, output == "json")
			a.Progress = func(p testbed.TransferProgress) { view.update(transferReport(p, a), time.Now()) }
			res, err := testbed.TransferDemo(cmd.Context(), name, a)
			view.close()
			if err != nil {
				return err
			}
			if err := emit(output, res, func() { printTransfer(a, res) }); err != nil {
				return err
			}
			if !res.Match {
				return fmt.Errorf("%s shows a frame that differs from the image in %d pixels", a.Display, res.DiffPixels)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&tb, "testbed", "t", "", "testbed (default: the one up, else the default testbed, brought up)")
	f.IntVar(&a.Frames, "frames", 1, "times the stored image is sent, in one order (frames/s and Mbit/s over them)")
	f.StringVar(&tile, "tile", "20x18", "tile size in pixels (20x18 fills one 1472-byte datagram)")
	f.StringVar(&a.Pattern, "pattern", "mandelbrot", "the test image: mandelbrot or bars")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	f.StringVar(&a.CPU, "cpu", "cpu0", "the processor that orders the transfer")
	f.StringVar(&a.Disk, "disk", "disk0", "the disk that sends")
	f.StringVar(&a.Display, "display", "display0", "the display that shows")
	return c
}

func printTransfer(a testbed.TransferDemoArgs, r *testbed.TransferDemoResult) {
	fmt.Printf("%s stored a %dx%d RGBA image on %s: %d bytes, sha256 %.16s...\n", a.CPU, r.Width, r.Height, a.Disk, r.ImageBytes, r.SHA256)
	d := r.Order.Disk
	fmt.Printf("%s -> %s: %d frames in %.3fs: %.1f frames/s, %.0f Mbit/s of pixels (%d tiles, %d resent, %d checkpoints)\n",
		a.Disk, a.Display, r.Frames, d.Elapsed.Seconds(), r.FPS, r.Mbps, d.Tiles, d.Resent, d.Windows)
	fmt.Printf("%s reported %d frames on screen to %s\n", a.Display, r.Order.Notified, a.CPU)
	if r.Match {
		fmt.Printf("%s's frame equals the image pixel for pixel\n", a.Display)
	} else {
		fmt.Printf("%s's frame DIFFERS from the image in %d pixels\n", a.Display, r.DiffPixels)
	}
	fmt.Println("bytes through each peripheral's stack during the order:")
	for _, s := range r.Stacks {
		fmt.Printf("  %-10s rx %12d B (%7d frames)   tx %12d B (%7d frames)\n", s.Node, s.RxBytes, s.RxFrame, s.TxBytes, s.TxFrame)
	}
	for _, s := range r.Stacks {
		if s.Node == a.CPU {
			fmt.Printf("%s received %d bytes: %.4f%% of the %d image bytes sent\n", a.CPU, s.RxBytes,
				100*float64(s.RxBytes)/float64(uint64(r.ImageBytes)*uint64(max(r.Frames, 1))), uint64(r.ImageBytes)*uint64(r.Frames))
		}
	}
}

func newCapabilityDemoCmd() *cobra.Command {
	var tb, output, from, to string
	c := &cobra.Command{
		Use:   "capabilities [-o json]",
		Short: "cpu0, disk0's file manager, presents good and bad capabilities; disk0 refuses the bad ones",
		Long: `The capability demo (CMU NASD): the processor, as the disk's file manager,
mints capabilities with the key the testbed handed both at up, and presents
the disk with a valid one and with forged (another key), expired,
out-of-range, wrong-rights and replayed (reused nonce) ones. Then it has the
disk revoke (bump its capability version, as netstation disk revoke does): the
valid capability is refused, a freshly minted one works. It prints each case
with the disk's answer and the disk's refusal counters, and exits non-zero
when any case is UNEXPECTED (answered against its want, or refused without
the disk counting the wanted reason). On a multi-host testbed the revocation
reaches every host that runs a cpu, through the agents.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			name, err := ensureTestbed(cmd, tb)
			if err != nil {
				return err
			}
			res, err := testbed.CapabilityDemo(cmd.Context(), name, from, to)
			if err != nil {
				return err
			}
			unexpected := res.Unexpected()
			err = emit(output, res, func() {
				for _, k := range res.Cases {
					mark := "as expected"
					if slices.Contains(unexpected, k.Name) {
						mark = "UNEXPECTED"
					}
					fmt.Printf("  %-42s %-6s -> %-14s (%s)\n", k.Name, k.Op, k.Code, mark)
				}
				fmt.Printf("%s refused: %s; capability version %d -> %d\n", to, formatDrops(res.Refused), res.VersionBefore, res.VersionAfter)
			})
			if err != nil {
				return err
			}
			if len(unexpected) > 0 {
				return fmt.Errorf("%d of %d cases UNEXPECTED: %s", len(unexpected), len(res.Cases), strings.Join(unexpected, "; "))
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&tb, "testbed", "t", "", "testbed (default: the one up, else the default testbed, brought up)")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	f.StringVar(&from, "cpu", "cpu0", "the processor (file manager)")
	f.StringVar(&to, "disk", "disk0", "the disk")
	return c
}

func newDiskCmd() *cobra.Command {
	c := &cobra.Command{Use: "disk", Short: "Look at a disk peripheral and manage its capabilities: stats, grant, revoke"}
	var tb, output string
	stats := &cobra.Command{
		Use:   "stats DISK [-o json]",
		Short: "Print a disk's counters: requests, errors, drops, capability refusals by reason, transfers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			name, err := pickTestbed(tb)
			if err != nil {
				return err
			}
			st, err := testbed.DiskStats(cmd.Context(), name, a[0])
			if err != nil {
				return err
			}
			return emit(output, st, func() {
				fmt.Printf("%s: access %s (capability version %d), %d sessions\n", a[0], st.Access, st.Version, st.Sessions)
				fmt.Printf("  requests %s\n  errors %s\n  drops %s\n  refused %s\n", formatDrops(st.Requests), formatDrops(st.Errors), formatDrops(st.Drops), formatDrops(st.Refused))
				x := st.Transfers
				fmt.Printf("  transfers: %d orders, %d completed, %d failed, %d frames, %d tiles (%d resent), %d bytes\n", x.Orders, x.Completed, x.Failed, x.Frames, x.Tiles, x.Resent, x.Bytes)
			})
		},
	}
	stats.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	revoke := &cobra.Command{
		Use:   "revoke DISK",
		Short: "Revoke every capability of a disk: bump its capability version (the file managers mint at the new one)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			name, err := pickTestbed(tb)
			if err != nil {
				return err
			}
			v, err := testbed.RevokeDisk(cmd.Context(), name, a[0])
			if err != nil {
				return err
			}
			fmt.Printf("%s: capability version now %d; older capabilities are refused\n", a[0], v)
			return nil
		},
	}
	c.PersistentFlags().StringVarP(&tb, "testbed", "t", "", "testbed (default: the one up)")
	c.AddCommand(stats, newDiskGrantCmd(&tb), revoke)
	return c
}

func newDiskGrantCmd(tb *string) *cobra.Command {
	var rights, offset, length, output string
	var ttl time.Duration
	c := &cobra.Command{
		Use:   "grant DISK [--rights all] [--offset N --length N] [--ttl 1h] [-o json]",
		Short: "Mint a capability for a disk and print it, with a ready nbd:// URI for nbdinfo, nbdcopy and qemu-img",
		Long: `Mint a capability for a disk, as the cpus (its file managers) do: sealed with
the disk's key from the testbed's state directory, at the disk's current
capability version, valid for --ttl. It prints the capability in hex, the
nbd:// URI that carries it as the export name, and how this host reaches the
disk's address. Then, from a host with host access to the disk's segment:

  netstation disk grant disk0                     # prints URI=nbd://10.77.0.11/<hex>
  nbdinfo "$URI"                                  # size and flags of disk0's NBD export
  nbdcopy image.raw "$URI"; nbdcopy "$URI" back.raw
  qemu-img info "$URI"
  netstation disk revoke disk0                    # every capability minted before is refused

A refused capability (revoked, expired, forged, out of its range) is refused by
the disk with words saying why: qemu-img prints them; nbdinfo from libnbd 1.14
prints "Operation not supported" (LIBNBD_DEBUG=1 shows the words).
Rights: read, write, flush, trim, joined by commas; rw is read,write,flush (what
nbdcopy onto the disk needs); all is every right. --offset and --length take
sizes (4096, 64MiB); the default range is the whole disk.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var g testbed.GrantArgs
			var err error
			if g.Rights, err = testbed.ParseRights(rights); err != nil {
				return fmt.Errorf("--rights: %w", err)
			}
			for _, x := range []struct {
				flag, s string
				v       *uint64
			}{{"--offset", offset, &g.Offset}, {"--length", length, &g.Length}} {
				if x.s == "" {
					continue
				}
				n, err := spec.ParseSize(x.s)
				if err != nil {
					return fmt.Errorf("%s: %w", x.flag, err)
				}
				if n < 0 || (x.flag == "--length" && n == 0) {
					return fmt.Errorf("%s %s: want a positive size", x.flag, x.s)
				}
				*x.v = uint64(n)
			}
			g.TTL = ttl
			name, err := pickTestbed(*tb)
			if err != nil {
				return err
			}
			res, err := testbed.GrantDisk(cmd.Context(), name, a[0], g)
			if err != nil {
				return err
			}
			return emit(output, res, func() {
				fmt.Printf("%s: %s on bytes [%d, %d), version %d, until %s (%v)\n", res.Disk, res.Rights, res.Offset,
					res.Offset+res.Length, res.Version, res.Expires.Local().Format(time.RFC3339), ttl)
				fmt.Printf("capability: %s\n", res.Capability)
				fmt.Printf("uri: %s\n", res.URI)
				fmt.Printf("reach: %s\n", res.Reach)
				fmt.Printf("revoke: netstation disk revoke -t %s %s\n", name, res.Disk)
			})
		},
	}
	f := c.Flags()
	f.StringVar(&rights, "rights", "all", "read, write, flush, trim joined by commas, or rw (read,write,flush) or all")
	f.StringVar(&offset, "offset", "", "first byte the capability covers (default 0)")
	f.StringVar(&length, "length", "", "bytes it covers from --offset (default: to the end of the disk)")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long it is valid")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	return c
}

// parsePercent reads "10%", "10" or "0.5%" as parts per million.
func parsePercent(s string) (uint32, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || v < 0 || v > 100 {
		return 0, fmt.Errorf("bad percentage %q (want e.g. 10%%)", s)
	}
	return uint32(v * 10_000), nil
}

func newStorageDemoCmd() *cobra.Command {
	var (
		tb, size, bs, loss, stackName, output, from, to, rw string
		qd, maxReq, dgramSize                               int
		seed                                                uint64
	)
	c := &cobra.Command{
		Use:   "storage [--size 256MiB] [--bs 1MiB] [--qd 16] [--loss 0] [--stack user|kernel] [-o json]",
		Short: "cpu0 writes seeded data to disk0 over UDP, flushes, reads it back and verifies it",
		Long: `The storage demo: the processor writes seeded random data to the disk over the
netstation storage protocol (UDP), flushes, reads everything back, compares
SHA-256 digests, and prints an fio-style report. --stack kernel runs the same
protocol over kernel UDP sockets in the same namespaces, for a side-by-side
figure. --loss drops that share of frames on the disk's link, both ways.
The default testbed is brought up if no testbed is up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sz, err := spec.ParseSize(size)
			if err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			b, err := spec.ParseSize(bs)
			if err != nil {
				return fmt.Errorf("--bs: %w", err)
			}
			lossPPM, err := parsePercent(loss)
			if err != nil {
				return fmt.Errorf("--loss: %w", err)
			}
			if stackName != "user" && stackName != "kernel" {
				return fmt.Errorf("--stack must be user or kernel")
			}
			if err := checkOutput(output); err != nil {
				return err
			}
			name, err := ensureTestbed(cmd, tb)
			if err != nil {
				return err
			}
			view := newProgressView("storage", from, output == "json")
			res, err := testbed.StorageDemo(cmd.Context(), name, testbed.StorageDemoArgs{
				CPU: from, Disk: to, LossPPM: lossPPM,
				Args: cpu.StorageArgs{Stack: stackName, Size: sz, BlockSize: int(b), QueueDepth: qd, Seed: seed, Pattern: rw, MaxRequest: maxReq, Datagram: dgramSize},
			}, func(p workload.Progress) {
				view.update(storageReport(p, to), time.Now())
			})
			view.close()
			if err != nil {
				return err
			}
			if output == "json" {
				j, err := res.Report.FioJSON()
				if err != nil {
					return err
				}
				os.Stdout.Write(append(j, '\n'))
				return nil
			}
			res.Report.Text(os.Stdout)
			cs := res.Client
			fmt.Printf("  client: %d requests, %d retransmits, %d timeouts, srtt %.0fus\n", cs.Requests, cs.Retransmits, cs.Timeouts, float64(cs.SRTT.Microseconds()))
			if k := cs.Kernel; k != nil {
				used := "UDP_SEGMENT " + onOff(k.GSO) + ", UDP_GRO " + onOff(k.GRO)
				fmt.Printf("  kernel socket (%s): %s; %.1f datagrams per sent message, %.1f per received buffer\n", k.Mode, used, k.DatagramsPerSend, k.DatagramsPerReceive)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&tb, "testbed", "t", "", "testbed (default: the one up, else the default testbed, brought up)")
	f.StringVar(&size, "size", "256MiB", "bytes to write and read back")
	f.StringVar(&bs, "bs", "1MiB", "bytes per I/O")
	f.IntVar(&qd, "qd", 16, "I/Os in flight")
	f.StringVar(&loss, "loss", "0", "frames dropped on the disk's link, both ways (e.g. 10%)")
	f.StringVar(&stackName, "stack", "user", "user (the peripherals' own stacks) or kernel (baseline)")
	f.StringVarP(&output, "output", "o", "text", "text or json (fio's field names)")
	f.Uint64Var(&seed, "seed", 1, "seed of the data and of the loss pattern")
	f.StringVar(&from, "cpu", "cpu0", "the processor")
	f.StringVar(&to, "disk", "disk0", "the disk")
	f.IntVar(&maxReq, "max-request", 0, "largest data of one protocol request in bytes (0: the disk's maximum, 256 KiB)")
	f.IntVar(&dgramSize, "datagram", 0, "size requests and replies are cut to (0: the MTU less IP and UDP headers; 65507: up to 64 KiB per datagram, IP-fragmented)")
	f.StringVar(&rw, "rw", "seq", "seq (write, flush, read back, compare SHA-256) or randread (fill, then random reads, each block checked)")
	return c
}

// ensureTestbed returns the testbed to use, bringing the default one up
// when none is.
func ensureTestbed(cmd *cobra.Command, flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	names, err := testbed.List()
	if err != nil {
		return "", err
	}
	if len(names) > 0 {
		return pickTestbed("")
	}
	fmt.Fprintln(os.Stderr, "bringing the default testbed up (netstation down removes it)")
	plan, err := testbed.Up(cmd.Context(), spec.Default(), testbed.UpOptions{})
	if err != nil {
		return "", err
	}
	return plan.Testbed, nil
}

// storageReport turns the storage demo's progress into a report, with the
// reason a stall would have: the disk silent, refusing, or losing.
func storageReport(p workload.Progress, disk string) progressReport {
	r := progressReport{Phase: p.Phase, Done: p.Done, Total: p.Total, Unit: "bytes", Elapsed: p.Elapsed,
		Retransmits: p.Retransmits}
	switch {
	case p.SinceReply >= stallAfter/2:
		r.Why = fmt.Sprintf("no answer from %s for %s (%d retransmits so far)", disk, p.SinceReply.Round(time.Second), p.Retransmits)
	case p.Refusal != "":
		r.Why = fmt.Sprintf("%s answers, but refuses: %s", disk, p.Refusal)
	case p.Retransmits > 0:
		r.Why = fmt.Sprintf("%s answers, but requests keep getting lost (%d retransmits so far)", disk, p.Retransmits)
	}
	return r
}

// transferReport turns a transfer order's progress into a report: tiles
// sent for the first time, tiles resent, and why it might stall.
func transferReport(p testbed.TransferProgress, a testbed.TransferDemoArgs) progressReport {
	r := progressReport{Phase: "order", Done: int64(p.Tiles), Total: int64(p.TotalTiles), Unit: "tiles",
		Elapsed: p.Elapsed, Retransmits: p.Resent, RetransmitsName: "tiles resent"}
	if p.Timeouts > 0 {
		r.Why = fmt.Sprintf("%s does not answer %s's checkpoints (%d waited for in vain; %d of %d frames shown)",
			a.Display, a.Disk, p.Timeouts, p.Frames, p.TotalFrames)
	} else {
		r.Why = fmt.Sprintf("%s sends no tiles (%d of %d frames shown)", a.Disk, p.Frames, p.TotalFrames)
	}
	return r
}

func onOff(b bool) string {
	if b {
		return "used"
	}
	return "not used"
}
