package dgram

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BusyPollConn is a kernel UDP socket at its best for latency: a blocking
// socket with SO_BUSY_POLL, so a reader with nothing queued spins in
// recvmsg, polling the receiving device's NAPI on its own CPU, for up to
// the budget before it sleeps. It is the kernel's counterpart of a
// user-level socket whose reader drives the link itself (stack.UDPConn's
// poll budget): what a latency-minded user of kernel sockets turns on.
//
// Go's netpoller reads non-blocking sockets, which busy-poll once at
// most, so this Conn makes blocking system calls on a thread of its own.
// It busy-polls only what arrives through NAPI: on a veth that needs GRO
// on (Linux 5.13 and later). BusyPolled tells whether the first datagram
// did; a caller that reports a busy-polling figure checks it.
//
// Reads wait in slices of at most busyPollSlice (SO_RCVTIMEO), so a read
// deadline set from another goroutine, and Close, take effect within one
// slice: a blocking recvmsg is not woken by either.
type BusyPollConn struct {
	fd     int
	local  *net.UDPAddr
	mu     sync.RWMutex // readers and writers hold it shared; Close exclusively
	rmu    sync.Mutex   // one reader at a time (the slice timeout is per socket)
	closed atomic.Bool

	readDeadline atomic.Int64 // unix nanoseconds; 0 = none
	slice        time.Duration
	napi         atomic.Bool
	checked      bool                  // napi is known (under rmu)
	from         unix.RawSockaddrInet4 // recvfrom's sender (under rmu)
	wmu          sync.Mutex
	to           unix.SockaddrInet4 // sendto's destination (under wmu)
}

var _ Conn = (*BusyPollConn)(nil)

// busyPollSlice bounds how long a read sleeps in the kernel before it
// looks at its deadline and at Close again.
const busyPollSlice = 10 * time.Millisecond

// ErrBusyPollRefused is the error of a socket the kernel would not let
// busy-poll: SO_BUSY_POLL above net.core.busy_read needs CAP_NET_ADMIN in
// the initial user namespace (a rootless testbed has it only in its own).
var ErrBusyPollRefused = errors.New("dgram: SO_BUSY_POLL refused")

// ListenBusyPoll opens a BusyPollConn bound to local (port 0: any), whose
// reads busy-poll for up to budget. It creates the socket in the calling
// thread's network namespace.
func ListenBusyPoll(local netip.AddrPort, budget time.Duration) (*BusyPollConn, error) {
	if !local.Addr().Is4() {
		return nil, fmt.Errorf("dgram: busy-poll socket: %v is not IPv4", local)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dgram: socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUSY_POLL, int(budget/time.Microsecond)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: %v", ErrBusyPollRefused, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: local.Addr().As4(), Port: int(local.Port())}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("dgram: bind %v: %w", local, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("dgram: getsockname: %w", err)
	}
	in4, _ := sa.(*unix.SockaddrInet4)
	c := &BusyPollConn{fd: fd, local: &net.UDPAddr{IP: local.Addr().AsSlice(), Port: in4.Port}}
	return c, nil
}

// BusyPolled reports whether the first datagram read came through NAPI
// (SO_INCOMING_NAPI_ID), which the socket's busy polling needs.
func (c *BusyPollConn) BusyPolled() bool { return c.napi.Load() }

// ReadBatch reads one datagram into msgs[0] (a latency socket takes one
// at a time), waiting until it comes, the read deadline passes
// (os.ErrDeadlineExceeded) or Close (net.ErrClosed).
func (c *BusyPollConn) ReadBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.closed.Load() {
			return 0, net.ErrClosed
		}
		wait := busyPollSlice
		if d := c.readDeadline.Load(); d != 0 {
			left := time.Until(time.Unix(0, d))
			if left <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			wait = min(wait, max(left, time.Microsecond))
		}
		if wait != c.slice {
			tv := unix.NsecToTimeval(wait.Nanoseconds())
			if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
				return 0, fmt.Errorf("dgram: SO_RCVTIMEO: %w", err)
			}
			c.slice = wait
		}
		n, from, err := c.recvfrom(msgs[0].Buf)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			continue // a slice ended: look at the deadline and Close again
		case err != nil:
			return 0, fmt.Errorf("dgram: recvfrom: %w", err)
		}
		msgs[0].N, msgs[0].Addr = n, from
		if !c.checked {
			// The path a socket's datagrams take does not change within
			// a run: one look, not a system call per datagram.
			id, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_INCOMING_NAPI_ID)
			c.napi.Store(err == nil && id != 0)
			c.checked = true
		}
		return 1, nil
	}
}

// recvfrom is recvfrom(2) into b with the sender's address in a buffer of
// the Conn's own (unix.Recvfrom allocates one per call).
func (c *BusyPollConn) recvfrom(b []byte) (int, netip.AddrPort, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	alen := uint32(unix.SizeofSockaddrInet4)
	n, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(c.fd), uintptr(p), uintptr(len(b)), 0,
		uintptr(unsafe.Pointer(&c.from)), uintptr(unsafe.Pointer(&alen)))
	if e != 0 {
		return 0, netip.AddrPort{}, e
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&c.from.Port))[:]) // network order
	return int(n), netip.AddrPortFrom(netip.AddrFrom4(c.from.Addr), port), nil
}

// WriteBatch sends msgs in order, one sendto each (UDP sends do not
// wait for the peer); it stops at the first error.
func (c *BusyPollConn) WriteBatch(msgs []Message) (int, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for i := range msgs {
		c.to.Addr, c.to.Port = msgs[i].Addr.Addr().Unmap().As4(), int(msgs[i].Addr.Port())
		if err := unix.Sendto(c.fd, msgs[i].Buf, 0, &c.to); err != nil {
			return i, fmt.Errorf("dgram: sendto %v: %w", msgs[i].Addr, err)
		}
		msgs[i].N = len(msgs[i].Buf)
	}
	return len(msgs), nil
}

// SetReadDeadline sets when reads give up; the zero time means never. A
// reader already waiting sees it within busyPollSlice.
func (c *BusyPollConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		c.readDeadline.Store(0)
	} else {
		c.readDeadline.Store(max(t.UnixNano(), 1))
	}
	return nil
}

// SetWriteDeadline is accepted and ignored: a UDP send does not wait.
func (c *BusyPollConn) SetWriteDeadline(time.Time) error { return nil }

// LocalAddr is the bound address.
func (c *BusyPollConn) LocalAddr() net.Addr { return c.local }

// Close ends waiting reads (within busyPollSlice) and closes the socket
// once no call is using it, so its descriptor number is never reused
// under a reader.
func (c *BusyPollConn) Close() error {
	if c.closed.Swap(true) {
		return net.ErrClosed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return unix.Close(c.fd)
}
