package display_test

import (
	"bytes"
	"context"
	"errors"
	"image"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/render"
	"github.com/netstation/netstation/internal/wire/tileproto"
	"github.com/netstation/netstation/peripherals/display"
)

const w, h = 160, 90

func newDisplay(t testing.TB) *display.Display {
	t.Helper()
	d, err := display.New(display.Config{Width: w, Height: h})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func frame(p render.Pattern, n int) *image.RGBA {
	im := image.NewRGBA(image.Rect(0, 0, w, h))
	p.Draw(im, n)
	return im
}

// send applies every datagram of frame seq (tiles, then PRESENT) except
// those skip says to lose.
func send(t testing.TB, d *display.Display, e *render.Encoder, im *image.RGBA, seq uint32, skip func(i int) bool) {
	t.Helper()
	for i, b := range e.Frame(im, seq) {
		if skip != nil && skip(i) {
			continue
		}
		if err := d.Apply(b); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
	}
}

func mustEqual(t *testing.T, got, want *image.RGBA) {
	t.Helper()
	if !bytes.Equal(got.Pix, want.Pix) {
		for i := range got.Pix {
			if got.Pix[i] != want.Pix[i] {
				px := i / 4
				t.Fatalf("pixel (%d,%d) differs: got %v want %v", px%w, px/w, got.Pix[i&^3:i&^3+4], want.Pix[i&^3:i&^3+4])
			}
		}
	}
}

func TestFramesArriveExactly(t *testing.T) {
	for _, enc := range []string{"raw", "rle", "auto"} {
		for _, name := range []string{"bars", "mandelbrot"} {
			d := newDisplay(t)
			p, _ := render.PatternByName(name)
			e := &render.Encoder{TileW: 20, TileH: 18, Encoding: enc, Stream: 5}
			for n := 0; n < 3; n++ {
				send(t, d, e, frame(p, n), uint32(n), nil)
				snap, frames := d.Snapshot()
				if frames != uint64(n+1) {
					t.Fatalf("%s/%s: %d frames presented after %d", enc, name, frames, n+1)
				}
				mustEqual(t, snap, frame(p, n))
			}
			if st := d.Stats(); st.TilesLost != 0 || len(st.Drops) != 0 || st.Tiles != 3*uint64(e.Tiles(w, h)) {
				t.Errorf("%s/%s: stats %+v", enc, name, st)
			}
		}
	}
}

func TestLostTilesHarmOnlyThemselves(t *testing.T) {
	d := newDisplay(t)
	e := &render.Encoder{TileW: 20, TileH: 18, Encoding: "auto", Stream: 1}
	f0, f1 := frame(render.Mandelbrot{}, 0), frame(render.Bars{}, 3)
	send(t, d, e, f0, 0, nil)
	lost := map[int]bool{}
	tiles := e.Tiles(w, h)
	send(t, d, e, f1, 1, func(i int) bool {
		if i < tiles && i%7 == 3 {
			lost[i] = true
			return true
		}
		return false
	})
	snap, _ := d.Snapshot()
	// Lost tiles keep frame 0's pixels; every other tile shows frame 1.
	want := image.NewRGBA(f1.Rect)
	copy(want.Pix, f1.Pix)
	cols := (w + 19) / 20
	for i := range lost {
		x, y := i%cols*20, i/cols*18
		for r := y; r < min(y+18, h); r++ {
			o := want.PixOffset(x, r)
			copy(want.Pix[o:o+min(20, w-x)*4], f0.Pix[o:])
		}
	}
	mustEqual(t, snap, want)
	if st := d.Stats(); st.TilesLost != uint64(len(lost)) {
		t.Errorf("tiles lost %d, want %d", st.TilesLost, len(lost))
	}
}

func TestSnapshotSeesOnlyPresentedFrames(t *testing.T) {
	d := newDisplay(t)
	e := &render.Encoder{TileW: 32, TileH: 30, Encoding: "raw", Stream: 1}
	f0, f1 := frame(render.Bars{}, 0), frame(render.Bars{}, 1)
	send(t, d, e, f0, 0, nil)
	dg := e.Frame(f1, 1)
	for _, b := range dg[:len(dg)-1] { // every tile of frame 1, no PRESENT
		if err := d.Apply(b); err != nil {
			t.Fatal(err)
		}
	}
	snap, n := d.Snapshot()
	if n != 1 {
		t.Fatalf("%d frames presented, want 1", n)
	}
	mustEqual(t, snap, f0)
	// The first tile of frame 2 presents frame 1 by rule.
	f2 := frame(render.Bars{}, 2)
	if err := d.Apply(e.Frame(f2, 2)[0]); err != nil {
		t.Fatal(err)
	}
	snap, n = d.Snapshot()
	mustEqual(t, snap, f1)
	if st := d.Stats(); n != 2 || st.Implicit != 1 || st.Frame != 1 {
		t.Errorf("after implicit present: %d frames, %+v", n, st)
	}
}

func TestStaleAndDuplicate(t *testing.T) {
	d := newDisplay(t)
	e := &render.Encoder{TileW: 40, TileH: 30, Encoding: "raw", Stream: 1}
	f0, f1 := frame(render.Bars{}, 0), frame(render.Bars{}, 1)
	old := e.Frame(f0, 7)
	oldTile := append([]byte(nil), old[0]...)
	oldPresent := append([]byte(nil), old[len(old)-1]...)
	for _, b := range old {
		d.Apply(b)
	}
	send(t, d, e, f1, 8, nil)
	for _, b := range [][]byte{oldTile, oldPresent, e.Frame(f1, 8)[0]} {
		if err := d.Apply(b); !errors.Is(err, display.ErrStale) {
			t.Errorf("late datagram: %v, want ErrStale", err)
		}
	}
	snap, n := d.Snapshot()
	mustEqual(t, snap, f1)
	if n != 2 || d.Stats().Drops[display.DropStale] != 3 {
		t.Errorf("%d frames, stats %+v", n, d.Stats())
	}
	// A new stream restarts sequencing even at a lower frame number.
	e.Stream = 2
	send(t, d, e, f0, 0, nil)
	snap, _ = d.Snapshot()
	mustEqual(t, snap, f0)
}

func TestHostileTilesCountedAndDropped(t *testing.T) {
	d := newDisplay(t)
	e := &render.Encoder{TileW: 20, TileH: 18, Encoding: "auto", Stream: 1}
	f0 := frame(render.Bars{}, 0)
	send(t, d, e, f0, 0, nil)
	outside := []tileproto.Header{
		{X: w - 1, Y: 0, W: 2, H: 1},
		{X: 0, Y: h, W: 1, H: 1},
		{X: 65535, Y: 65535, W: 65535, H: 1},
	}
	for _, o := range outside {
		o.Type, o.Stream, o.Frame, o.Tiles = tileproto.TypeTile, 1, 1, 1
		b := tileproto.Append(nil, &o, make([]byte, int(o.W)*int(o.H)*4))
		if err := d.Apply(b); !errors.Is(err, display.ErrOutside) {
			t.Errorf("tile %+v: %v, want ErrOutside", o, err)
		}
	}
	// A flood of garbage and of bit-flipped good tiles.
	r := rand.New(rand.NewPCG(3, 4))
	good := e.Frame(frame(render.Mandelbrot{}, 9), 1)
	for i := 0; i < 20000; i++ {
		var b []byte
		if i%2 == 0 {
			b = make([]byte, r.IntN(1500))
			for k := range b {
				b[k] = byte(r.Uint32())
			}
		} else {
			b = append([]byte(nil), good[r.IntN(len(good))]...)
			b[r.IntN(len(b))] ^= byte(1 + r.IntN(255))
		}
		if err := d.Apply(b); err == nil {
			t.Fatalf("corrupt datagram %d accepted", i)
		}
	}
	snap, n := d.Snapshot()
	mustEqual(t, snap, f0)
	st := d.Stats()
	if n != 1 || st.Drops[display.DropOutside] != 3 || st.Drops[display.DropChecksum] == 0 {
		t.Errorf("frames %d, stats %+v", n, st)
	}
}

func TestPixelFormats(t *testing.T) {
	d := newDisplay(t)
	rgba := []byte{10, 20, 30, 40, 50, 60, 70, 80}
	for _, c := range []struct {
		f   tileproto.Format
		pix []byte
	}{
		{tileproto.FormatBGRA, []byte{30, 20, 10, 40, 70, 60, 50, 80}},
		{tileproto.FormatRGB, []byte{10, 20, 30, 50, 60, 70}},
	} {
		hd := tileproto.Header{Type: tileproto.TypeTile, Format: c.f, X: 5, Y: 6, W: 2, H: 1, Stream: 1, Frame: uint32(c.f), Tiles: 1}
		if err := d.Apply(tileproto.Append(nil, &hd, c.pix)); err != nil {
			t.Fatal(err)
		}
		d.Apply(tileproto.Append(nil, &tileproto.Header{Type: tileproto.TypePresent, Stream: 1, Frame: uint32(c.f), Tiles: 1}, nil))
		snap, _ := d.Snapshot()
		o := snap.PixOffset(5, 6)
		want := append([]byte(nil), rgba...)
		if c.f == tileproto.FormatRGB {
			want[3], want[7] = 255, 255
		}
		if !bytes.Equal(snap.Pix[o:o+8], want) {
			t.Errorf("%v: %v, want %v", c.f, snap.Pix[o:o+8], want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, c := range []display.Config{{Width: 0, Height: 1}, {Width: 1, Height: -1}, {Width: 4, Height: 4, Format: "yuv"}} {
		if _, err := display.New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// TestServeOverUDP streams through kernel loopback sockets (no privileges
// needed) and waits for the last frame.
func TestServeOverUDP(t *testing.T) {
	d := newDisplay(t)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Skip("no loopback UDP:", err)
	}
	defer pc.Close()
	if u, ok := pc.(*net.UDPConn); ok {
		u.SetReadBuffer(4 << 20)
	}
	go d.Serve(pc)
	src, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	a := render.Args{Display: pc.LocalAddr().(*net.UDPAddr).AddrPort(), Width: w, Height: h, Pattern: "bars", Frames: 5, FPS: 200}
	res, err := render.Stream(context.Background(), src, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.Wait(ctx, 4); err != nil {
		t.Fatalf("5 frames not presented: %+v", d.Stats())
	}
	snap, _ := d.Snapshot()
	mustEqual(t, snap, frame(render.Bars{}, res.LastFrame))
}

func BenchmarkEncodeApply(b *testing.B) {
	d := newDisplay(b)
	e := &render.Encoder{TileW: 20, TileH: 18, Encoding: "raw", Stream: 1}
	im := frame(render.Mandelbrot{}, 0)
	var bytes int64
	for _, x := range e.Frame(im, 0) {
		bytes += int64(len(x))
	}
	b.SetBytes(bytes)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, x := range e.Frame(im, uint32(i)) {
			d.Apply(x)
		}
	}
}

// TestResyncAfterStrayFrame: a stray datagram from far ahead in the same
// stream stalls the display only for ResyncAfter datagrams.
func TestResyncAfterStrayFrame(t *testing.T) {
	d := newDisplay(t)
	e := &render.Encoder{TileW: 8, TileH: 6, Encoding: "rle", Stream: 1}
	send(t, d, e, frame(render.Bars{}, 0), 0, nil)
	stray := e.Frame(frame(render.Bars{}, 1), 1<<30)[0]
	if err := d.Apply(stray); err != nil {
		t.Fatal(err)
	}
	var n uint32 = 1
	for d.Stats().Resyncs == 0 {
		if n > 10 {
			t.Fatalf("no resync after %d frames: %+v", n, d.Stats())
		}
		for _, b := range e.Frame(frame(render.Bars{}, int(n)), n) {
			d.Apply(b)
		}
		n++
	}
	f := frame(render.Bars{}, 99)
	send(t, d, e, f, n, nil)
	snap, _ := d.Snapshot()
	mustEqual(t, snap, f)
	if st := d.Stats(); st.Drops[display.DropStale] != display.ResyncAfter {
		t.Errorf("stale drops %d, want %d", st.Drops[display.DropStale], display.ResyncAfter)
	}
}

// BenchmarkApply1280x720 measures the display's side alone: whole raw
// frames of 20x18 tiles (2560 datagrams and a PRESENT each) applied and
// presented. Two pre-encoded streams alternate so that every frame is new.
func BenchmarkApply1280x720(b *testing.B) {
	for _, enc := range []string{"raw", "rle"} {
		b.Run(enc, func(b *testing.B) {
			d, err := display.New(display.Config{Width: 1280, Height: 720})
			if err != nil {
				b.Fatal(err)
			}
			im := image.NewRGBA(image.Rect(0, 0, 1280, 720))
			render.Bars{}.Draw(im, 0)
			var frames [2][][]byte
			var size int64
			for i := range frames {
				e := &render.Encoder{TileW: 20, TileH: 18, Encoding: enc, Stream: uint32(i + 1)}
				for _, x := range e.Frame(im, 0) {
					frames[i] = append(frames[i], append([]byte(nil), x...))
					size += int64(len(x))
				}
			}
			b.SetBytes(size / 2)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for _, x := range frames[i%2] {
					if err := d.Apply(x); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
			b.ReportMetric(float64(b.N*len(frames[0]))/b.Elapsed().Seconds(), "datagrams/s")
		})
	}
}
