package disk

import (
	"errors"
	"fmt"
	"net"

	"github.com/netstation/netstation/internal/wire/diskproto"
)

// ErrDenied is wrapped by an Authorizer's refusals.
var ErrDenied = errors.New("disk: access denied")

// Authorizer decides whether a parsed, well-formed request may run. It is
// called for every request, INFO included, from the server's receive loop,
// so it must be quick and safe for concurrent use. A non-nil error refuses
// the request with diskproto.CodeDenied.
type Authorizer interface {
	Authorize(req *diskproto.Request, from net.Addr) error
}

// OpenAccess is the documented "open" mode: every client may do everything,
// but only with the all-zero capability, so that a client which believes
// it holds a capability learns that this disk does not check it.
type OpenAccess struct{}

var _ Authorizer = OpenAccess{}

// Authorize accepts the all-zero capability only.
func (OpenAccess) Authorize(req *diskproto.Request, _ net.Addr) error {
	if req.Capability != [diskproto.CapabilitySize]byte{} {
		return fmt.Errorf("%w: open mode accepts only the all-zero capability", ErrDenied)
	}
	return nil
}
