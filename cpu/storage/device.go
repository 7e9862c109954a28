package storage

import (
	"context"
	"io"
)

// Device adapts a Client to io.ReaderAt and io.WriterAt with a fixed
// context and FUA choice.
type Device struct {
	c   *Client
	ctx context.Context
	fua bool
}

var (
	_ io.ReaderAt = (*Device)(nil)
	_ io.WriterAt = (*Device)(nil)
)

// Device returns an io.ReaderAt/io.WriterAt view of the disk whose calls
// use ctx, and whose writes use FUA when fua is set.
func (c *Client) Device(ctx context.Context, fua bool) *Device {
	return &Device{c: c, ctx: ctx, fua: fua}
}

// Size is the disk's size in bytes.
func (d *Device) Size() int64 { return d.c.Info().Size }

// ReadAt follows io.ReaderAt: a read reaching past the end returns the
// bytes before it and io.EOF.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	size := d.Size()
	if off >= size {
		return 0, io.EOF
	}
	if int64(len(p)) > size-off {
		n, err := d.c.ReadAt(d.ctx, p[:size-off], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return d.c.ReadAt(d.ctx, p, off)
}

// WriteAt follows io.WriterAt; a write past the end fails whole.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	return d.c.WriteAt(d.ctx, p, off, d.fua)
}
