package accept

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// Back-off bounds after a transient Accept error.
const (
	MinBackoff = 5 * time.Millisecond
	MaxBackoff = time.Second
)

// Options tune Loop. The zero value is usable.
type Options struct {
	// Stopped reports a deliberate shutdown: an Accept error after it ends
	// the loop with nil whatever the error. Nil means only a closed
	// listener (net.ErrClosed) does.
	Stopped func() bool
	// OnRetry, if set, is told of every transient error and the pause
	// before the next Accept (for a counter or a log line).
	OnRetry func(err error, wait time.Duration)
}

// Loop accepts connections on ln and hands each to handle, in the loop's
// goroutine (handle starts its own goroutine if the connection lives
// long), until ln is closed.
//
// It returns nil when ln was closed (net.ErrClosed) or opts.Stopped says
// so, and the Accept error, wrapped, when it is neither transient nor a
// shutdown. A transient error (see Transient) is retried after a pause
// that doubles from MinBackoff to MaxBackoff and resets after a
// successful Accept, so a listener that keeps failing costs a few calls a
// second, not a core.
func Loop(ln net.Listener, handle func(net.Conn), opts Options) error {
	var wait time.Duration
	for {
		c, err := ln.Accept()
		if err == nil {
			wait = 0
			handle(c)
			continue
		}
		if (opts.Stopped != nil && opts.Stopped()) || errors.Is(err, net.ErrClosed) {
			return nil
		}
		if !Transient(err) {
			return fmt.Errorf("accept: %w", err)
		}
		wait = min(max(2*wait, MinBackoff), MaxBackoff)
		if opts.OnRetry != nil {
			opts.OnRetry(err, wait)
		}
		time.Sleep(wait)
	}
}

// Transient reports whether an Accept error may go away by itself: a
// timeout (a listener with a deadline), a descriptor or memory shortage,
// or a connection that died in the backlog.
func Transient(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.EPERM, syscall.EINTR, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
