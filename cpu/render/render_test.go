package render_test

import (
	"context"
	"errors"
	"fmt"
	"image"
	"net/netip"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/render"
	"github.com/netstation/netstation/internal/wire/tileproto"
	"github.com/netstation/netstation/peripherals/display"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/stacktest"
)

// pair is a cpu stack and a display served on a second stack, joined by
// an in-memory link (which blocks rather than drops when full).
type pair struct {
	cpu, disp *stack.Stack
	d         *display.Display
	addr      netip.AddrPort
}

func newPair(t testing.TB, w, h int) *pair {
	t.Helper()
	p := stacktest.New(t, stacktest.Options{}) // 10.0.0.1 and 10.0.0.2
	a, b := p.A, p.B
	d, err := display.New(display.Config{Width: w, Height: h})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := b.ListenUDP(netip.MustParseAddrPort(fmt.Sprintf("10.0.0.2:%d", tileproto.Port)))
	if err != nil {
		t.Fatal(err)
	}
	go d.Serve(pc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Ping(ctx, netip.MustParseAddr("10.0.0.2"), 8); err != nil { // resolve ARP
		t.Fatal(err)
	}
	return &pair{cpu: a, disp: b, d: d, addr: netip.MustParseAddrPort("10.0.0.2:0")}
}

func (p *pair) wait(t testing.TB, frames uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.d.Wait(ctx, frames-1); err != nil {
		t.Fatalf("%d frames not presented: %+v", frames, p.d.Stats())
	}
}

func TestStreamOverUserStacks(t *testing.T) {
	for _, tile := range [][2]int{{20, 18}, {64, 64}, {100, 37}} {
		t.Run(fmt.Sprintf("%dx%d", tile[0], tile[1]), func(t *testing.T) {
			const w, h = 320, 180
			p := newPair(t, w, h)
			res, err := render.Run(context.Background(), p.cpu, render.Args{Display: p.addr, Local: netip.MustParseAddr("10.0.0.1"),
				Width: w, Height: h, Pattern: "mandelbrot", Frames: 4, FirstFrame: 20, TileW: tile[0], TileH: tile[1], FPS: 100}, nil)
			if err != nil {
				t.Fatal(err)
			}
			p.wait(t, 4)
			want := image.NewRGBA(image.Rect(0, 0, w, h))
			render.Mandelbrot{}.Draw(want, res.LastFrame)
			snap, _ := p.d.Snapshot()
			if res.LastFrame != 23 || string(snap.Pix) != string(want.Pix) {
				t.Fatalf("snapshot is not frame %d", res.LastFrame)
			}
			st := p.d.Stats()
			if res.Frames != 4 || st.Tiles != res.Tiles || st.TilesLost != 0 || res.Mbps <= 0 {
				t.Errorf("sent %+v, display %+v", res, st)
			}
		})
	}
}

func TestArgsRejected(t *testing.T) {
	base := render.Args{Display: netip.MustParseAddrPort("127.0.0.1:1"), Width: 64, Height: 64, Frames: 1}
	for name, mod := range map[string]func(*render.Args){
		"size":     func(a *render.Args) { a.Width = 0 },
		"tile":     func(a *render.Args) { a.TileW, a.TileH = 300, 300 },
		"encoding": func(a *render.Args) { a.Encoding = "zip" },
		"frames":   func(a *render.Args) { a.Frames = -1 },
	} {
		a := base
		mod(&a)
		if _, err := render.Stream(context.Background(), nil, a, nil); !errors.Is(err, render.ErrArgs) {
			t.Errorf("%s: %v, want ErrArgs", name, err)
		}
	}
	a := base
	a.Pattern = "plaid"
	if _, err := render.Stream(context.Background(), nil, a, nil); err == nil {
		t.Error("unknown pattern accepted")
	}
}

func TestEncoderTiles(t *testing.T) {
	e := &render.Encoder{TileW: 20, TileH: 18, Encoding: "raw"}
	if n := e.Tiles(1280, 720); n != 64*40 {
		t.Fatalf("%d tiles for 1280x720", n)
	}
	im := image.NewRGBA(image.Rect(0, 0, 45, 20))
	dg := e.Frame(im, 1)
	if len(dg) != 3*2+1 {
		t.Fatalf("%d datagrams for 45x20 in 20x18 tiles", len(dg))
	}
	for _, b := range dg[:len(dg)-1] {
		if len(b) > 1472 {
			t.Errorf("tile of %d bytes exceeds one datagram", len(b))
		}
	}
}

// BenchmarkStream1280x720 sends 1280x720 RGBA frames of noise-like
// Mandelbrot pixels, raw, between two user-level stacks: tiles that fit
// one frame against tiles the stack fragments.
func BenchmarkStream1280x720(b *testing.B) {
	for _, tile := range [][2]int{{20, 18}, {64, 32}, {64, 64}, {128, 127}} {
		b.Run(fmt.Sprintf("tile=%dx%d", tile[0], tile[1]), func(b *testing.B) {
			const w, h = 1280, 720
			p := newPair(b, w, h)
			pc, err := p.cpu.ListenUDP(netip.MustParseAddrPort("10.0.0.1:0"))
			if err != nil {
				b.Fatal(err)
			}
			e := &render.Encoder{TileW: tile[0], TileH: tile[1], Encoding: "raw", Stream: 1}
			im := image.NewRGBA(image.Rect(0, 0, w, h))
			render.Mandelbrot{}.Draw(im, 100)
			dst := netip.MustParseAddrPort(fmt.Sprintf("10.0.0.2:%d", tileproto.Port))
			var msgs []stack.Message
			b.SetBytes(int64(len(im.Pix)))
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				msgs = msgs[:0]
				for _, d := range e.Frame(im, uint32(i)) {
					msgs = append(msgs, stack.Message{Buf: d, Addr: dst})
				}
				for off := 0; off < len(msgs); {
					k, err := pc.WriteBatch(msgs[off:])
					if err != nil {
						b.Fatal(err)
					}
					off += k
				}
			}
			// Wait for the display to catch up; a lost last PRESENT
			// leaves the final frame unpresented, so do not insist.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			p.d.Wait(ctx, uint64(b.N-1))
			cancel()
			el := time.Since(start).Seconds()
			st := p.d.Stats()
			b.ReportMetric(float64(st.Frames)/el, "presented/s")
			b.ReportMetric(float64(st.TilesLost)/float64(st.Tiles+st.TilesLost+1)*100, "%tiles_lost")
		})
	}
}

func TestPatternsDeterministic(t *testing.T) {
	for _, name := range []string{"bars", "mandelbrot"} {
		p, err := render.PatternByName(name)
		if err != nil {
			t.Fatal(err)
		}
		a, b, c := image.NewRGBA(image.Rect(0, 0, 99, 51)), image.NewRGBA(image.Rect(0, 0, 99, 51)), image.NewRGBA(image.Rect(0, 0, 99, 51))
		p.Draw(a, 5)
		p.Draw(b, 5)
		p.Draw(c, 6)
		if string(a.Pix) != string(b.Pix) || string(a.Pix) == string(c.Pix) {
			t.Errorf("%s: frame 5 not reproducible, or frame 6 the same", name)
		}
		for i := 3; i < len(a.Pix); i += 4 {
			if a.Pix[i] != 0xff {
				t.Fatalf("%s: pixel %d not opaque", name, i/4)
			}
		}
	}
}

func BenchmarkDrawMandelbrot1280x720(b *testing.B) {
	im := image.NewRGBA(image.Rect(0, 0, 1280, 720))
	for i := 0; i < b.N; i++ {
		render.Mandelbrot{}.Draw(im, i)
	}
}
