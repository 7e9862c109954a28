package dgram

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/netstation/netstation/stack"
	"golang.org/x/sys/unix"
)

// Message is one datagram of a batch: the user-level stack's own type, so
// its sockets need no translation. For reads the caller owns Buf and gets
// N and the sender's Addr; for writes the payload is all of Buf and Addr
// is the destination.
type Message = stack.Message

// Conn is a datagram socket that moves batches: both the user-level stack
// and the kernel satisfy it. Both calls are safe for concurrent use.
//
// ReadBatch blocks until at least one datagram, the read deadline or
// Close, and fills msgs[:n] (N and Addr).
//
// WriteBatch sends msgs in order and returns n, how many leading datagrams
// left (each with N set). The short-write rule: n < len(msgs) comes with a
// non-nil error that says why msgs[n] did not leave; the caller decides
// whether to retry the rest (WriteAll does not: it stops at the error). A
// Conn may also return a short count with a nil error when the medium took
// fewer (sendmmsg can): the caller sends the rest, as WriteAll does. A
// zero count with a nil error for a non-empty batch breaks the contract;
// WriteAll reports it as ErrNoProgress instead of spinning.
type Conn interface {
	ReadBatch(msgs []Message) (int, error)
	WriteBatch(msgs []Message) (int, error)
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
	LocalAddr() net.Addr
	Close() error
}

var (
	_ Conn = (*stack.UDPConn)(nil)
	_ Conn = (*kernelConn)(nil)
	_ Conn = (*packetConn)(nil)
)

// ErrNoProgress is WriteAll's error for a WriteBatch that sent nothing and
// said nothing: retrying it would spin.
var ErrNoProgress = errors.New("dgram: write sent no datagram and gave no error")

// WriteAll sends all of msgs with as many WriteBatch calls as c needs. It
// returns how many left: len(msgs) with a nil error, or fewer with the
// error of the call that stopped (ErrNoProgress for a call that sent
// nothing without an error). The datagrams after the first failure are
// not sent: a caller that counts drops counts len(msgs)-n.
func WriteAll(c Conn, msgs []Message) (int, error) {
	sent := 0
	for sent < len(msgs) {
		n, err := c.WriteBatch(msgs[sent:])
		sent += max(n, 0)
		if err != nil {
			return sent, err
		}
		if n <= 0 {
			return sent, ErrNoProgress
		}
	}
	return sent, nil
}

// Of returns the batch Conn for pc: pc itself for a user-level socket,
// recvmmsg/sendmmsg for a kernel UDP socket, and one datagram per call for
// any other net.PacketConn (test wrappers), whose addresses must be
// *net.UDPAddr. Closing the Conn closes pc.
func Of(pc net.PacketConn) Conn {
	switch c := pc.(type) {
	case *stack.UDPConn:
		return c
	case *net.UDPConn:
		return Kernel(c)
	case Conn:
		return c
	}
	return &packetConn{pc}
}

// RunReader is a socket that lends received datagrams in place, a run of
// equal-sized datagrams (a GSO or GRO super-frame's) at a time, with the
// contract of stack.UDPConn.ReadRuns: it blocks like ReadBatch, and the
// runs stay valid, and other readers wait, until Release, which follows
// every call that returned no error.
type RunReader interface {
	ReadRuns(runs []stack.Run) (n, datagrams int, err error)
	Release()
}

var (
	_ RunReader = (*stack.UDPConn)(nil)
	_ RunReader = groRuns{}
)

// Runs returns c's RunReader when c lends what it received in place: a
// user-level socket (its receive ring), a KernelBest socket (its UDP_GRO
// buffers). It returns nil for the rest, whose ReadBatch is already the
// only copy (KernelPlain: the kernel writes into the caller's buffers),
// so a receiver reads every stack with the fewest copies it allows.
func Runs(c Conn) RunReader {
	switch c := c.(type) {
	case *stack.UDPConn:
		return c
	case *kernelConn:
		if c.gro {
			return groRuns{c}
		}
	}
	return nil
}

// User returns the Conn for a user-level stack socket. A *stack.UDPConn
// already is one; User exists so call sites read the same for both stacks.
func User(c *stack.UDPConn) Conn { return c }

// packetConn adapts any net.PacketConn, one datagram per call.
type packetConn struct{ net.PacketConn }

func (p *packetConn) ReadBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	n, addr, err := p.ReadFrom(msgs[0].Buf)
	if err != nil {
		return 0, err
	}
	msgs[0].N, msgs[0].Addr = n, netip.AddrPort{}
	if ua, ok := addr.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		msgs[0].Addr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return 1, nil
}

func (p *packetConn) WriteBatch(msgs []Message) (int, error) {
	for i := range msgs {
		n, err := p.WriteTo(msgs[i].Buf, net.UDPAddrFromAddrPort(msgs[i].Addr))
		if err != nil {
			return i, err
		}
		msgs[i].N = n
	}
	return len(msgs), nil
}

// ReceiveBuffer estimates the payload bytes of datagrams of size dgramSize
// that c's receive queue holds before it drops: what a protocol's window
// must not exceed. For a kernel socket it is a quarter of SO_RCVBUF (the
// kernel reports twice the set size and charges each datagram its buffer's
// true size); 0 means unknown.
func ReceiveBuffer(c Conn, dgramSize int) int {
	switch c := c.(type) {
	case *stack.UDPConn:
		b, n := c.ReceiveBuffer()
		return min(b, n*dgramSize)
	case *kernelConn:
		rc, err := c.c.SyscallConn()
		if err != nil {
			return 0
		}
		var v int
		var serr error
		if err := rc.Control(func(fd uintptr) {
			v, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		}); err != nil || serr != nil {
			return 0
		}
		return v / 4
	}
	return 0
}

// SetKernelBuffers sets a kernel socket's receive and send buffers to n
// bytes, past net.core.rmem_max/wmem_max where the process may
// (CAP_NET_ADMIN: SO_RCVBUFFORCE), so a kernel baseline is not starved by
// the host's defaults.
func SetKernelBuffers(c *net.UDPConn, n int) {
	_ = c.SetReadBuffer(n)
	_ = c.SetWriteBuffer(n)
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n)
		})
	}
}

// BurstLimit is the most payload bytes of dgramSize datagrams that c
// should have in flight towards one peer, or 0 for no limit of its own.
// Every frame a veth carries is an entry in the receiving CPU's backlog
// (net.core.netdev_max_backlog, 1000 by default), which drops beyond it:
// half the backlog's worth of frames is the limit. A kernel socket in
// KernelPlain mode (or for sizes UDP_SEGMENT refused) sends a frame per
// datagram; in KernelBest mode a run of up to MaxGSOSegments datagrams is
// one super-frame, one backlog entry. The user-level stack sends a run as
// one super-frame too, and its receive ring, not the backlog, is its
// limit: none here.
func BurstLimit(c Conn, dgramSize int) int {
	k, ok := c.(*kernelConn)
	if !ok {
		return 0
	}
	backlog := 1000
	if b, err := os.ReadFile("/proc/sys/net/core/netdev_max_backlog"); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v > 0 {
			backlog = v
		}
	}
	perFrame := 1
	if k.mode == KernelBest && dgramSize > 0 && int64(dgramSize) <= k.gsoMax.Load() {
		perFrame = min(int(k.segMax.Load()), maxGSOBytes/dgramSize)
	}
	return backlog / 2 * perFrame * dgramSize
}
