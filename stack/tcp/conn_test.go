package tcp_test

import (
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

func TestDataBothWays(t *testing.T) {
	for _, tc := range []struct {
		name string
		caps link.Caps
	}{{"plain", 0}, {"offload", link.CapVNetHdr}, {"gso", link.CapVNetHdr | link.CapGSO}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, worldOpts{mem: mem.Options{Caps: tc.caps}})
			c, s := w.connect(t, 80)
			transfer(t, c, s, pattern(3<<20, 1), false)
			transfer(t, s, c, pattern(3<<20, 2), false)
			transfer(t, c, s, []byte("x"), true)
			transfer(t, s, c, pattern(100000, 3), true)
			deadline := time.Now().Add(5 * time.Second)
			for c.State() != "TIME-WAIT" && c.State() != "CLOSED" {
				if time.Now().After(deadline) {
					t.Fatalf("client in %s, server in %s", c.State(), s.State())
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}
