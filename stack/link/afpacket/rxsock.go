package afpacket

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/stack/link"
)

const (
	// rxSockBatch is the most frames one RxRecvmmsg ReadBatch returns.
	rxSockBatch = 64
	// rxSlotSize holds a virtio-net header and the largest GSO frame,
	// rounded up to 16 bytes.
	rxSlotSize = (link.VNetHdrLen + maxFrameGSO + 15) &^ 15
)

// rxSock is the RxRecvmmsg receive path: a non-blocking, ring-less packet
// socket registered with the Go netpoller. Guarded by Link.rxMu, except
// close (Link.statMu).
type rxSock struct {
	fd   int // for getsockopt; owned by file
	file *os.File
	rc   syscall.RawConn

	// pool holds the receive buffers, rxSlotSize each: header then
	// frame. The pages of the tail of a slot are touched only by large
	// frames. Message i reads into pool.slots[pool.at[i]].
	pool rxPool
	msgs []unix.Mmsghdr
	iovs []unix.Iovec

	want int // messages the next recvmmsg may fill
	got  int // messages the last recvmmsg filled
	err  syscall.Errno
	busy bool               // recv reports EAGAIN as done (busy polling)
	recv func(uintptr) bool // r.recvmmsg as a func value, made once
}

// open creates, configures and binds the receive socket on interface ifidx.
func (r *rxSock) open(ifidx int, o Options) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("receive socket: %w", err)
	}
	r.fd = fd
	r.file = os.NewFile(uintptr(fd), "afpacket")
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fmt.Errorf("receive PACKET_VNET_HDR: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fmt.Errorf("receive PACKET_IGNORE_OUTGOING: %w", err)
	}
	rcvbuf := o.ReceiveBuffer
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
		// Without CAP_NET_ADMIN: as much as net.core.rmem_max allows.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf); err != nil {
			return fmt.Errorf("receive SO_RCVBUF: %w", err)
		}
	}
	if o.Accept.IsValid() {
		if err := attachFilter(fd, acceptFilter(o.Accept, 0x40000)); err != nil {
			return fmt.Errorf("accept filter: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifidx}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	r.rc, err = r.file.SyscallConn()
	if err != nil {
		return fmt.Errorf("receive socket: %w", err)
	}
	r.pool.init()
	r.msgs = make([]unix.Mmsghdr, rxSockBatch)
	r.iovs = make([]unix.Iovec, rxSockBatch)
	for i := range r.msgs {
		r.iovs[i].Base = &r.pool.slots[r.pool.at[i]].buf[0]
		r.iovs[i].SetLen(rxSlotSize)
		r.msgs[i].Hdr.Iov = &r.iovs[i]
		r.msgs[i].Hdr.SetIovlen(1)
	}
	r.recv = r.recvmmsg
	return nil
}

// close closes the socket, waking a reader waiting in the netpoller; r.rc
// then fails, so a reader never touches a closed or reused descriptor.
func (r *rxSock) close() {
	if r.file != nil {
		_ = r.file.Close()
		r.file = nil
	}
	r.fd = -1
}

// recvmmsg is the RawConn.Read callback: it reports false (wait for
// readability) on EAGAIN unless busy polling.
func (r *rxSock) recvmmsg(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(r.want), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			r.got, r.err = 0, 0
			return r.busy
		case 0:
			r.got, r.err = int(n), 0
		default:
			r.got, r.err = 0, e
		}
		return true
	}
}

// sockRead runs one recvmmsg through the netpoller (waiting unless busy).
func (l *Link) sockRead(busy bool) (int, error) {
	r := &l.rs
	r.busy = busy
	if err := r.rc.Read(r.recv); err != nil {
		if l.closed.Load() || errors.Is(err, os.ErrClosed) {
			return 0, link.ErrClosed
		}
		return 0, fmt.Errorf("afpacket: %w", err)
	}
	if r.err != 0 {
		if l.closed.Load() {
			return 0, link.ErrClosed
		}
		return 0, fmt.Errorf("afpacket: recvmmsg: %w", r.err)
	}
	return r.got, nil
}

// readSock is ReadBatch for RxRecvmmsg; l.rxMu is held.
func (l *Link) readSock(frames []link.Frame) (int, error) {
	r := &l.rs
	r.want = min(len(frames), rxSockBatch)
	var deadline time.Time
	if l.opts.BusyPoll > 0 {
		deadline = time.Now().Add(l.opts.BusyPoll)
	}
	r.refill(r.want) // the last batch's buffers on loan are replaced
	for {
		busy := !deadline.IsZero() && time.Now().Before(deadline)
		got, err := l.sockRead(busy)
		if err != nil {
			return 0, err
		}
		if n := l.deliverSock(frames, got); n > 0 {
			return n, nil
		}
	}
}

// deliverSock points frames at the first got messages' frames and returns
// how many it filled; truncated or runt messages are counted and skipped.
func (l *Link) deliverSock(frames []link.Frame, got int) int {
	r := &l.rs
	n := 0
	var bytes uint64
	for i := 0; i < got; i++ {
		m := &r.msgs[i]
		size := int(m.Len)
		if m.Hdr.Flags&unix.MSG_TRUNC != 0 || size < link.VNetHdrLen+14 || size > rxSlotSize {
			l.rxTrunc.Add(1)
			continue
		}
		k := r.pool.at[i]
		slot := r.pool.slots[k].buf[:size:size]
		f := &frames[n]
		f.VNet.Decode(slot)
		f.Buf = slot[link.VNetHdrLen:]
		f.Loan, f.LoanOff = uint32(k+1), link.VNetHdrLen
		bytes += uint64(size - link.VNetHdrLen)
		n++
	}
	l.rxFrames.Add(uint64(n))
	l.rxBytes.Add(bytes)
	return n
}
