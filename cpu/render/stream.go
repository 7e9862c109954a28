package render

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/wire/tileproto"
	"github.com/netstation/netstation/stack"
)

// Default tile: 20 x 18 RGBA pixels are 1440 bytes, so a raw tile and its
// 32-byte header fill exactly one 1472-byte UDP payload (no fragments),
// and 1280 x 720 divides into 64 x 40 tiles.
const (
	DefaultTileW = 20
	DefaultTileH = 18
)

// ErrArgs: the stream arguments are unusable.
var ErrArgs = errors.New("render: bad arguments")

// Args describe one animation stream.
type Args struct {
	Display netip.AddrPort `json:"display"` // port 0 means tileproto.Port
	// DisplayName, with Display unset, names the display for the
	// processor to find by membership (gossip).
	DisplayName string        `json:"display_name,omitempty"`
	Local       netip.Addr    `json:"local"` // our address (the stack's)
	Width       int           `json:"width"`
	Height      int           `json:"height"`
	Pattern     string        `json:"pattern"`            // bars or mandelbrot
	Frames      int           `json:"frames,omitempty"`   // stop after this many frames ...
	Duration    time.Duration `json:"duration,omitempty"` // ... or after this long (0 and 0: 100 frames)
	FPS         float64       `json:"fps,omitempty"`      // pace to this rate; 0: as fast as possible
	TileW       int           `json:"tile_w,omitempty"`
	TileH       int           `json:"tile_h,omitempty"`
	Encoding    string        `json:"encoding,omitempty"` // auto (RLE when smaller), raw or rle
	Stream      uint32        `json:"stream,omitempty"`   // 0: random
	// FirstFrame is the animation's frame number of the first frame sent.
	FirstFrame int `json:"first_frame,omitempty"`
}

// Progress is reported about once a second.
type Progress struct {
	Frames  uint64        `json:"frames"`
	Elapsed time.Duration `json:"elapsed"`
	FPS     float64       `json:"fps"`
	Mbps    float64       `json:"mbps"`
}

// Result sums up a stream.
type Result struct {
	Frames    uint64        `json:"frames"`
	Tiles     uint64        `json:"tiles"`
	RLETiles  uint64        `json:"rle_tiles"`
	Bytes     uint64        `json:"bytes"`       // UDP payload bytes sent
	PixelByte uint64        `json:"pixel_bytes"` // raw pixel bytes those carried
	Elapsed   time.Duration `json:"elapsed"`
	Render    time.Duration `json:"render"` // of Elapsed, spent drawing
	FPS       float64       `json:"fps"`
	Mbps      float64       `json:"mbps"`
	// LastFrame is the animation frame number of the last frame sent.
	LastFrame int `json:"last_frame"`
}

func (a *Args) check() error {
	if a.TileW == 0 {
		a.TileW = DefaultTileW
	}
	if a.TileH == 0 {
		a.TileH = DefaultTileH
	}
	if a.Encoding == "" {
		a.Encoding = "auto"
	}
	if a.Display.Port() == 0 {
		a.Display = netip.AddrPortFrom(a.Display.Addr(), tileproto.Port)
	}
	if a.Frames == 0 && a.Duration == 0 {
		a.Frames = 100
	}
	switch {
	case a.Width <= 0 || a.Height <= 0 || a.Width > 65535 || a.Height > 65535:
		return fmt.Errorf("%w: size %dx%d", ErrArgs, a.Width, a.Height)
	case a.TileW <= 0 || a.TileH <= 0 || a.TileW*a.TileH*4 > tileproto.MaxTileBytes ||
		tileproto.HeaderSize+a.TileW*a.TileH*4 > tileproto.MaxDatagram:
		return fmt.Errorf("%w: tile %dx%d", ErrArgs, a.TileW, a.TileH)
	case a.Encoding != "auto" && a.Encoding != "raw" && a.Encoding != "rle":
		return fmt.Errorf("%w: encoding %q", ErrArgs, a.Encoding)
	case a.Frames < 0 || a.Duration < 0 || a.FPS < 0:
		return fmt.Errorf("%w: negative count", ErrArgs)
	}
	_, err := PatternByName(a.Pattern)
	return err
}

// Encoder cuts frames into tile datagrams, reusing its buffers.
type Encoder struct {
	TileW, TileH int
	Encoding     string // auto, raw or rle
	Stream       uint32
	pix, rle     []byte
	bufs         [][]byte
	RLETiles     uint64
}

// Tiles returns how many tiles a w x h frame is cut into.
func (e *Encoder) Tiles(w, h int) int {
	return ((w + e.TileW - 1) / e.TileW) * ((h + e.TileH - 1) / e.TileH)
}

// Frame returns the datagrams of frame number seq of im: its tiles, then
// its PRESENT. They stay valid until the next call.
func (e *Encoder) Frame(im *image.RGBA, seq uint32) [][]byte {
	w, h := im.Rect.Dx(), im.Rect.Dy()
	total := uint32(e.Tiles(w, h))
	need := int(total) + 1
	for len(e.bufs) < need {
		e.bufs = append(e.bufs, make([]byte, 0, tileproto.HeaderSize+e.TileW*e.TileH*4+e.TileW*e.TileH*4/128+8))
	}
	out := e.bufs[:0]
	i := 0
	for y := 0; y < h; y += e.TileH {
		th := min(e.TileH, h-y)
		for x := 0; x < w; x += e.TileW {
			tw := min(e.TileW, w-x)
			e.pix = e.pix[:0]
			for r := 0; r < th; r++ {
				o := im.PixOffset(im.Rect.Min.X+x, im.Rect.Min.Y+y+r)
				e.pix = append(e.pix, im.Pix[o:o+tw*4]...)
			}
			hd := tileproto.Header{Type: tileproto.TypeTile, Format: tileproto.FormatRGBA,
				X: uint16(x), Y: uint16(y), W: uint16(tw), H: uint16(th),
				Stream: e.Stream, Frame: seq, Tiles: total}
			payload := e.pix
			if e.Encoding != "raw" {
				e.rle = tileproto.AppendRLE(e.rle[:0], e.pix, 4)
				if e.Encoding == "rle" || len(e.rle) < len(e.pix) {
					hd.Encoding, payload = tileproto.EncodingRLE, e.rle
					e.RLETiles++
				}
			}
			out = append(out, tileproto.Append(e.bufs[i][:0], &hd, payload))
			i++
		}
	}
	p := tileproto.Header{Type: tileproto.TypePresent, Stream: e.Stream, Frame: seq, Tiles: total}
	out = append(out, tileproto.Append(e.bufs[i][:0], &p, nil))
	return out
}

// Run opens a UDP socket on st and streams the animation a describes.
func Run(ctx context.Context, st *stack.Stack, a Args, progress func(Progress)) (*Result, error) {
	pc, err := st.ListenUDP(netip.AddrPortFrom(a.Local, 0))
	if err != nil {
		return nil, fmt.Errorf("render: listen: %w", err)
	}
	defer pc.Close()
	// Resolve the display's MAC first: the stack holds only a few
	// datagrams while ARP is pending, and a frame is thousands.
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	_, _ = st.Ping(pctx, a.Display.Addr(), 8)
	cancel()
	return Stream(ctx, pc, a, progress)
}

// Stream renders and sends the animation over pc in batches (dgram.Of). Loss is not the sender's business: the
// display counts it.
func Stream(ctx context.Context, pc net.PacketConn, a Args, progress func(Progress)) (*Result, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	pat, _ := PatternByName(a.Pattern)
	if a.Stream == 0 {
		a.Stream = rand.Uint32() | 1
	}
	enc := &Encoder{TileW: a.TileW, TileH: a.TileH, Encoding: a.Encoding, Stream: a.Stream}
	im := image.NewRGBA(image.Rect(0, 0, a.Width, a.Height))
	conn := dgram.Of(pc) // batches on either stack; pc stays the caller's to close
	var msgs []dgram.Message

	res := &Result{}
	start := time.Now()
	lastProgress := start
	var interval time.Duration
	if a.FPS > 0 {
		interval = time.Duration(float64(time.Second) / a.FPS)
	}
	for n := 0; ; n++ {
		if a.Frames > 0 && n >= a.Frames {
			break
		}
		if a.Duration > 0 && time.Since(start) >= a.Duration {
			break
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if interval > 0 {
			if d := time.Until(start.Add(time.Duration(n) * interval)); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return res, ctx.Err()
				}
			}
		}
		t0 := time.Now()
		frame := a.FirstFrame + n
		pat.Draw(im, frame)
		res.Render += time.Since(t0)
		dgrams := enc.Frame(im, uint32(n))
		msgs = msgs[:0]
		for _, d := range dgrams {
			msgs = append(msgs, dgram.Message{Buf: d, Addr: a.Display})
		}
		if _, err := dgram.WriteAll(conn, msgs); err != nil {
			return res, fmt.Errorf("render: send: %w", err)
		}
		for _, d := range dgrams {
			res.Bytes += uint64(len(d))
		}
		res.Tiles += uint64(len(dgrams) - 1)
		res.PixelByte += uint64(len(im.Pix))
		res.Frames++
		res.LastFrame = frame
		if progress != nil && time.Since(lastProgress) >= time.Second {
			lastProgress = time.Now()
			el := time.Since(start)
			progress(Progress{Frames: res.Frames, Elapsed: el, FPS: float64(res.Frames) / el.Seconds(),
				Mbps: float64(res.Bytes) * 8 / 1e6 / el.Seconds()})
		}
	}
	res.RLETiles = enc.RLETiles
	res.Elapsed = time.Since(start)
	if s := res.Elapsed.Seconds(); s > 0 {
		res.FPS = float64(res.Frames) / s
		res.Mbps = float64(res.Bytes) * 8 / 1e6 / s
	}
	return res, nil
}
