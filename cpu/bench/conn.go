package bench

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/netstation/netstation/stack"
	"golang.org/x/net/ipv4"
)

// Message is one datagram of a batch: the user-level stack's own type, so
// its sockets need no translation. For reads the caller owns Buf and gets
// N and the sender's Addr; for writes the payload is all of Buf and Addr
// is the destination.
type Message = stack.Message

// Conn is a datagram socket that moves batches. It is what the bench
// engine measures: both the user-level stack and the kernel satisfy it.
// ReadBatch blocks until at least one datagram, the read deadline or
// Close; WriteBatch returns how many datagrams left. Both are safe for
// concurrent use.
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
)

// User returns the Conn for a user-level stack socket. A *stack.UDPConn
// already is one; User exists so call sites read the same for both stacks.
func User(c *stack.UDPConn) Conn { return c }

// Kernel returns a Conn on a kernel UDP socket that reads and writes
// batches with recvmmsg and sendmmsg. Closing the Conn closes c.
func Kernel(c *net.UDPConn) Conn {
	return &kernelConn{c: c, pc: ipv4.NewPacketConn(c)}
}

// kernelConn adapts a kernel socket. Its per-call scratch (the x/net
// message slices and cached destination addresses) comes from a pool so
// parallel streams sharing one socket do not serialise on a lock.
type kernelConn struct {
	c    *net.UDPConn
	pc   *ipv4.PacketConn
	pool sync.Pool
}

type kernelScratch struct {
	msgs  []ipv4.Message
	bufs  [][]byte // backing for msgs[i].Buffers, one each
	dst   netip.AddrPort
	dstUA *net.UDPAddr
}

func (k *kernelConn) scratch(n int) *kernelScratch {
	s, _ := k.pool.Get().(*kernelScratch)
	if s == nil {
		s = &kernelScratch{}
	}
	if cap(s.msgs) < n {
		s.msgs = make([]ipv4.Message, n)
		s.bufs = make([][]byte, n)
		for i := range s.msgs {
			s.msgs[i].Buffers = s.bufs[i : i+1 : i+1]
		}
	}
	s.msgs = s.msgs[:n]
	return s
}

func (k *kernelConn) ReadBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	s := k.scratch(len(msgs))
	defer k.pool.Put(s)
	for i := range msgs {
		s.msgs[i].Buffers[0] = msgs[i].Buf
		s.msgs[i].Addr = nil
	}
	n, err := k.pc.ReadBatch(s.msgs, 0)
	n = max(n, 0) // x/net reports -1 with some errors
	for i := 0; i < n; i++ {
		msgs[i].N = s.msgs[i].N
		msgs[i].Addr = netip.AddrPort{}
		if ua, ok := s.msgs[i].Addr.(*net.UDPAddr); ok {
			ap := ua.AddrPort()
			msgs[i].Addr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		s.msgs[i].Buffers[0] = nil
	}
	return n, err
}

func (k *kernelConn) WriteBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	s := k.scratch(len(msgs))
	defer k.pool.Put(s)
	for i := range msgs {
		s.msgs[i].Buffers[0] = msgs[i].Buf
		if msgs[i].Addr != s.dst || s.dstUA == nil { // cache: one peer per stream
			s.dst = msgs[i].Addr
			s.dstUA = net.UDPAddrFromAddrPort(s.dst)
		}
		s.msgs[i].Addr = s.dstUA
	}
	sent := 0
	var err error
	for sent < len(msgs) {
		var n int
		n, err = k.pc.WriteBatch(s.msgs[sent:], 0)
		n = max(n, 0)
		sent += n
		if err != nil || n == 0 {
			break
		}
	}
	for i := 0; i < sent; i++ {
		msgs[i].N = s.msgs[i].N
	}
	for i := range msgs {
		s.msgs[i].Buffers[0] = nil
	}
	return sent, err
}

func (k *kernelConn) SetReadDeadline(t time.Time) error  { return k.c.SetReadDeadline(t) }
func (k *kernelConn) SetWriteDeadline(t time.Time) error { return k.c.SetWriteDeadline(t) }
func (k *kernelConn) LocalAddr() net.Addr                { return k.c.LocalAddr() }
func (k *kernelConn) Close() error                       { return k.c.Close() }

// isClosed reports errors that mean the socket is gone for good.
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}

// isTimeout reports deadline expiry.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, errDeadline) || (errors.As(err, &ne) && ne.Timeout())
}
