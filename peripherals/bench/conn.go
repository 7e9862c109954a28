package bench

import (
	"errors"
	"net"

	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/stack"
)

// Message is one datagram of a batch (see dgram.Message).
type Message = dgram.Message

// Conn is a datagram socket that moves batches. It is what the bench
// engine measures: both the user-level stack and the kernel satisfy it.
type Conn = dgram.Conn

// runReader is a socket that lends received datagrams in place, a run of
// them (a GSO super-frame's) at a time (stack.UDPConn's ReadRuns/Release):
// a receiver reads through it, as the kernel baseline reads UDP_GRO
// buffers, and skips the copy out of the socket's ring.
type runReader interface {
	ReadRuns(runs []stack.Run) (n, datagrams int, err error)
	Release()
}

var _ runReader = (*stack.UDPConn)(nil)

// User returns the Conn for a user-level stack socket.
func User(c *stack.UDPConn) Conn { return c }

// Kernel returns a Conn on a kernel UDP socket that reads and writes
// batches with recvmmsg and sendmmsg. Closing the Conn closes c.
func Kernel(c *net.UDPConn) Conn { return dgram.Kernel(c) }

// isClosed reports errors that mean the socket is gone for good.
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}

// isTimeout reports deadline expiry.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, errDeadline) || (errors.As(err, &ne) && ne.Timeout())
}
