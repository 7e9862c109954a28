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

	pfd [3]unix.PollFd // poll set, kept here so sleeping does not allocate
}

func (r *rxRing) init(mem []byte, blockSize, blocks int) {
	r.mem, r.blockSize, r.blocks = mem, blockSize, blocks
	r.off = bdSize
	r.release = make([]int, 0, blocks)
}

func (r *rxRing) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&r.mem[off])) }

func (r *rxRing) u16(off int) uint16 { return *(*uint16)(unsafe.Pointer(&r.mem[off])) }

// giveBack wipes the packet area the kernel used in block b, so stale packet
// headers can never look complete when the block is filled again, and hands
// the block back to the kernel.
func (r *rxRing) giveBack(b int) {
	base := b * r.blockSize
	used := int(*r.u32(base + bdBlkLen))
	if used > r.blockSize || used < bdSize {
		used = r.blockSize
	}
	clear(r.mem[base+bdSize : base+used])
	atomic.StoreUint32(r.u32(base+bdStatus), 0)
}

// packetReady reports whether the packet header at abs (absolute offset)
// in a block the kernel may still be filling describes a complete packet.
// The kernel writes the header fields after the packet's bytes, in an order
// the compiler chose, so each field must be non-zero and consistent (the
// block was wiped before the kernel got it back).
func (r *rxRing) packetReady(abs int) bool {
	if atomic.LoadUint32(r.u32(abs+phStatus)) == 0 {
		return false
	}
	snap := atomic.LoadUint32(r.u32(abs + phSnaplen))
	macnet := atomic.LoadUint32(r.u32(abs + phMac)) // tp_mac | tp_net<<16
	return snap != 0 && snap == atomic.LoadUint32(r.u32(abs+phLen)) &&
		macnet&0xffff != 0 && macnet>>16 != 0 &&
		atomic.LoadUint32(r.u32(abs+phNextOffset)) != 0
}

// harvest fills frames from the ring without blocking and returns how many
// it filled.
func (l *Link) harvest(frames []link.Frame) int {
	r := &l.rx
	n := 0
	for n < len(frames) {
		base := r.cur * r.blockSize
		closed := atomic.LoadUint32(r.u32(base+bdStatus))&unix.TP_STATUS_USER != 0
		num := int(^uint32(0) >> 1)
		if closed {
			num = int(*r.u32(base + bdNumPkts))
			if r.seen == 0 {
				r.off = int(*r.u32(base + bdFirstPkt))
			}
		}
		for r.seen < num && n < len(frames) {
			abs := base + r.off
			if r.off%tpacketAlign != 0 || r.off+phSize > r.blockSize {
				// A corrupt offset: give the rest of the block up.
				l.rxTrunc.Add(1)
				r.seen = num
				if !closed {
					return n // wait for the kernel to close it, then skip it
				}
				break
			}
			if !closed && !r.packetReady(abs) {
				break
			}
			next := int(*r.u32(abs + phNextOffset))
			if l.deliver(&frames[n], abs, base) {
				n++
			}
			r.seen++
			if next == 0 {
				if !closed {
					// Unknown position of the next packet: wait for the
					// kernel to close the block.
					return n
				}
				r.seen = num
				break
			}
			r.off += next
		}
		if !closed || r.seen < num {
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

// drainBell empties the doorbell socket's queue.
func (l *Link) drainBell() {
	var b [1]byte
	for {
		_, _, err := unix.Recvfrom(l.bell, b[:], unix.MSG_DONTWAIT|unix.MSG_TRUNC)
		if err != nil && err != unix.EINTR {
			return
		}
	}
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
// frames[:n]. The frames point into the receive ring and stay valid until
// the next ReadBatch or Close.
func (l *Link) ReadBatch(frames []link.Frame) (int, error) {
	if len(frames) == 0 {
		return 0, nil
	}
	l.rxMu.Lock()
	defer l.rxMu.Unlock()
	if l.closed.Load() {
		return 0, link.ErrClosed
	}
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
	r.pfd = [3]unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}, {Fd: int32(l.evfd), Events: unix.POLLIN}, {Fd: int32(l.bell), Events: unix.POLLIN}}
	pfd := r.pfd[:]
	if l.bell < 0 {
		pfd = pfd[:2]
	}
	for {
		if l.closed.Load() {
			return 0, link.ErrClosed
		}
		if l.bell >= 0 {
			// Silence the doorbell, then look again: a frame that arrives
			// after this look rings it and ends the poll below.
			l.drainBell()
			if n := l.try(frames); n > 0 {
				return n, nil
			}
		}
		for i := range pfd {
			pfd[i].Revents = 0
		}
		_, err := unix.Poll(pfd, -1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return 0, err
		}
		if n := l.try(frames); n > 0 {
			return n, nil
		}
		if pfd[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
			return 0, unix.EIO
		}
	}
}
