package stacktest

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

// Default addresses of a Pair's stacks.
var (
	AddrA = netip.MustParsePrefix("10.0.0.1/24")
	AddrB = netip.MustParsePrefix("10.0.0.2/24")
	MACA  = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	MACB  = net.HardwareAddr{2, 0, 0, 0, 0, 2}
)

// Options shape a Pair. The zero value is two stacks at AddrA and AddrB on
// a default mem pair.
type Options struct {
	Mem mem.Options
	// A and B configure the stacks; a zero Addr is AddrA or AddrB.
	A, B stack.Config
	// WrapA and WrapB, if set, stand between each stack and its end of
	// the pair (an impairment, a recorder).
	WrapA, WrapB func(link.Link) link.Link
	// Warmup pings B from A once so ARP is resolved before the test
	// counts anything.
	Warmup bool
}

// Pair is two stacks joined by an in-memory link pair.
type Pair struct {
	A, B *stack.Stack
	// LinkA and LinkB are what the stacks run on (wrapped if asked).
	LinkA, LinkB link.Link
}

// New starts a Pair for t; both stacks close when t ends. On failure the
// receiving stack's counters are logged.
func New(t testing.TB, o Options) *Pair {
	t.Helper()
	if !o.A.Addr.IsValid() {
		o.A.Addr = AddrA
	}
	if !o.B.Addr.IsValid() {
		o.B.Addr = AddrB
	}
	ma, mb := mem.Pair(MACA, MACB, o.Mem)
	var la, lb link.Link = ma, mb
	if o.WrapA != nil {
		la = o.WrapA(la)
	}
	if o.WrapB != nil {
		lb = o.WrapB(lb)
	}
	a, err := stack.New(la, o.A)
	if err != nil {
		t.Fatalf("stacktest: stack A: %v", err)
	}
	b, err := stack.New(lb, o.B)
	if err != nil {
		a.Close()
		t.Fatalf("stacktest: stack B: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for name, s := range map[string]*stack.Stack{"A": a, "B": b} {
				st := s.Stats()
				t.Logf("stack %s: rx %d frames, drops %v (total %d)", name, st.RxFrames, st.Drops, st.TotalDrops())
			}
		}
		a.Close()
		b.Close()
	})
	if o.Warmup {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := a.Ping(ctx, o.B.Addr.Addr(), 8); err != nil {
			t.Fatalf("stacktest: warm-up ping: %v", err)
		}
	}
	return &Pair{A: a, B: b, LinkA: la, LinkB: lb}
}
