package afpacket

import (
	"errors"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/stack/link"
)

// Receive-ring layout (include/uapi/linux/if_packet.h).
const (
	rxFrameSize = 2048 // tp_frame_size: only sizes the ring's frame count in V3

	// struct tpacket_block_desc: version, offset_to_priv, then
	// tpacket_hdr_v1.
	bdStatus   = 8
	bdNumPkts  = 12
	bdFirstPkt = 16
	bdBlkLen   = 20
	bdSize     = 48 // also the offset of the first packet (no private area)

	// struct tpacket3_hdr.
	phNextOffset = 0
	phSnaplen    = 12
	phLen        = 16
	phStatus     = 20
	phMac        = 24
	phSize       = 48

	tpacketAlign = 8 // V3_ALIGNMENT: every packet header starts 8-byte aligned
)

// rxRing walks a TPACKET_V3 receive ring.
type rxRing struct {
	mem       []byte
	blockSize int
	blocks    int

	cur  int // block being read
	seen int // packets of cur already delivered
	off  int // offset in cur of the next packet to deliver

	// release lists blocks whose packets were all delivered by the last
	// ReadBatch: they go back to the kernel at the start of the next one.
	release []int

	pfd [2]unix.PollFd // poll set, kept here so sleeping does not allocate
}

func (r *rxRing) init(mem []byte, blockSize, blocks int) {
	r.mem, r.blockSize, r.blocks = mem, blockSize, blocks
	r.off = bdSize
	r.release = make([]int, 0, blocks)
}

func (r *rxRing) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&r.mem[off])) }

func (r *rxRing) u16(off int) uint16 { return *(*uint16)(unsafe.Pointer(&r.mem[off])) }

// giveBack hands block b back to the kernel.
func (r *rxRing) giveBack(b int) {
	atomic.StoreUint32(r.u32(b*r.blockSize+bdStatus), 0)
}

// harvest fills frames from retired blocks without blocking and returns
// how many it filled. A block the kernel still owns is never read: its
// packets' headers may be written before their bytes are visible (the
// kernel copies with no barrier before the header stores, and several CPUs
// fill one block at once), so only TP_STATUS_USER on the block, stored
// after a write barrier when the kernel retires it, proves them complete.
func (l *Link) harvest(frames []link.Frame) int {
	r := &l.rx
	n := 0
	for n < len(frames) {
		if len(r.release) > 0 && r.cur == r.release[0] {
			// Wrapped onto a block this batch finished but the caller may
			// still be reading: it is still TP_STATUS_USER, yet its
			// packets were delivered already.
			return n
		}
		base := r.cur * r.blockSize
		if atomic.LoadUint32(r.u32(base+bdStatus))&unix.TP_STATUS_USER == 0 {
			return n
		}
		num := int(*r.u32(base + bdNumPkts))
		if r.seen == 0 {
			r.off = int(*r.u32(base + bdFirstPkt))
		}
		for r.seen < num && n < len(frames) {
			abs := base + r.off
			if r.off%tpacketAlign != 0 || r.off < bdSize || r.off+phSize > r.blockSize {
				// A corrupt offset: give the rest of the block up.
				l.rxTrunc.Add(1)
				r.seen = num
				break
			}
			next := int(*r.u32(abs + phNextOffset))
			if l.deliver(&frames[n], abs, base) {
				n++
			}
			r.seen++
			if next == 0 {
				r.seen = num
				break
			}
			r.off += next
		}
		if r.seen < num {
			return n
		}
		r.release = append(r.release, r.cur)
		r.cur++
		if r.cur == r.blocks {
			r.cur = 0
		}
		r.seen, r.off = 0, bdSize
	}
	return n
}

// resync moves the reader to the first retired block after cur when cur
// is the kernel's but poll() reported the ring readable: the kernel
// retires blocks in ring order, so that means the reader lost its place,
// and waiting on cur would spin forever. It reports whether it moved.
func (l *Link) resync() bool {
	r := &l.rx
	if r.seen != 0 || atomic.LoadUint32(r.u32(r.cur*r.blockSize+bdStatus))&unix.TP_STATUS_USER != 0 {
		return false
	}
	for i := 1; i < r.blocks; i++ {
		b := (r.cur + i) % r.blocks
		if atomic.LoadUint32(r.u32(b*r.blockSize+bdStatus))&unix.TP_STATUS_USER != 0 {
			r.cur, r.off = b, bdSize
			l.rxResync.Add(1)
			return true
		}
	}
	return false
}

// deliver points f at the packet whose header is at abs and reports whether
// it is a deliverable frame.
func (l *Link) deliver(f *link.Frame, abs, base int) bool {
	r := &l.rx
	snap := int(*r.u32(abs + phSnaplen))
	length := int(*r.u32(abs + phLen))
	mac := int(r.u16(abs + phMac))
	start := abs + mac
	if snap != length || snap < 14 || mac < phSize+link.VNetHdrLen || start+snap > base+r.blockSize {
		l.rxTrunc.Add(1)
		return false
	}
	f.VNet.Decode(r.mem[start-link.VNetHdrLen : start])
	f.Buf = r.mem[start : start+snap : start+snap]
	l.rxFrames.Add(1)
	l.rxBytes.Add(uint64(snap))
	return true
}

func (l *Link) giveBackAll() {
	r := &l.rx
	for _, b := range r.release {
		r.giveBack(b)
	}
	r.release = r.release[:0]
}

// try harvests; when nothing was delivered it hands finished blocks back at
// once, since poll() reports a ring readable while the kernel's previous
// block is still ours.
func (l *Link) try(frames []link.Frame) int {
	n := l.harvest(frames)
	if n == 0 && len(l.rx.release) > 0 {
		l.giveBackAll()
	}
	return n
}

// ReadBatch blocks until at least one frame has arrived and fills
// frames[:n]. The frames point into the receive ring (RxRing) or the
// link's receive buffers (RxRecvmmsg) and stay valid until the next
// ReadBatch or Close.
func (l *Link) ReadBatch(frames []link.Frame) (int, error) {
	if len(frames) == 0 {
		return 0, nil
	}
	l.rxMu.Lock()
	defer l.rxMu.Unlock()
	if l.closed.Load() {
		return 0, link.ErrClosed
	}
	switch l.opts.Rx {
	case RxRecvmmsg:
		return l.readSock(frames)
	case RxFrameRing:
		return l.readFrameRing(frames)
	}
	return l.readRing(frames)
}

// readRing is ReadBatch for RxRing; l.rxMu is held.
func (l *Link) readRing(frames []link.Frame) (int, error) {
	r := &l.rx
	l.giveBackAll()
	if n := l.try(frames); n > 0 {
		return n, nil
	}
	if d := l.opts.BusyPoll; d > 0 {
		deadline := time.Now().Add(d)
		for i := 0; ; i++ {
			if n := l.try(frames); n > 0 {
				return n, nil
			}
			if i&63 == 63 {
				if l.closed.Load() {
					return 0, link.ErrClosed
				}
				if time.Now().After(deadline) {
					break
				}
			}
		}
	}
	r.pfd = [2]unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}, {Fd: int32(l.evfd), Events: unix.POLLIN}}
	for {
		if l.closed.Load() {
			return 0, link.ErrClosed
		}
		for i := range r.pfd {
			r.pfd[i].Revents = 0
		}
		_, err := unix.Poll(r.pfd[:], -1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return 0, err
		}
		if n := l.try(frames); n > 0 {
			return n, nil
		}
		if r.pfd[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
			return 0, unix.EIO
		}
		if r.pfd[0].Revents&unix.POLLIN != 0 && l.resync() {
			if n := l.try(frames); n > 0 {
				return n, nil
			}
		}
	}
}
