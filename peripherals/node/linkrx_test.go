package node

import (
	"errors"
	"testing"

	"github.com/netstation/netstation/stack/link/afpacket"
)

// TestLinkOptions: $NETSTATION_LINK_RX picks the receive path, and a value
// it does not know is an error, not the default.
func TestLinkOptions(t *testing.T) {
	for v, want := range map[string]afpacket.Options{
		"":          {},
		"recvmmsg":  {},
		"framering": {Rx: afpacket.RxFrameRing, Tx: afpacket.TxSendmmsg},
	} {
		got, err := linkOptions(v)
		if err != nil || got != want {
			t.Errorf("linkOptions(%q) = %+v, %v; want %+v", v, got, err, want)
		}
	}
	for _, v := range []string{"ring", "FrameRing", "xsk"} {
		if _, err := linkOptions(v); !errors.Is(err, ErrLinkRx) {
			t.Errorf("linkOptions(%q): %v, want ErrLinkRx", v, err)
		}
	}
}
