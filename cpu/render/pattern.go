package render

import (
	"fmt"
	"image"
	"math"
	"runtime"
	"sync"
)

// Pattern draws frame number n of an animation into im, deterministically:
// the same n always gives the same pixels, which is what lets a test
// compare a display's snapshot with the source.
type Pattern interface {
	Draw(im *image.RGBA, n int)
}

// PatternByName returns "bars" or "mandelbrot".
func PatternByName(name string) (Pattern, error) {
	switch name {
	case "", "bars":
		return Bars{}, nil
	case "mandelbrot":
		return Mandelbrot{}, nil
	}
	return nil, fmt.Errorf("render: unknown pattern %q (want bars or mandelbrot)", name)
}

// barColours are the SMPTE-like colour bars, opaque.
var barColours = [8][4]byte{
	{0xff, 0xff, 0xff, 0xff}, {0xff, 0xff, 0x00, 0xff}, {0x00, 0xff, 0xff, 0xff}, {0x00, 0xff, 0x00, 0xff},
	{0xff, 0x00, 0xff, 0xff}, {0xff, 0x00, 0x00, 0xff}, {0x00, 0x00, 0xff, 0xff}, {0x10, 0x10, 0x10, 0xff},
}

// Bars are eight vertical colour bars moving 8 pixels right per frame,
// over a grey ramp in the bottom eighth that moves the other way.
type Bars struct{}

// Draw implements Pattern.
func (Bars) Draw(im *image.RGBA, n int) {
	w, h := im.Rect.Dx(), im.Rect.Dy()
	bw := max(w/8, 1)
	ramp := h - h/8
	row := make([]byte, w*4)
	for x := 0; x < w; x++ {
		c := barColours[((x+w-(n*8)%w)%w/bw)%8]
		copy(row[x*4:], c[:])
	}
	rampRow := make([]byte, w*4)
	for x := 0; x < w; x++ {
		g := byte((x + n*4) * 256 / max(w, 1))
		copy(rampRow[x*4:], []byte{g, g, g, 0xff})
	}
	for y := 0; y < h; y++ {
		o := im.PixOffset(im.Rect.Min.X, im.Rect.Min.Y+y)
		if y < ramp {
			copy(im.Pix[o:o+w*4], row)
		} else {
			copy(im.Pix[o:o+w*4], rampRow)
		}
	}
}

// Mandelbrot zooms into the Seahorse valley, 2 % per frame. It is
// computed at half resolution (each 2x2 block one colour) so that a cpu
// peripheral renders 1280x720 at tens of frames per second.
type Mandelbrot struct{}

// Draw implements Pattern; rows are shared among the CPUs.
func (Mandelbrot) Draw(im *image.RGBA, n int) {
	w, h := im.Rect.Dx(), im.Rect.Dy()
	const cx, cy = -0.743643887037151, 0.131825904205330
	scale := 3.0 / float64(max(w, 1)) * math.Pow(0.98, float64(n%600))
	const maxIter = 64
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for k := 0; k < workers; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			for y := 2 * k; y < h; y += 2 * workers {
				ci := cy + (float64(y)-float64(h)/2)*scale
				o := im.PixOffset(im.Rect.Min.X, im.Rect.Min.Y+y)
				row := im.Pix[o : o+w*4]
				for x := 0; x < w; x += 2 {
					cr := cx + (float64(x)-float64(w)/2)*scale
					zr, zi := 0.0, 0.0
					i := 0
					for ; i < maxIter && zr*zr+zi*zi <= 4; i++ {
						zr, zi = zr*zr-zi*zi+cr, 2*zr*zi+ci
					}
					var c [4]byte
					c[3] = 0xff
					if i < maxIter {
						t := float64(i) / maxIter
						c[0] = byte(9 * (1 - t) * t * t * t * 255)
						c[1] = byte(15 * (1 - t) * (1 - t) * t * t * 255)
						c[2] = byte(8.5 * (1 - t) * (1 - t) * (1 - t) * t * 255)
					}
					copy(row[x*4:], c[:])
					if x+1 < w {
						copy(row[x*4+4:], c[:])
					}
				}
				if y+1 < h {
					o2 := im.PixOffset(im.Rect.Min.X, im.Rect.Min.Y+y+1)
					copy(im.Pix[o2:o2+w*4], row)
				}
			}
		}(k)
	}
	wg.Wait()
}
