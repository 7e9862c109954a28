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
