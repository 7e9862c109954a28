package nbd_test

import (
	"net"
	"testing"

	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/peripherals/disk/nbd"
)

// choppyConn is a connection that lends its receive buffer (nbd.ViewReader)
// in awkward pieces: a request header's bytes at most 5 at a time, split
// over both views, and a WRITE's data at most 4093 bytes at a time, split
// at an odd point; Read serves what a view left over first.
type choppyConn struct {
	net.Conn
	buf  []byte
	pend []byte
}

var _ nbd.ViewReader = (*choppyConn)(nil)

func (c *choppyConn) ReadFunc(max int, fn func(a, b []byte) int) (int, error) {
	if len(c.pend) == 0 {
		n, err := c.Conn.Read(c.buf)
		if n == 0 {
			return 0, err
		}
		c.pend = c.buf[:n]
	}
	limit := 4093
	if max <= 28 {
		limit = 5
	}
	k := min(max, len(c.pend), limit)
	split := min(k, 2+k/3)
	used := fn(c.pend[:split], c.pend[split:k])
	c.pend = c.pend[used:]
	return used, nil
}

func (c *choppyConn) Read(p []byte) (int, error) {
	if len(c.pend) > 0 {
		n := copy(p, c.pend)
		c.pend = c.pend[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

type choppyListener struct{ net.Listener }

func (l choppyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &choppyConn{Conn: c, buf: make([]byte, 64<<10)}, nil
}

// TestChoppyViews runs the pipelined WRITEs and READs over a connection
// that lends its views in pieces: WRITEs stream into the disk from the
// views, and the header after a streamed WRITE is read from them too
// (readHeader), across views and calls.
func TestChoppyViews(t *testing.T) {
	testPipelined(t, serveWrapped(t, 16<<20, disk.OpenAccess{}, nbd.Config{}, func(ln net.Listener) net.Listener { return choppyListener{ln} }))
}
