package testbed_test

import (
	"errors"
	"net"
	"testing"

	"github.com/netstation/netstation/cpu/iperf3"
	"github.com/netstation/netstation/cpu/storage"
	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/fabric/tcbpf"
	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/peripherals/disk/nbd"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/tcp"
)

// TestErrClosedIsOneSentinel: every layer's ErrClosed names what closed
// and is net.ErrClosed (stack.ErrClosed) for errors.Is, so a caller tests
// one sentinel whichever layer a "closed" error came from.
func TestErrClosedIsOneSentinel(t *testing.T) {
	for name, err := range map[string]error{
		"stack": stack.ErrClosed, "tcp": tcp.ErrClosed, "link": link.ErrClosed,
		"disk": disk.ErrClosed, "nbd": nbd.ErrClosed, "storage": storage.ErrClosed,
		"iperf3": iperf3.ErrClosed, "fabric": fabric.ErrClosed, "tcbpf": tcbpf.ErrClosed,
	} {
		if !errors.Is(err, net.ErrClosed) || !errors.Is(err, stack.ErrClosed) {
			t.Errorf("%s.ErrClosed (%q) is not net.ErrClosed for errors.Is", name, err)
		}
	}
}
