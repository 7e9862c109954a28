package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/netstation/netstation/fabric/capture"
	"github.com/netstation/netstation/testbed"
	"github.com/spf13/cobra"
)

func newCaptureCmd() *cobra.Command {
	var name, out, filter string
	var count, snaplen int
	var raw bool
	c := &cobra.Command{
		Use:   "capture NODE|fabric -w FILE|- [-c N] [--filter EXPR | EXPR...]",
		Short: "Write what crosses a node's port (or the whole fabric) to a pcap file",
		Long: `Capture frames on a node's fabric-side port (both directions) or, with
"fabric", every frame entering the fabric once, and write them as pcap
(nanosecond timestamps) that tcpdump, tshark and Wireshark read. Checksums
left to offload are completed as a receiver would verify them, and GSO
super-frames (up to 64 KiB of TCP or UDP handed to the veth in one piece)
are written as the MTU-sized frames the wire would carry, segmented in
software; --raw keeps them whole, as the socket saw them (and tcpdump shows).

Impairments (link set --loss/--corrupt) act at the same port as the capture:
frames the node sends are captured before they act (a frame then lost or
corrupted is written intact: checked with --loss 100%), frames to the node
after (the kernel runs the port's egress program before its taps): lost ones
are absent, corrupted ones show the last byte of the IP datagram flipped.
Where the sender left the checksum to offload, the capture completes it over
the flipped byte, so the corruption shows with a valid checksum: the silent
corruption fabric/tcbpf describes, not a bad checksum.

The filter is a small tcpdump-like expression compiled to a kernel socket
filter: e.g. "icmp", "udp and port 7000", "host 10.77.0.10 and not arp".
It may follow the target as arguments, as with tcpdump.

Stops after -c frames, or on Ctrl-C; frames that arrived before are still
written. -w - writes to standard output.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("capture needs -w FILE (or -w - for standard output)")
			}
			if len(args) > 1 {
				if filter != "" {
					return errors.New("give the filter as --filter or as arguments, not both")
				}
				filter = strings.Join(args[1:], " ")
			}
			tb, err := pickTestbed(name)
			if err != nil {
				return err
			}
			// Check everything before creating the file.
			if _, _, err := testbed.CapturePoint(tb, args[0]); err != nil {
				return err
			}
			if filter != "" {
				if _, err := capture.ParseFilter(filter); err != nil {
					return err
				}
			}
			var w io.Writer
			var f *os.File
			if out == "-" {
				f = os.Stdout
			} else {
				if f, err = os.Create(out); err != nil {
					return err
				}
				defer f.Close()
			}
			bw := bufio.NewWriterSize(f, 1<<16)
			w = bw
			quiet := out == "-"
			st, err := testbed.Capture(cmd.Context(), tb, args[0], w, capture.Options{
				Count: count, Snaplen: snaplen, Filter: filter, Raw: raw,
				Ready: func() {
					if !quiet {
						fmt.Fprintf(os.Stderr, "capturing on %s of testbed %s\n", args[0], tb)
					}
				},
			})
			if ferr := bw.Flush(); err == nil {
				err = ferr
			}
			if out != "-" {
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			fmt.Fprintf(os.Stderr, "%d frames captured (%d GSO super-frames written as the frames the wire carries), %d dropped by the kernel\n", st.Packets, st.SuperFrames, st.Dropped)
			return err
		},
	}
	c.Flags().StringVarP(&name, "testbed", "t", "", "testbed name")
	c.Flags().StringVarP(&out, "write", "w", "", "pcap file to write, - for standard output")
	c.Flags().IntVarP(&count, "count", "c", 0, "stop after this many frames (0 = until Ctrl-C)")
	c.Flags().IntVarP(&snaplen, "snaplen", "s", 0, "bytes kept per frame (0 = whole frames)")
	c.Flags().StringVar(&filter, "filter", "", "filter expression (tcpdump-like)")
	c.Flags().BoolVar(&raw, "raw", false, "write GSO super-frames whole, as the socket saw them (default: the MTU-sized frames the wire carries)")
	return c
}
