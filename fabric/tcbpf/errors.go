package tcbpf

import (
	"errors"
	"fmt"
	"net"
)

var (
	// ErrInvalid reports a bad argument (a rate above one million parts
	// per million, a name with a slash, a MAC that is not 6 bytes).
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound reports a missing interface or a port with no program
	// of this package attached.
	ErrNotFound = errors.New("not found")
	// ErrClosed reports the use of a closed handle.
	ErrClosed = fmt.Errorf("tcbpf: handle closed: %w", net.ErrClosed)
)
