package display

import (
	"context"
	"errors"
	"fmt"
	"image"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/wire/tileproto"
)

// Drop reasons, the keys of Stats.Drops.
const (
	DropShort       = "short"
	DropMagic       = "bad_magic"
	DropVersion     = "bad_version"
	DropChecksum    = "bad_checksum"
	DropUnsupported = "unsupported"
	DropMalformed   = "malformed"
	DropOutside     = "outside_framebuffer"
	DropStale       = "stale_frame"
)

// ErrOutside: a tile's rectangle does not lie inside the framebuffer.
var ErrOutside = errors.New("display: tile outside the framebuffer")

// ErrStale: a datagram for a frame older than the one being received, or
// for a frame already presented.
var ErrStale = errors.New("display: stale frame")

// ResyncAfter is how many stale datagrams in a row make the display give
// up the frame it is on and follow the sender back: one stray datagram
// with a far-ahead frame number must not blank a stream for good.
const ResyncAfter = 1024

// Config sizes a display.
type Config struct {
	Width, Height int
	Format        string // declared pixel format (rgba, bgra, rgb); the buffers are RGBA
}

// Stats are a display's counters.
type Stats struct {
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Format string `json:"format"`
	// Datagrams and Bytes count everything received, good or bad.
	Datagrams uint64 `json:"datagrams"`
	Bytes     uint64 `json:"bytes"`
	// Tiles were drawn; TilesLost were announced (a frame's tile count)
	// but never arrived before the frame was presented.
	Tiles     uint64 `json:"tiles"`
	TilesLost uint64 `json:"tiles_lost"`
	// Frames were presented; Implicit of them by the arrival of a newer
	// frame rather than by their PRESENT.
	Frames   uint64 `json:"frames"`
	Implicit uint64 `json:"implicit_presents"`
	// Resyncs counts jumps back to an older frame after ResyncAfter
	// stale datagrams in a row.
	Resyncs uint64 `json:"resyncs"`
	// Reports counts REPORTs sent (to senders and notify addresses);
	// Withheld counts PRESENTs with PresentComplete refused because
	// numbered tiles were missing; Abandoned counts frames of numbered
	// tiles left incomplete when a newer frame or stream began: they are
	// never shown.
	Reports   uint64 `json:"reports"`
	Withheld  uint64 `json:"withheld"`
	Abandoned uint64 `json:"abandoned"`
	// Frame and Stream identify the frame on screen.
	Frame  uint32 `json:"frame"`
	Stream uint32 `json:"stream"`
	// FPS is the present rate over the last second or so; AvgFPS over the
	// current stream.
	FPS    float64           `json:"fps"`
	AvgFPS float64           `json:"avg_fps"`
	Drops  map[string]uint64 `json:"drops,omitempty"`
}

// Display is a framebuffer and the protocol state that feeds it. Its
// methods are safe for concurrent use.
type Display struct {
	cfg Config

	mu       sync.Mutex // guards everything below except front
	back     *image.RGBA
	scratch  []byte
	st       Stats
	started  bool
	stream   uint32
	cur      uint32
	received uint32
	expected uint32
	shown    bool // cur is presented
	staleRun int  // stale datagrams in a row
	// have marks the numbered tiles of cur that arrived (bit i: tile
	// i+1); distinct counts them; top is the highest number seen, so
	// begin clears only what was used.
	have     []uint64
	distinct uint32
	top      int
	out      []byte // a REPORT being built
	first    time.Time
	firstN   uint64
	times    [64]time.Time // recent present times, a ring
	wake     chan struct{} // closed and replaced at every present

	// rect is the screen. back and front stay nil (the screen black)
	// until the first tile arrives: two opaque-black 1280x720 buffers
	// were 7 MiB of dirty pages in every display that never showed a
	// frame, the biggest part of a display's memory (issue 16).
	rect    image.Rectangle
	frontMu sync.RWMutex
	front   *image.RGBA

	pngs pngCache // pngcache.go
}

// New makes a display, black until the first frame is presented.
func New(cfg Config) (*Display, error) {
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > 1<<15 || cfg.Height > 1<<15 {
		return nil, fmt.Errorf("display: bad size %dx%d", cfg.Width, cfg.Height)
	}
	if cfg.Format == "" {
		cfg.Format = "rgba"
	}
	if _, err := tileproto.ParseFormat(cfg.Format); err != nil {
		return nil, err
	}
	d := &Display{cfg: cfg, rect: image.Rect(0, 0, cfg.Width, cfg.Height),
		scratch: make([]byte, tileproto.MaxTileBytes), wake: make(chan struct{}),
		have: make([]uint64, (1<<16)/64)}
	d.st = Stats{Width: cfg.Width, Height: cfg.Height, Format: cfg.Format, Drops: map[string]uint64{}}
	return d, nil
}

// black returns an opaque black image of the screen's size.
func (d *Display) black() *image.RGBA {
	im := image.NewRGBA(d.rect)
	for i := 3; i < len(im.Pix); i += 4 {
		im.Pix[i] = 0xff
	}
	return im
}

// buffers makes the back and front buffers at the first tile. d.mu held.
func (d *Display) buffers() {
	if d.back != nil {
		return
	}
	d.back = d.black()
	d.frontMu.Lock()
	d.front = d.black()
	d.frontMu.Unlock()
}

// dropReason maps a decoding error to its counter.
func dropReason(err error) string {
	switch {
	case errors.Is(err, tileproto.ErrShort):
		return DropShort
	case errors.Is(err, tileproto.ErrMagic):
		return DropMagic
	case errors.Is(err, tileproto.ErrVersion):
		return DropVersion
	case errors.Is(err, tileproto.ErrChecksum):
		return DropChecksum
	case errors.Is(err, tileproto.ErrUnsupported):
		return DropUnsupported
	case errors.Is(err, ErrOutside):
		return DropOutside
	case errors.Is(err, ErrStale):
		return DropStale
	}
	return DropMalformed
}

// Apply handles one datagram. An error means it was dropped (and counted).
// REPORTs the datagram asks for are not sent: see ApplyFrom.
func (d *Display) Apply(b []byte) error { return d.ApplyFrom(b, netip.AddrPort{}, nil) }

// SendFunc sends a REPORT datagram; b is valid during the call only.
type SendFunc func(dst netip.AddrPort, b []byte)

// ApplyFrom handles one datagram from the address from and sends the
// REPORTs it asks for (to from, and to a PRESENT's notify address) with
// send, which may be nil. An error means the datagram was dropped (and
// counted).
func (d *Display) ApplyFrom(b []byte, from netip.AddrPort, send SendFunc) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st.Datagrams++
	d.st.Bytes += uint64(len(b))
	err := d.apply(b, from, send)
	if err != nil {
		d.st.Drops[dropReason(err)]++
	}
	return err
}

func (d *Display) apply(b []byte, from netip.AddrPort, send SendFunc) error {
	h, payload, err := tileproto.Parse(b)
	if err != nil {
		return err
	}
	var opts tileproto.PresentOptions
	switch h.Type {
	case tileproto.TypeReport:
		return fmt.Errorf("%w: a REPORT sent to a display", tileproto.ErrUnsupported)
	case tileproto.TypePresent:
		opts, _ = tileproto.ParsePresentOptions(payload) // Parse checked it
	}
	if h.Type == tileproto.TypeTile {
		// Check the rectangle before the tile can move the frame on: a
		// hostile tile must not present anything.
		if int(h.X)+int(h.W) > d.cfg.Width || int(h.Y)+int(h.H) > d.cfg.Height {
			return fmt.Errorf("%w: %dx%d at (%d,%d)", ErrOutside, h.W, h.H, h.X, h.Y)
		}
	}
	switch {
	case !d.started || h.Stream != d.stream:
		d.presentPending()
		d.started, d.stream = true, h.Stream
		d.begin(h.Frame, h.Tiles)
	default:
		diff := int32(h.Frame - d.cur)
		switch {
		case diff < 0 && d.staleRun >= ResyncAfter:
			// The sender is evidently behind us (or we jumped ahead on
			// a stray datagram): follow it rather than go dark.
			d.st.Resyncs++
			d.begin(h.Frame, h.Tiles)
		case diff < 0:
			d.staleRun++
			return fmt.Errorf("%w: frame %d while receiving %d", ErrStale, h.Frame, d.cur)
		case diff > 0:
			d.presentPending()
			d.begin(h.Frame, h.Tiles)
		case d.shown && h.Type == tileproto.TypePresent && opts.Flags&tileproto.PresentAck != 0:
			// The sender missed our REPORT: tell it again.
			d.report(send, from, &h, false)
			return nil
		case d.shown:
			d.staleRun++
			return fmt.Errorf("%w: frame %d already presented", ErrStale, h.Frame)
		}
	}
	d.staleRun = 0
	if h.Type == tileproto.TypePresent {
		if opts.Flags&tileproto.PresentHold != 0 {
			if opts.Flags&tileproto.PresentAck != 0 {
				d.report(send, from, &h, false)
			}
			return nil
		}
		if opts.Flags&tileproto.PresentComplete != 0 && d.distinct < h.Tiles {
			d.st.Withheld++
			if opts.Flags&tileproto.PresentAck != 0 {
				d.report(send, from, &h, true)
			}
			return nil
		}
		d.expected = h.Tiles
		d.present(false)
		if opts.Flags&tileproto.PresentAck != 0 {
			d.report(send, from, &h, false)
		}
		if opts.Notify.IsValid() && opts.Notify != from {
			d.report(send, opts.Notify, &h, false)
		}
		return nil
	}
	pix, err := tileproto.DecodePixels(d.scratch, &h, payload)
	if err != nil {
		return err
	}
	d.draw(&h, pix)
	d.received++
	d.st.Tiles++
	if i := int(h.Index) - 1; i >= 0 {
		if w, bit := i/64, uint64(1)<<(i%64); d.have[w]&bit == 0 {
			d.have[w] |= bit
			d.distinct++
			d.top = max(d.top, i+1)
		}
	}
	return nil
}

// report sends a REPORT about frame h.Frame of the current stream to dst;
// with missing, it lists the numbered tiles that have not arrived.
func (d *Display) report(send SendFunc, dst netip.AddrPort, h *tileproto.Header, missing bool) {
	if send == nil || !dst.IsValid() {
		return
	}
	r := tileproto.Report{Received: d.distinct}
	if d.shown {
		r.Flags = tileproto.ReportPresented
	}
	if missing && !d.shown && h.Tiles > 0 && h.Tiles <= 1<<16 {
		n := int(h.Tiles+7) / 8
		m := make([]byte, n)
		for i := 0; i < int(h.Tiles); i++ {
			if d.have[i/64]&(1<<(i%64)) == 0 {
				m[i/8] |= 1 << (i % 8)
			}
		}
		r.Missing = m
	}
	rh := tileproto.Header{Stream: d.stream, Frame: d.cur, Tiles: h.Tiles, Index: h.Index}
	d.out = tileproto.AppendReport(d.out[:0], &rh, &r)
	d.st.Reports++
	send(dst, d.out)
}

func (d *Display) begin(frame, tiles uint32) {
	d.cur, d.expected, d.received, d.shown = frame, tiles, 0, false
	clear(d.have[:(d.top+63)/64])
	d.distinct, d.top = 0, 0
}

// presentPending presents the frame being received, if any tile of it
// arrived: the rule for a frame whose PRESENT was lost. A frame of
// numbered tiles is presented so only when it is complete: its sender
// asked for whole frames or none.
func (d *Display) presentPending() {
	if !d.started || d.shown || d.received == 0 {
		return
	}
	if d.distinct > 0 && d.distinct < d.expected {
		d.st.Abandoned++
		// Start the next frame from the screen, not from the torn one.
		d.frontMu.RLock()
		copy(d.back.Pix, d.front.Pix)
		d.frontMu.RUnlock()
		return
	}
	d.present(true)
}

// draw converts pix (h.W x h.H in h.Format) into the back buffer.
func (d *Display) draw(h *tileproto.Header, pix []byte) {
	d.buffers()
	w, bpp := int(h.W), h.Format.BytesPerPixel()
	for row := 0; row < int(h.H); row++ {
		src := pix[row*w*bpp : (row+1)*w*bpp]
		o := d.back.PixOffset(int(h.X), int(h.Y)+row)
		dst := d.back.Pix[o : o+w*4]
		switch h.Format {
		case tileproto.FormatRGBA:
			copy(dst, src)
		case tileproto.FormatBGRA:
			for i := 0; i < len(dst); i += 4 {
				dst[i], dst[i+1], dst[i+2], dst[i+3] = src[i+2], src[i+1], src[i], src[i+3]
			}
		case tileproto.FormatRGB:
			for i, j := 0, 0; i < len(dst); i, j = i+4, j+3 {
				dst[i], dst[i+1], dst[i+2], dst[i+3] = src[j], src[j+1], src[j+2], 0xff
			}
		}
	}
}

func (d *Display) present(implicit bool) {
	if d.expected > d.received {
		d.st.TilesLost += uint64(d.expected - d.received)
	}
	d.buffers()
	d.frontMu.Lock()
	d.front, d.back = d.back, d.front
	d.frontMu.Unlock()
	// Tiles only update rectangles: the next frame starts from this one.
	copy(d.back.Pix, d.front.Pix)
	d.shown = true
	now := time.Now()
	if d.st.Frames == 0 || d.st.Stream != d.stream {
		d.first, d.firstN = now, d.st.Frames
	}
	d.times[d.st.Frames%uint64(len(d.times))] = now
	d.st.Frames++
	if implicit {
		d.st.Implicit++
	}
	d.st.Frame, d.st.Stream = d.cur, d.stream
	close(d.wake)
	d.wake = make(chan struct{})
}

// Stats returns a copy of the counters.
func (d *Display) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.st
	s.Drops = make(map[string]uint64, len(d.st.Drops))
	for k, v := range d.st.Drops {
		if v > 0 {
			s.Drops[k] = v
		}
	}
	if n := s.Frames - d.firstN; n > 1 {
		last := d.times[(s.Frames-1)%uint64(len(d.times))]
		if el := last.Sub(d.first).Seconds(); el > 0 {
			s.AvgFPS = float64(n-1) / el
		}
		// Presents within the last second (as far as the ring reaches).
		now := time.Now()
		var k int
		for i := uint64(0); i < min(n, uint64(len(d.times))); i++ {
			if now.Sub(d.times[(s.Frames-1-i)%uint64(len(d.times))]) <= time.Second {
				k++
			}
		}
		s.FPS = float64(k)
	}
	return s
}

// Snapshot returns a copy of the frame on screen and how many frames had
// been presented when it was taken.
func (d *Display) Snapshot() (*image.RGBA, uint64) {
	d.mu.Lock()
	n := d.st.Frames
	d.frontMu.RLock()
	d.mu.Unlock()
	defer d.frontMu.RUnlock()
	if d.front == nil {
		return d.black(), n
	}
	im := image.NewRGBA(d.front.Rect)
	copy(im.Pix, d.front.Pix)
	return im, n
}

// Wait blocks until more than after frames have been presented, or ctx
// ends, and returns the number presented.
func (d *Display) Wait(ctx context.Context, after uint64) (uint64, error) {
	for {
		d.mu.Lock()
		n, w := d.st.Frames, d.wake
		d.mu.Unlock()
		if n > after {
			return n, nil
		}
		select {
		case <-w:
		case <-ctx.Done():
			return n, ctx.Err()
		}
	}
}

// Serve applies every datagram read from pc until pc is closed. It reads
// in batches on either stack (dgram.Of) and sends replies on pc.
func (d *Display) Serve(pc net.PacketConn) error {
	conn := dgram.Of(pc)
	msgs := make([]dgram.Message, 32)
	for i := range msgs {
		msgs[i].Buf = make([]byte, tileproto.MaxDatagram)
	}
	var out [1]dgram.Message
	send := func(dst netip.AddrPort, b []byte) {
		out[0] = dgram.Message{Buf: b, Addr: dst}
		_, _ = conn.WriteBatch(out[:]) // a lost reply is the sender's to recover
	}
	for {
		n, err := conn.ReadBatch(msgs)
		for i := 0; i < n; i++ {
			_ = d.ApplyFrom(msgs[i].Buf[:msgs[i].N], msgs[i].Addr, send)
		}
		if err != nil {
			return err
		}
	}
}
