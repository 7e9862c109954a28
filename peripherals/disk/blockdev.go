package disk

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/internal/wire/diskproto"
)

// ErrRange is returned by the block-device methods for a range that is
// not inside the device.
var ErrRange = errors.New("disk: range beyond the end of the device")

// The block-device view of a Server: what another front end (the NBD
// server, package peripherals/disk/nbd) calls to share the backing file
// with the UDP protocol. Both front ends write through the same file, so
// one fdatasync (Flush, or a FUA write) makes every acknowledged write of
// either durable and they never race on durability. The methods are safe
// for concurrent use and with Serve; after Close they fail with ErrClosed.

// Size is the device size in bytes.
func (s *Server) Size() uint64 { return s.size }

// BlockSize is the device's block size: the preferred I/O granularity.
func (s *Server) BlockSize() int { return s.cfg.BlockSize }

// OpenMode reports whether the Server runs in the documented open mode
// (its Authorizer is OpenAccess).
func (s *Server) OpenMode() bool { return s.open }

// Authorize passes req through the Server's Authorizer: the check every
// UDP request gets, for a request that arrived another way.
func (s *Server) Authorize(req *diskproto.Request, from net.Addr) error {
	return s.cfg.Authorizer.Authorize(req, from)
}

// checkRange validates [off, off+n) against the device.
func (s *Server) checkRange(off int64, n int) error {
	if s.closing.Load() {
		return ErrClosed
	}
	if off < 0 || uint64(off) > s.size || uint64(n) > s.size-uint64(off) {
		return fmt.Errorf("%w: %d bytes at %d (size %d)", ErrRange, n, off, s.size)
	}
	return nil
}

// ReadAt reads len(p) bytes at off. A hole reads as zeros.
func (s *Server) ReadAt(p []byte, off int64) error {
	if err := s.checkRange(off, len(p)); err != nil {
		return err
	}
	s.stats.requests[diskproto.OpRead].Add(1)
	if err := s.readData(p, off); err != nil {
		// The file is as long as the device, so even io.EOF means failure.
		s.stats.errors[diskproto.CodeIO].Add(1)
		return fmt.Errorf("disk: read %d at %d: %w", len(p), off, err)
	}
	s.stats.bytesRead.Add(uint64(len(p)))
	return nil
}

// WriteAt writes p at off; with fua it is durable (fdatasync) before
// WriteAt returns.
func (s *Server) WriteAt(p []byte, off int64, fua bool) error {
	if err := s.checkRange(off, len(p)); err != nil {
		return err
	}
	s.stats.requests[diskproto.OpWrite].Add(1)
	if err := s.writeData(p, off); err != nil {
		s.stats.errors[diskproto.CodeIO].Add(1)
		return fmt.Errorf("disk: write %d at %d: %w", len(p), off, err)
	}
	s.stats.bytesWritten.Add(uint64(len(p)))
	if fua {
		return s.Flush()
	}
	return nil
}

// ReadPieceAt reads len(p) bytes at off as one piece of a read request
// whose data is read in pieces (an NBD READ read straight into the
// connection's send buffer): it counts the bytes; ReadDone counts the
// request.
func (s *Server) ReadPieceAt(p []byte, off int64) error {
	if err := s.checkRange(off, len(p)); err != nil {
		return err
	}
	if err := s.readData(p, off); err != nil {
		s.stats.errors[diskproto.CodeIO].Add(1)
		return fmt.Errorf("disk: read %d at %d: %w", len(p), off, err)
	}
	s.stats.bytesRead.Add(uint64(len(p)))
	return nil
}

// ReadDone counts a read request read with ReadPieceAt.
func (s *Server) ReadDone() { s.stats.requests[diskproto.OpRead].Add(1) }

// WritePieceAt writes p at off as one piece of a write request whose data
// arrives in pieces (an NBD WRITE taken straight from the connection's
// receive buffer): it counts the bytes; WriteDone counts the request.
func (s *Server) WritePieceAt(p []byte, off int64) error {
	if err := s.checkRange(off, len(p)); err != nil {
		return err
	}
	if err := s.writeData(p, off); err != nil {
		s.stats.errors[diskproto.CodeIO].Add(1)
		return fmt.Errorf("disk: write %d at %d: %w", len(p), off, err)
	}
	s.stats.bytesWritten.Add(uint64(len(p)))
	return nil
}

// WriteDone ends a write request written with WritePieceAt: it counts the
// request and, with fua, makes it durable (fdatasync) before it returns.
func (s *Server) WriteDone(fua bool) error {
	s.stats.requests[diskproto.OpWrite].Add(1)
	if fua {
		return s.Flush()
	}
	return nil
}

// Flush makes every write that completed before it durable (fdatasync of
// the backing file), whichever front end wrote it.
func (s *Server) Flush() error {
	if s.closing.Load() {
		return ErrClosed
	}
	s.stats.syncs.Add(1)
	// Through the file's own descriptor reference, so a concurrent Close
	// cannot hand the number to another file between check and call.
	return s.control(func(fd int) error { return unix.Fdatasync(fd) })
}

// Trim discards n bytes at off: the range reads back as zeros. With fua
// the discard is durable before Trim returns.
func (s *Server) Trim(off int64, n int, fua bool) error {
	if err := s.checkRange(off, n); err != nil {
		return err
	}
	s.stats.requests[diskproto.OpTrim].Add(1)
	if err := s.punch(off, int64(n)); err != nil {
		s.stats.errors[diskproto.CodeIO].Add(1)
		return fmt.Errorf("disk: trim %d at %d: %w", n, off, err)
	}
	if fua {
		return s.Flush()
	}
	return nil
}

// control runs fn on the backing file's descriptor while the file holds
// it open.
func (s *Server) control(fn func(fd int) error) error {
	rc, err := s.file.SyscallConn()
	if err != nil {
		return ErrClosed
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return ErrClosed
	}
	return ferr
}

// Admit checks a capability at connection time through the Server's
// Authorizer when it is an Admitter; other Authorizers admit everything
// and judge each request.
func (s *Server) Admit(field [diskproto.CapabilitySize]byte) error {
	if a, ok := s.cfg.Authorizer.(Admitter); ok {
		if err := a.Admit(field); err != nil {
			s.refusals.note(s.log, "NBD export", err, nil)
			return err
		}
	}
	return nil
}

var _ Admitter = (*Server)(nil)
