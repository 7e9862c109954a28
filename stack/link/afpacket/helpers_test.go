package afpacket

import (
	"testing"
	"time"

	"github.com/netstation/netstation/internal/linktest"
	"github.com/netstation/netstation/internal/nstest"
	"github.com/netstation/netstation/stack/link"
)

// open opens a link on ifname inside ns and closes it when the test ends
// (before the namespace goes).
func open(t testing.TB, ns *nstest.NS, ifname string, o Options) *Link {
	t.Helper()
	return linktest.Open(t, ns, func() (*Link, error) { return Open(ifname, o) })
}

// received is a copy of a frame a collector read.
type received struct {
	buf  []byte
	vnet link.VNetHdr
}

// collector copies every frame a link reads into a channel until the link
// is closed.
type collector struct {
	ch   chan received
	done chan error
}

func collect(t testing.TB, l *Link) *collector {
	c := &collector{ch: make(chan received, 1<<15), done: make(chan error, 1)}
	go func() {
		frames := make([]link.Frame, 64)
		for {
			n, err := l.ReadBatch(frames)
			if err != nil {
				c.done <- err
				return
			}
			for _, f := range frames[:n] {
				select {
				case c.ch <- received{append([]byte(nil), f.Buf...), f.VNet}:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		l.Close()
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			t.Errorf("collector did not stop after Close")
		}
	})
	return c
}

// next returns the next frame that match accepts, or fails after timeout.
func (c *collector) next(t testing.TB, timeout time.Duration, match func(received) bool) received {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case r := <-c.ch:
			if match(r) {
				return r
			}
		case <-deadline:
			t.Fatalf("no matching frame within %v", timeout)
			return received{}
		}
	}
}

func isTest(r received) bool { return linktest.IsTest(r.buf) }
