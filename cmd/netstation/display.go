package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/netstation/netstation/cpu/render"
	"github.com/netstation/netstation/testbed"
	"github.com/spf13/cobra"
)

func newDisplayCmd() *cobra.Command {
	c := &cobra.Command{Use: "display", Short: "Look at a display peripheral: snapshot, stats"}
	c.AddCommand(newDisplaySnapshotCmd(), newDisplayStatsCmd())
	return c
}

func newDisplaySnapshotCmd() *cobra.Command {
	var tb, out string
	c := &cobra.Command{
		Use:   "snapshot DISPLAY -o frame.png",
		Short: "Save the frame a display shows (the last one presented) as PNG",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			name, err := pickTestbed(tb)
			if err != nil {
				return err
			}
			img, info, err := testbed.Snapshot(cmd.Context(), name, a[0], 0, 0)
			if err != nil {
				return err
			}
			if out == "-" {
				_, err = os.Stdout.Write(img)
				return err
			}
			if err := os.WriteFile(out, img, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "%s: %dx%d, %d frames presented, %d bytes -> %s\n", a[0], info.Width, info.Height, info.Frames, len(img), out)
			return nil
		},
	}
	c.Flags().StringVarP(&tb, "testbed", "t", "", "testbed (default: the one up)")
	c.Flags().StringVarP(&out, "output", "o", "frame.png", "PNG file to write (- for stdout)")
	return c
}

func newDisplayStatsCmd() *cobra.Command {
	var tb, output string
	c := &cobra.Command{
		Use:   "stats DISPLAY [-o json]",
		Short: "Print a display's counters: frames presented, frames/s, tiles received and lost, drops",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			name, err := pickTestbed(tb)
			if err != nil {
				return err
			}
			st, err := testbed.DisplayStats(cmd.Context(), name, a[0])
			if err != nil {
				return err
			}
			return emit(output, st, func() {
				fmt.Printf("%s: %dx%d %s\n", a[0], st.Width, st.Height, st.Format)
				fmt.Printf("  frames presented %d (%d by rule), %.1f frames/s now, %.1f over the stream\n", st.Frames, st.Implicit, st.FPS, st.AvgFPS)
				fmt.Printf("  tiles %d received, %d lost; %d datagrams, %d bytes\n", st.Tiles, st.TilesLost, st.Datagrams, st.Bytes)
				fmt.Printf("  drops %s\n", formatDrops(st.Drops))
			})
		},
	}
	c.Flags().StringVarP(&tb, "testbed", "t", "", "testbed (default: the one up)")
	c.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return c
}

func formatDrops(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func newDisplayDemoCmd() *cobra.Command {
	var (
		tb, output, tile string
		from, to         string
		a                render.Args
	)
	c := &cobra.Command{
		Use:   "display [--frames N | --time 10s] [--pattern bars|mandelbrot] [--fps 0] [--tile 20x18]",
		Short: "cpu0 renders an animation and streams it to display0 as tiles over UDP",
		Long: `The display demo: the processor renders an animation (moving colour bars or a
Mandelbrot zoom) and streams it to the display with the netstation display
protocol (UDP port 5910), over both peripherals' user-level stacks. It prints
the sender's frames/s and Mbit/s and the display's own count of frames
presented and tiles lost. Watch it with netstation view.
The default testbed is brought up if no testbed is up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := fmt.Sscanf(tile, "%dx%d", &a.TileW, &a.TileH); err != nil {
				return fmt.Errorf("--tile %q: want WxH, e.g. 20x18", tile)
			}
			if err := checkOutput(output); err != nil {
				return err
			}
			if a.Frames == 0 && a.Duration == 0 {
				a.Frames = 300
			}
			name, err := ensureTestbed(cmd, tb)
			if err != nil {
				return err
			}
			view := newProgressView("display", from, output == "json")
			res, err := testbed.DisplayDemo(cmd.Context(), name, testbed.DisplayDemoArgs{CPU: from, Display: to, Args: a},
				func(p render.Progress) {
					view.update(progressReport{Phase: "stream", Done: int64(p.Frames), Total: int64(a.Frames), Unit: "frames",
						Elapsed: p.Elapsed, RetransmitsName: "-",
						Why: fmt.Sprintf("%s renders or sends no frames (%.0f Mbit/s so far)", from, p.Mbps)}, time.Now())
				})
			view.close()
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(res)
			}
			s := res.Sent
			fmt.Printf("%s -> %s: %d frames of %dx%d %s in %.2fs: %.1f frames/s, %.1f Mbit/s (%d tiles, %d RLE; rendering %.2fs)\n",
				from, to, s.Frames, res.Display.Width, res.Display.Height, a.Pattern, s.Elapsed.Seconds(), s.FPS, s.Mbps, s.Tiles, s.RLETiles, s.Render.Seconds())
			fmt.Printf("%s: %d frames presented (%.1f frames/s), %d tiles drawn, %d lost, drops %s\n", to, res.Presented, res.Display.AvgFPS, res.Tiles, res.TilesLost, formatDrops(res.Display.Drops))
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&tb, "testbed", "t", "", "testbed (default: the one up, else the default testbed, brought up)")
	f.IntVar(&a.Frames, "frames", 0, "frames to send (default 300 unless --time)")
	f.DurationVar(&a.Duration, "time", 0, "send for this long instead")
	f.StringVar(&a.Pattern, "pattern", "bars", "bars or mandelbrot")
	f.Float64Var(&a.FPS, "fps", 0, "pace to this many frames/s (0: as fast as possible)")
	f.StringVar(&tile, "tile", "20x18", "tile size in pixels (20x18 fills one 1472-byte datagram raw)")
	f.StringVar(&a.Encoding, "encoding", "auto", "auto (RLE when smaller), raw or rle")
	f.IntVar(&a.FirstFrame, "first-frame", 0, "animation frame number to start from")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	f.StringVar(&from, "cpu", "cpu0", "the processor")
	f.StringVar(&to, "display", "display0", "the display")
	return c
}
