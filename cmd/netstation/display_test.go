package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/render"
	"github.com/netstation/netstation/internal/privtest"
	"github.com/netstation/netstation/testbed"
)

// A small display keeps the known-pattern tests quick and shows that the
// topology's size reaches the framebuffer.
const smallDisplay = `nodes:
  - {name: cpu0, kind: cpu}
  - {name: display0, kind: display, display: {width: 320, height: 180}}
`

// streamBars sends frames of the bars pattern, paced, and returns the
// animation frame number of the last one.
func streamBars(t *testing.T, b *bed, first, frames int) int {
	t.Helper()
	out := b.must("demo", "display", "-t", b.name, "-o", "json", "--pattern", "bars", "--fps", "20",
		"--frames", strconv.Itoa(frames), "--first-frame", strconv.Itoa(first))
	var r testbed.DisplayDemoResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("demo json: %v\n%s", err, out)
	}
	if r.Sent.Frames != uint64(frames) || r.Presented != uint64(frames) || r.TilesLost != 0 {
		t.Fatalf("paced stream not delivered whole: %s", out)
	}
	return r.Sent.LastFrame
}

func bars(w, h, n int) *image.RGBA {
	im := image.NewRGBA(image.Rect(0, 0, w, h))
	render.Bars{}.Draw(im, n)
	return im
}

// samePixels compares img with want exactly, or with tol per channel.
func samePixels(t *testing.T, img image.Image, want *image.RGBA, tol int) {
	t.Helper()
	r := want.Rect
	if !r.In(img.Bounds()) {
		t.Fatalf("image %v does not cover %v", img.Bounds(), r)
	}
	bad := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			gr, gg, gb, _ := img.At(x, y).RGBA()
			o := want.PixOffset(x, y)
			for i, g := range []uint32{gr >> 8, gg >> 8, gb >> 8} {
				if d := int(g) - int(want.Pix[o+i]); d > tol || d < -tol {
					if bad++; bad <= 3 {
						t.Errorf("pixel (%d,%d) channel %d: %d, want %d", x, y, i, g, want.Pix[o+i])
					}
				}
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d channel values differ", bad)
	}
}

// TestDisplayDemo streams both patterns at full speed to the default-size
// display and checks both ends' figures.
func TestDisplayDemo(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	for _, pat := range []string{"bars", "mandelbrot"} {
		out := b.must("demo", "display", "-t", b.name, "-o", "json", "--pattern", pat, "--frames", "30")
		var r testbed.DisplayDemoResult
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("json: %v\n%s", err, out)
		}
		if r.Sent.Frames != 30 || r.Sent.FPS <= 0 || r.Sent.Mbps <= 0 || r.Display.Width != 1280 || r.Display.Height != 720 {
			t.Errorf("%s: sender figures %+v", pat, r.Sent)
		}
		if r.Presented == 0 || r.Tiles == 0 || r.Tiles+r.TilesLost > r.Sent.Tiles {
			t.Errorf("%s: display counted %d frames, %d tiles, %d lost of %d sent", pat, r.Presented, r.Tiles, r.TilesLost, r.Sent.Tiles)
		}
		t.Logf("%s: %.1f frames/s, %.1f Mbit/s; display presented %d, lost %d of %d tiles", pat, r.Sent.FPS, r.Sent.Mbps, r.Presented, r.TilesLost, r.Sent.Tiles)
	}
	out := b.must("display", "stats", "-t", b.name, "display0")
	if !strings.Contains(out, "1280x720 rgba") || !strings.Contains(out, "frames presented") {
		t.Errorf("stats: %s", out)
	}
	if _, err := b.run("display", "snapshot", "-t", b.name, "cpu0", "-o", filepath.Join(t.TempDir(), "x.png")); err == nil {
		t.Error("snapshot of a cpu succeeded")
	}
}

// TestDisplaySnapshotExact: after a known pattern is streamed, the
// snapshot decodes to exactly its last frame.
func TestDisplaySnapshotExact(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, smallDisplay))
	last := streamBars(t, b, 37, 5)
	f := filepath.Join(t.TempDir(), "frame.png")
	b.must("display", "snapshot", "-t", b.name, "display0", "-o", f)
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds() != image.Rect(0, 0, 320, 180) {
		t.Fatalf("snapshot is %v", img.Bounds())
	}
	samePixels(t, img, bars(320, 180, last), 0)
}

// startView runs `netstation view` on a free port and returns its URL.
func startView(t *testing.T, b *bed) string {
	t.Helper()
	c := b.cmd("view", "-t", b.name, "--listen", "127.0.0.1:0")
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("view: %v", err)
	}
	i := strings.Index(line, "http://")
	if i < 0 {
		t.Fatalf("view printed %q", line)
	}
	go io.Copy(io.Discard, stdout)
	return strings.TrimSpace(line[i:])
}

// TestViewServesFrames reads the live MJPEG-style stream with Go: its first
// part is the frame on screen, and a newer frame arrives as a new part.
func TestViewServesFrames(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, smallDisplay))
	first := streamBars(t, b, 3, 2)
	url := startView(t, b)

	page, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(page.Body)
	page.Body.Close()
	if !bytes.Contains(body, []byte(`src="/stream/display0"`)) {
		t.Fatalf("page has no stream of display0:\n%s", body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"stream/display0", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/x-mixed-replace" {
		t.Fatalf("content type %q: %v", resp.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	part := func() (image.Image, int) {
		t.Helper()
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("next part: %v", err)
		}
		img, err := png.Decode(p)
		if err != nil {
			t.Fatalf("part: %v", err)
		}
		n, _ := strconv.Atoi(p.Header.Get("X-Frames"))
		return img, n
	}
	img, n0 := part()
	samePixels(t, img, bars(320, 180, first), 0)

	second := streamBars(t, b, 50, 1)
	for {
		img, n := part()
		if n > n0 {
			samePixels(t, img, bars(320, 180, second), 0)
			break
		}
	}
	if _, err := http.Get(url + "stream/nosuch"); err != nil {
		t.Fatal(err)
	}
}

// TestViewInChromium loads the live page in headless Chromium and checks
// that the screenshot shows the display's frame, pixel for pixel.
func TestViewInChromium(t *testing.T) {
	privtest.Tool(t, "chromium")
	chromium, _ := exec.LookPath("chromium")
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, smallDisplay))
	last := streamBars(t, b, 11, 3)
	url := startView(t, b)
	shot := filepath.Join(t.TempDir(), "shot.png")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--window-size=400,260", "--force-device-scale-factor=1",
		"--screenshot="+shot, url)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	// The page puts the display's image at the top left, unscaled.
	samePixels(t, img, bars(320, 180, last), 2)
	fmt.Fprintf(os.Stderr, "chromium screenshot %v matches frame %d\n", img.Bounds(), last)
}
