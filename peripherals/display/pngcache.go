package display

import (
	"bytes"
	"image"
	"image/png"
	"sync"
	"sync/atomic"
)

// pngCache holds the PNG of the frame on screen, encoded once per
// presented frame however many clients ask for it (snapshot.png, the
// stream, the snapshot op). It keeps one frame's PNG and one scratch
// image, so its memory is bounded by two frames whatever the load.
type pngCache struct {
	mu      sync.Mutex
	frames  uint64 // the presented-frame count the PNG is of
	png     []byte // immutable once published: callers may keep it
	scratch *image.RGBA
	encodes atomic.Uint64
	pool    encoderPool
}

// encoderPool lets png.Encoder reuse its buffers between frames.
type encoderPool struct{ b *png.EncoderBuffer }

func (p *encoderPool) Get() *png.EncoderBuffer  { b := p.b; p.b = nil; return b }
func (p *encoderPool) Put(b *png.EncoderBuffer) { p.b = b }

// PNG returns the frame on screen as a PNG and the number of frames
// presented when it was taken. The bytes are shared: do not modify them.
func (d *Display) PNG() ([]byte, uint64, error) {
	c := &d.pngs
	c.mu.Lock()
	defer c.mu.Unlock()
	d.mu.Lock()
	n := d.st.Frames
	d.mu.Unlock()
	if c.png != nil && c.frames == n {
		return c.png, n, nil
	}
	// As Snapshot: the count under d.mu, then front held before d.mu is
	// let go, so no present slips between them.
	d.mu.Lock()
	n = d.st.Frames
	d.frontMu.RLock()
	d.mu.Unlock()
	switch {
	case d.front == nil: // black until the first tile
		c.scratch = d.black()
	case c.scratch == nil || c.scratch.Rect != d.front.Rect:
		c.scratch = image.NewRGBA(d.front.Rect)
		fallthrough
	default:
		copy(c.scratch.Pix, d.front.Pix)
	}
	d.frontMu.RUnlock()
	var buf bytes.Buffer
	buf.Grow(len(c.png))
	enc := png.Encoder{CompressionLevel: png.BestSpeed, BufferPool: &c.pool}
	if err := enc.Encode(&buf, c.scratch); err != nil {
		return nil, 0, err
	}
	c.encodes.Add(1)
	c.png, c.frames = buf.Bytes(), n
	return c.png, n, nil
}

// PNGEncodes counts the PNG encodings PNG has made: one per presented
// frame that was asked for, not one per request.
func (d *Display) PNGEncodes() uint64 { return d.pngs.encodes.Load() }
