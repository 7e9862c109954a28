package disk

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The backing file mapped into memory (MAP_SHARED), so that a WRITE's data
// is copied into the page cache with no system call and a READ's is copied
// out of it straight into the reply's datagrams (or the NBD connection's
// send ring): no pwrite or preadv per request, whose fixed costs (the
// system call, the inode lock and time update of every write, the page
// lookups) were most of the file's share of the disk's CPU.
//
// Durability is unchanged: on Linux a page written through a shared
// mapping is dirty in the page cache like one written by pwrite (the first
// write to a clean page faults and marks it), so fdatasync (FLUSH, FUA)
// writes it back; a killed process leaves its writes in the page cache.
// WRITE data goes in with non-temporal stores (streamCopy, streamcopy.go),
// fenced before the copy returns, so before the WRITE is answered or
// flushed.
//
// Holes go through the file, not the mapping. A read fault on a hole of a
// tmpfs file allocates the page (a testbed's disks live on tmpfs), so
// reading an unwritten device through the mapping would fill memory with
// zeros; and filling a hole through the mapping (a fault per page, the
// page allocated, on ext4 a block reserved per fault) cost 1.3-2x
// pwrite's CPU here (and once 10x on ext4), while a page that exists costs
// the mapping a minor fault once and then half of pwrite's CPU (256 MiB
// rewritten in 256 KiB copies, tmpfs and ext4, 2026-12-01: 35-50 ms of
// CPU against 60-110 ms; reads 27-42 ms against 42-78 ms). A bitmap with
// one bit per page (held) says which pages hold data: set at open from
// the file's extents (SEEK_DATA, SEEK_HOLE) and by every write through
// the file, cleared by a TRIM for the pages it punched whole. A READ or
// WRITE whose pages are all held goes through the mapping; any other
// through the file (preadv, pwrite). A race of a READ with a TRIM at most
// faults in a page of zeros.
//
// The file is the disk's own: it is never shrunk while the disk runs
// (NewServer refuses to cut it, and grows it before mapping). If something
// else truncates it anyway, an access past its end raises SIGBUS; the
// copies run with debug.SetPanicOnFault and turn that into an I/O error
// (ErrFault) instead of a crash.

// pageShift is the granularity of the held bitmap.
const pageShift = 12

// ErrFault wraps a memory fault while copying to or from the mapped
// backing file: it was truncated behind the disk's back.
var ErrFault = errors.New("disk: fault in the mapped backing file (was it truncated?)")

type mapping struct {
	mu   sync.RWMutex // shared by every copy; Close takes it to unmap
	b    []byte       // the device; nil when unmapped (Close, or mmap failed: file I/O)
	held []atomic.Uint64
}

// mapFile maps the backing file and fills the held bitmap from its
// extents. A file that cannot be mapped is served with file I/O.
func (s *Server) mapFile() {
	if s.size == 0 || s.size > uint64(int(^uint(0)>>1)) {
		return
	}
	b, err := unix.Mmap(s.fd, 0, int(s.size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		s.log.Warn("disk: backing file not mapped: using file I/O", "err", err)
		return
	}
	pages := (s.size + 1<<pageShift - 1) >> pageShift
	s.mem.held = make([]atomic.Uint64, (pages+63)/64)
	for off := int64(0); uint64(off) < s.size; {
		data, err := unix.Seek(s.fd, off, unix.SEEK_DATA)
		if err != nil { // ENXIO: no data past off
			if !errors.Is(err, unix.ENXIO) {
				s.markHeld(off, int64(s.size)-off) // cannot tell: assume data
			}
			break
		}
		hole, err := unix.Seek(s.fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = int64(s.size)
		}
		s.markHeld(data, hole-data)
		off = hole
	}
	s.mem.b = b
}

// unmap removes the mapping, once no copy uses it.
func (s *Server) unmap() error {
	s.mem.mu.Lock()
	defer s.mem.mu.Unlock()
	if s.mem.b == nil {
		return nil
	}
	err := unix.Munmap(s.mem.b)
	s.mem.b = nil
	return err
}

// markHeld sets the held bits of the pages [off, off+n) touches.
func (s *Server) markHeld(off, n int64) {
	if n <= 0 || s.mem.held == nil {
		return
	}
	forPageMasks(uint64(off)>>pageShift, uint64(off+n-1)>>pageShift+1, func(w, mask uint64) bool {
		if s.mem.held[w].Load()&mask != mask {
			s.mem.held[w].Or(mask)
		}
		return true
	})
}

// forPageMasks calls fn with each word of the held bitmap that pages
// [first, end) touch and the mask of their bits in it, in order, until fn
// returns false; it reports whether fn never did.
func forPageMasks(first, end uint64, fn func(w, mask uint64) bool) bool {
	for p := first; p < end; {
		bit := p % 64
		k := min(64-bit, end-p)
		if !fn(p/64, ^uint64(0)>>(64-k)<<bit) {
			return false
		}
		p += k
	}
	return true
}

// clearHeld clears the held bits of the pages [off, off+n) covers whole.
func (s *Server) clearHeld(off, n int64) {
	if n <= 0 || s.mem.held == nil {
		return
	}
	first := (uint64(off) + 1<<pageShift - 1) >> pageShift
	end := uint64(off+n) >> pageShift // exclusive
	if off+n == int64(s.size) {
		end = uint64(len(s.mem.held)) * 64
	}
	forPageMasks(first, end, func(w, mask uint64) bool {
		s.mem.held[w].And(^mask)
		return true
	})
}

// allHeld reports whether every page of [off, off+n) is held.
func (s *Server) allHeld(off, n int64) bool {
	if n <= 0 {
		return true
	}
	return forPageMasks(uint64(off)>>pageShift, uint64(off+n-1)>>pageShift+1, func(w, mask uint64) bool {
		return s.mem.held[w].Load()&mask == mask
	})
}

// readMapped copies len(p) bytes at off out of the mapping, if the file
// is mapped and every page of the range is held; ok false leaves p
// untouched (read the file). The range was checked.
func (s *Server) readMapped(p []byte, off int64) (ok bool, err error) {
	s.mem.mu.RLock()
	defer s.mem.mu.RUnlock()
	if s.mem.b == nil || !s.allHeld(off, int64(len(p))) {
		return false, nil
	}
	return true, guardFault(func() { copy(p, s.mem.b[off:]) })
}

// writeMapped copies p into the mapping at off, if the file is mapped and
// every page of the range is held; ok false: write the file (and mark the
// pages held). The range was checked.
func (s *Server) writeMapped(p []byte, off int64) (ok bool, err error) {
	s.mem.mu.RLock()
	defer s.mem.mu.RUnlock()
	if s.mem.b == nil || !s.allHeld(off, int64(len(p))) {
		return false, nil
	}
	return true, guardFault(func() { streamCopy(s.mem.b[off:], p) })
}

// guardFault runs fn with memory faults turned into ErrFault.
func guardFault(fn func()) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			f, ok := r.(interface{ Addr() uintptr })
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("%w: at %#x", ErrFault, f.Addr())
		}
	}()
	fn()
	return nil
}
