package display

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/internal/wire/tileproto"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/gossip"
)

// Kind is the display: a framebuffer on the testbed, fed with tiles over
// the display protocol (docs/protocols/display.md, UDP port
// tileproto.Port) and shown over HTTP (TCP port HTTPPort) by its own stack.
var Kind = peripherals.Kind{
	Name: "display",
	Doc:  "a framebuffer fed with tiles, shown over HTTP",
	Params: []peripherals.Param{
		{Name: ParamWidth, Doc: "frame width in pixels (default 1280)"},
		{Name: ParamHeight, Doc: "frame height in pixels (default 720)"},
		{Name: ParamFormat, Doc: "pixel format: rgba (default), bgra or rgb"},
	},
	Check: checkParams,
	Start: startKind,
}

// The display's topology parameters (a topology's display block).
const (
	ParamWidth  = "width"
	ParamHeight = "height"
	ParamFormat = "format"
)

// Defaults of a display without parameters, and the largest side (so the
// largest frame buffer, 8192 x 8192 x 4 bytes, stays at 256 MiB).
const (
	DefaultWidth  = 1280
	DefaultHeight = 720
	MaxSide       = 8192
)

// Formats lists the pixel formats a display may declare.
var Formats = []string{"rgba", "bgra", "rgb"}

// The display's control ops.
const (
	OpStats    peripherals.Op = "display-stats" // -> Stats
	OpSnapshot peripherals.Op = "snapshot"      // SnapshotArgs -> SnapshotChunk..., SnapshotInfo
)

// ErrParam: a display parameter's value is wrong.
var ErrParam = errors.New("display")

func params(ps peripherals.Params) (w, h int, format string, err error) {
	w64, err := ps.Int(ParamWidth, DefaultWidth)
	if err != nil {
		return 0, 0, "", err
	}
	h64, err := ps.Int(ParamHeight, DefaultHeight)
	if err != nil {
		return 0, 0, "", err
	}
	for _, side := range []int64{w64, h64} {
		if side < 1 || side > MaxSide {
			return 0, 0, "", fmt.Errorf("%w: side %d: want 1 to %d", ErrParam, side, MaxSide)
		}
	}
	format = ps.String(ParamFormat, "rgba")
	if !slices.Contains(Formats, format) {
		return 0, 0, "", fmt.Errorf("%w: unknown format %q (want %v)", ErrParam, format, Formats)
	}
	return int(w64), int(h64), format, nil
}

func checkParams(ps peripherals.Params) error {
	_, _, _, err := params(ps)
	return err
}

func startKind(ctx context.Context, rt *peripherals.Runtime) (func() error, error) {
	w, h, format, err := params(rt.Params())
	if err != nil {
		return nil, err
	}
	if _, err := Start(rt, w, h, format); err != nil {
		return nil, err
	}
	rt.SetMeta(func(m *gossip.Meta) { m.Width, m.Height = w, h })
	return nil, nil
}

// SnapshotArgs ask a display for its frame on screen. With Wait > 0 the
// reply first waits (up to Wait) for more than After frames to have been
// presented: a live view long-polls this way.
type SnapshotArgs struct {
	After uint64        `json:"after,omitempty"`
	Wait  time.Duration `json:"wait,omitempty"`
}

// SnapshotChunk carries part of the PNG: the control socket bounds one
// line to ctl.MaxLine, so the image travels in intermediate responses.
type SnapshotChunk struct {
	PNG []byte `json:"png"`
}

// SnapshotInfo ends a snapshot.
type SnapshotInfo struct {
	Frames uint64 `json:"frames"` // presented when the snapshot was taken
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Size   int    `json:"size"` // PNG bytes sent in chunks
}

// SnapshotChunkSize is the PNG bytes per intermediate response (base64
// makes 512 KiB about 700 KB, under ctl.MaxLine).
const SnapshotChunkSize = 512 << 10

// HTTPPort is where a display serves HTTP on its own stack.
const HTTPPort = 80

// Service is a display peripheral's framebuffer server.
type Service struct {
	d *Display
}

// Start serves the display protocol on p's stack, UDP port
// tileproto.Port, into a width x height framebuffer, until p stops.
// A zero width or height takes the default, 1280 x 720.
func Start(p *peripherals.Runtime, width, height int, format string) (*Service, error) {
	if width == 0 {
		width = DefaultWidth
	}
	if height == 0 {
		height = DefaultHeight
	}
	d, err := New(Config{Width: width, Height: height, Format: format})
	if err != nil {
		return nil, err
	}
	pc, err := p.Stack().ListenUDP(netip.AddrPortFrom(p.Addr(), tileproto.Port))
	if err != nil {
		return nil, fmt.Errorf("display: listen: %w", err)
	}
	go func() {
		<-p.Done()
		pc.Close()
	}()
	go d.Serve(pc)
	// HTTP on port 80 of the display's own stack (stack/tcp): the live
	// page, the PNG snapshot, the frame stream and the counters, for curl
	// or a browser through host access.
	if ln, err := p.Stack().ListenTCP(netip.AddrPortFrom(p.Addr(), HTTPPort)); err != nil {
		p.Logger().Error("display: http listen", "err", err)
	} else {
		hs := &http.Server{Handler: d.Handler(p.Config().Name), ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(ln)
		go func() {
			<-p.Done()
			hs.Close()
		}()
		p.AddService(fmt.Sprintf("http/tcp:%d", HTTPPort))
	}
	p.Handle(OpStats, func(context.Context, ctl.Request, *ctl.Stream) (any, error) { return d.Stats(), nil })
	p.Handle(OpSnapshot, func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
		var a SnapshotArgs
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		if a.Wait > 0 {
			wctx, cancel := context.WithTimeout(ctx, a.Wait)
			_, _ = d.Wait(wctx, a.After)
			cancel()
		}
		b, n, err := d.PNG()
		if err != nil {
			return nil, err
		}
		for off := 0; off < len(b); off += SnapshotChunkSize {
			if err := s.Send(SnapshotChunk{PNG: b[off:min(off+SnapshotChunkSize, len(b))]}); err != nil {
				return nil, err
			}
		}
		return SnapshotInfo{Frames: n, Width: d.cfg.Width, Height: d.cfg.Height, Size: len(b)}, nil
	})
	p.AddService(fmt.Sprintf("display/udp:%d", tileproto.Port))
	return &Service{d: d}, nil
}

// Display is the framebuffer.
func (s *Service) Display() *Display { return s.d }
