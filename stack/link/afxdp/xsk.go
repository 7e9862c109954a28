package afxdp

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ring is one of the four single-producer single-consumer rings an XSK
// shares with the kernel. Fill and completion rings hold 8-byte UMEM
// addresses, receive and transmit rings 16-byte struct xdp_desc.
type ring struct {
	mem      []byte
	prod     *uint32
	cons     *uint32
	desc     unsafe.Pointer
	mask     uint32
	size     uint32
	descSize uintptr
}

func mapRing(fd int, off unix.XDPRingOffset, pgoff int64, size uint32, descSize uintptr) (ring, error) {
	n := int(off.Desc) + int(size)*int(descSize)
	mem, err := unix.Mmap(fd, pgoff, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return ring{}, fmt.Errorf("mmap ring at %#x: %w", pgoff, err)
	}
	base := unsafe.Pointer(&mem[0])
	return ring{
		mem:      mem,
		prod:     (*uint32)(unsafe.Add(base, off.Producer)),
		cons:     (*uint32)(unsafe.Add(base, off.Consumer)),
		desc:     unsafe.Add(base, off.Desc),
		mask:     size - 1,
		size:     size,
		descSize: descSize,
	}, nil
}

func (r *ring) unmap() {
	if r.mem != nil {
		_ = unix.Munmap(r.mem)
		r.mem = nil
	}
}

// addr returns the i-th (free-running index) entry of a fill or completion
// ring.
func (r *ring) addr(i uint32) *uint64 {
	return (*uint64)(unsafe.Add(r.desc, uintptr(i&r.mask)*8))
}

// xdpDesc returns the i-th entry of a receive or transmit ring.
func (r *ring) xdpDesc(i uint32) *unix.XDPDesc {
	return (*unix.XDPDesc)(unsafe.Add(r.desc, uintptr(i&r.mask)*16))
}

// Producer side (we produce fill and transmit entries).

// free returns how many entries the producer may write.
func (r *ring) free() uint32 {
	return r.size - (*r.prod - atomic.LoadUint32(r.cons))
}

func (r *ring) publish(n uint32) { atomic.StoreUint32(r.prod, *r.prod+n) }

// Consumer side (we consume completion and receive entries).

// ready returns how many entries wait to be consumed.
func (r *ring) ready() uint32 {
	return atomic.LoadUint32(r.prod) - *r.cons
}

func (r *ring) consume(n uint32) { atomic.StoreUint32(r.cons, *r.cons+n) }

// xsk is an AF_XDP socket, its UMEM and its rings.
type xsk struct {
	fd        int
	umem      []byte
	frameSize int
	fill      ring
	comp      ring
	rx        ring // unmapped when the socket only transmits
	tx        ring
}

// newXSK creates an XSK bound in copy mode to queue of ifindex with a UMEM
// of frames x frameSize bytes. rxSize 0 makes a transmit-only socket.
func newXSK(ifindex, queue, frames, frameSize int, fillSize, compSize, rxSize, txSize uint32) (*xsk, error) {
	// Non-blocking: a duplicate of it waits in the Go netpoller, and
	// every call on it is MSG_DONTWAIT anyway.
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("socket(AF_XDP): %w", err)
	}
	x := &xsk{fd: fd, frameSize: frameSize}
	if err := x.setup(ifindex, queue, frames, fillSize, compSize, rxSize, txSize); err != nil {
		x.close()
		return nil, err
	}
	return x, nil
}

func (x *xsk) setup(ifindex, queue, frames int, fillSize, compSize, rxSize, txSize uint32) error {
	umem, err := unix.Mmap(-1, 0, frames*x.frameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap UMEM: %w", err)
	}
	x.umem = umem
	reg := unix.XDPUmemReg{Addr: uint64(uintptr(unsafe.Pointer(&umem[0]))), Len: uint64(len(umem)), Size: uint32(x.frameSize)}
	if err := setsockopt(x.fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return fmt.Errorf("XDP_UMEM_REG: %w", err)
	}
	for _, s := range []struct {
		opt  int
		size uint32
	}{{unix.XDP_UMEM_FILL_RING, fillSize}, {unix.XDP_UMEM_COMPLETION_RING, compSize}, {unix.XDP_RX_RING, rxSize}, {unix.XDP_TX_RING, txSize}} {
		if s.size == 0 {
			continue
		}
		if err := unix.SetsockoptInt(x.fd, unix.SOL_XDP, s.opt, int(s.size)); err != nil {
			return fmt.Errorf("ring option %d size %d: %w", s.opt, s.size, err)
		}
	}
	var off unix.XDPMmapOffsets
	l := uint32(unsafe.Sizeof(off))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(x.fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS, uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&l)), 0); e != 0 {
		return fmt.Errorf("XDP_MMAP_OFFSETS: %w", e)
	}
	if x.fill, err = mapRing(x.fd, off.Fr, unix.XDP_UMEM_PGOFF_FILL_RING, fillSize, 8); err != nil {
		return err
	}
	if x.comp, err = mapRing(x.fd, off.Cr, unix.XDP_UMEM_PGOFF_COMPLETION_RING, compSize, 8); err != nil {
		return err
	}
	if rxSize > 0 {
		if x.rx, err = mapRing(x.fd, off.Rx, unix.XDP_PGOFF_RX_RING, rxSize, 16); err != nil {
			return err
		}
	}
	if x.tx, err = mapRing(x.fd, off.Tx, unix.XDP_PGOFF_TX_RING, txSize, 16); err != nil {
		return err
	}
	// Copy mode hands at most this many frames to the driver per send
	// call (default 32); larger budgets mean fewer system calls. Older
	// kernels lack the option: not an error.
	_ = unix.SetsockoptInt(x.fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, int(txSize))
	sa := &unix.SockaddrXDP{Flags: unix.XDP_COPY, Ifindex: uint32(ifindex), QueueID: uint32(queue)}
	if err := unix.Bind(x.fd, sa); err != nil {
		return fmt.Errorf("bind XSK to ifindex %d queue %d (copy mode): %w", ifindex, queue, err)
	}
	return nil
}

func setsockopt(fd, opt int, p unsafe.Pointer, n uintptr) error {
	if _, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), n, 0); e != 0 {
		return e
	}
	return nil
}

func (x *xsk) close() {
	for _, r := range []*ring{&x.fill, &x.comp, &x.rx, &x.tx} {
		r.unmap()
	}
	if x.fd >= 0 {
		_ = unix.Close(x.fd)
		x.fd = -1
	}
	if x.umem != nil {
		_ = unix.Munmap(x.umem)
		x.umem = nil
	}
}

const unsafeSizeofStats = unsafe.Sizeof(unix.XDPStatistics{})

func getsockopt(fd, opt int, st *unix.XDPStatistics, n *uint32) error {
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(unsafe.Pointer(st)), uintptr(unsafe.Pointer(n)), 0); e != 0 {
		return e
	}
	return nil
}
