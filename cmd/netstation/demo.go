package main

import (
	"fmt"
	"os"
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
	return demo
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
			if output != "text" && output != "json" {
				return fmt.Errorf("-o must be text or json")
			}
			name, err := ensureTestbed(cmd, tb)
			if err != nil {
				return err
			}
			// The bar redraws one line: only on a terminal, never in JSON mode.
			fi, _ := os.Stderr.Stat()
			quiet := output == "json" || fi == nil || fi.Mode()&os.ModeCharDevice == 0
			var bar progressBar
			res, err := testbed.StorageDemo(cmd.Context(), name, testbed.StorageDemoArgs{
				CPU: from, Disk: to, LossPPM: lossPPM,
				Args: cpu.StorageArgs{Stack: stackName, Size: sz, BlockSize: int(b), QueueDepth: qd, Seed: seed, Pattern: rw, MaxRequest: maxReq, Datagram: dgramSize},
			}, func(p workload.Progress) {
				if !quiet {
					bar.show(p)
				}
			})
			bar.done()
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

// progressBar draws one line on stderr, when stderr is a terminal or not.
type progressBar struct {
	last  time.Time
	shown bool
}

func (b *progressBar) show(p workload.Progress) {
	if time.Since(b.last) < 200*time.Millisecond && p.Done < p.Total {
		return
	}
	b.last = time.Now()
	const width = 30
	frac := float64(p.Done) / float64(max(p.Total, 1))
	n := int(frac * width)
	mibs := float64(p.Done) / (1 << 20) / max(p.Elapsed.Seconds(), 1e-9)
	fmt.Fprintf(os.Stderr, "\r%-5s [%s%s] %3.0f%% %8.1f MiB/s", p.Phase, strings.Repeat("#", n), strings.Repeat(" ", width-n), frac*100, mibs)
	b.shown = true
}

func (b *progressBar) done() {
	if b.shown {
		fmt.Fprintln(os.Stderr)
	}
}
