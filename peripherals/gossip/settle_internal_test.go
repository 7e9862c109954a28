package gossip

import (
	"net/netip"
	"testing"
)

// TestSettlePeers: a settle exchange is due while the view lacks an
// expected member, and not once it holds them all, dead ones included.
func TestSettlePeers(t *testing.T) {
	addr := func(i byte) netip.AddrPort { return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, i}), Port) }
	n := &Node{cfg: Config{Name: "a", Expect: 3}, view: map[string]Member{
		"a": {Name: "a", Addr: addr(1), State: Alive},
		"b": {Name: "b", Addr: addr(2), State: Alive},
	}}
	if got := n.settlePeers(); len(got) != 1 || got[0] != addr(2).String() {
		t.Fatalf("view short of c: peers %v, want b", got)
	}
	n.view["c"] = Member{Name: "c", Addr: addr(3), State: Dead}
	if got := n.settlePeers(); got != nil {
		t.Fatalf("every expected member known (c dead): peers %v, want no exchange", got)
	}
	n.cfg.Expect = 0 // no expectation: exchange with the alive ones
	if got := n.settlePeers(); len(got) != 1 {
		t.Fatalf("Expect 0: peers %v", got)
	}
}
