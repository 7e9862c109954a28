package bench

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Point is one measured throughput at one datagram size, for Plot.
type Point struct {
	Stack            string // series label, e.g. "user" or "kernel"
	Size             int    // datagram payload bytes
	BitsPerSecond    float64
	PacketsPerSecond float64
}

// PointOf takes a report's received throughput (or the sent one when
// there was no receiver).
func PointOf(r *Report) Point {
	p := Point{Stack: r.Netstation.Stack, Size: r.Start.TestStart.Blksize}
	if r.Netstation.HaveReceiver {
		p.BitsPerSecond, p.PacketsPerSecond = r.End.SumReceived.BitsPerSecond, r.Netstation.PacketsPerSecondReceived
	} else {
		p.BitsPerSecond, p.PacketsPerSecond = r.End.SumSent.BitsPerSecond, r.Netstation.PacketsPerSecondSent
	}
	return p
}

// legend names a series: the kernel's modes say what they are.
func legend(stack string) string {
	switch stack {
	case "kernel":
		return "kernel (UDP_SEGMENT + UDP_GRO)"
	case "kernel-plain":
		return "kernel-plain (a frame per datagram)"
	}
	return stack
}

var seriesColors = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
}

// Plot draws throughput against datagram size, one series per stack, as
// two panels side by side (Gbit/s and kpps), and writes a PNG to w.
func Plot(w io.Writer, title string, points []Point) error {
	if len(points) == 0 {
		return fmt.Errorf("%w: no points to plot", ErrOptions)
	}
	var stacks []string
	for _, p := range points {
		if !slices.Contains(stacks, p.Stack) {
			stacks = append(stacks, p.Stack)
		}
	}
	gbit, err := panel(title+" throughput", "Gbit/s", stacks, points, func(p Point) float64 { return p.BitsPerSecond / 1e9 })
	if err != nil {
		return err
	}
	kpps, err := panel(title+" packet rate", "kpps", stacks, points, func(p Point) float64 { return p.PacketsPerSecond / 1e3 })
	if err != nil {
		return err
	}
	img := vgimg.New(12*vg.Inch, 4.5*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Millimeter * 4, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{{gbit, kpps}}, tiles, dc)
	gbit.Draw(canvases[0][0])
	kpps.Draw(canvases[0][1])
	_, err = vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}

func panel(title, unit string, stacks []string, points []Point, y func(Point) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "datagram size (bytes)"
	p.Y.Label.Text = unit
	p.Y.Min = 0
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	lo, hi, ymax := math.Inf(1), math.Inf(-1), 0.0
	for _, pt := range points {
		lo, hi, ymax = min(lo, float64(pt.Size)), max(hi, float64(pt.Size)), max(ymax, y(pt))
	}
	// Headroom above the highest point keeps the legend off the lines.
	p.Y.Max = ymax*1.25 + 1e-9
	if lo > 0 && hi/lo >= 16 { // a sweep over decades reads better on a log axis
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	for i, s := range stacks {
		var xys plotter.XYs
		for _, pt := range points {
			if pt.Stack == s {
				xys = append(xys, plotter.XY{X: float64(pt.Size), Y: y(pt)})
			}
		}
		slices.SortFunc(xys, func(a, b plotter.XY) int {
			switch {
			case a.X < b.X:
				return -1
			case a.X > b.X:
				return 1
			}
			return 0
		})
		l, sc, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, fmt.Errorf("bench: plot %s: %w", s, err)
		}
		c := seriesColors[i%len(seriesColors)]
		l.Color, sc.Color = c, c
		l.Width = vg.Points(1.5)
		p.Add(l, sc)
		p.Legend.Add(legend(s), l, sc)
	}
	return p, nil
}
