package peripherals

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/http"
	"net/netip"
	"time"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/internal/wire/tileproto"
	"github.com/netstation/netstation/peripherals/display"
)

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

// DisplayService is a display peripheral's framebuffer server.
type DisplayService struct {
	d *display.Display
}

// StartDisplay serves the display protocol on p's stack, UDP port
// tileproto.Port, into a width x height framebuffer.
// A zero width or height takes the topology's default, 1280 x 720.
func StartDisplay(p *Peripheral, width, height int, format string) (*DisplayService, error) {
	if width == 0 {
		width = 1280
	}
	if height == 0 {
		height = 720
	}
	d, err := display.New(display.Config{Width: width, Height: height, Format: format})
	if err != nil {
		return nil, err
	}
	pc, err := p.Stack().ListenUDP(netip.AddrPortFrom(p.cfg.Addr.Addr(), tileproto.Port))
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
	if ln, err := p.Stack().ListenTCP(netip.AddrPortFrom(p.cfg.Addr.Addr(), HTTPPort)); err != nil {
		p.log.Error("display: http listen", "err", err)
	} else {
		hs := &http.Server{Handler: d.Handler(p.cfg.Name), ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(ln)
		go func() {
			<-p.Done()
			hs.Close()
		}()
		p.AddService(fmt.Sprintf("http/tcp:%d", HTTPPort))
	}
	p.Handle("display-stats", func(context.Context, ctl.Request, *ctl.Stream) (any, error) { return d.Stats(), nil })
	p.Handle("snapshot", func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
		var a SnapshotArgs
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		if a.Wait > 0 {
			wctx, cancel := context.WithTimeout(ctx, a.Wait)
			_, _ = d.Wait(wctx, a.After)
			cancel()
		}
		im, n := d.Snapshot()
		var buf bytes.Buffer
		enc := png.Encoder{CompressionLevel: png.BestSpeed}
		if err := enc.Encode(&buf, im); err != nil {
			return nil, err
		}
		b := buf.Bytes()
		for off := 0; off < len(b); off += SnapshotChunkSize {
			if err := s.Send(SnapshotChunk{PNG: b[off:min(off+SnapshotChunkSize, len(b))]}); err != nil {
				return nil, err
			}
		}
		return SnapshotInfo{Frames: n, Width: im.Rect.Dx(), Height: im.Rect.Dy(), Size: len(b)}, nil
	})
	p.AddService(fmt.Sprintf("display/udp:%d", tileproto.Port))
	return &DisplayService{d: d}, nil
}

// Display is the framebuffer.
func (s *DisplayService) Display() *display.Display { return s.d }
