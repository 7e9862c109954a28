package fabric

import (
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
)

// Cleanup removes every namespace and host link named with the prefix, and
// nothing named otherwise.
func TestCleanup(t *testing.T) {
	p := testPrefix(t)
	other := testPrefix(t) // a neighbour's names: must survive
	s, err := NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, pre := range []string{p, other} {
		for _, n := range []string{"a", "b", "c"} {
			if err := s.CreateNetns(pre + n); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CreateBridge(pre+"a", "br", 0); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateVeth(VethSpec{NameA: "pb", NamespaceA: pre + "a", MasterA: "br", NameB: "eth0", NamespaceB: pre + "b"}); err != nil {
			t.Fatal(err)
		}
		// Host links: a veth with its peer in a namespace, and a bridge.
		if err := s.CreateVeth(VethSpec{NameA: pre + "h", NameB: "eth0", NamespaceB: pre + "c"}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateBridge("", pre+"hb", 0); err != nil {
			t.Fatal(err)
		}
	}
	hostLinks := func(pre string) []string {
		h, err := s.Handle("")
		if err != nil {
			t.Fatal(err)
		}
		ls, err := retryDump(h.LinkList)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, l := range ls {
			if len(l.Attrs().Name) >= len(pre) && l.Attrs().Name[:len(pre)] == pre {
				names = append(names, l.Attrs().Name)
			}
		}
		slices.Sort(names)
		return names
	}
	// The host veth end is up with IPv6 off, written in the host namespace.
	if v := readIn(t, "", "/proc/sys/net/ipv6/conf/"+p+"h/disable_ipv6"); v != "1" {
		t.Errorf("host veth end disable_ipv6 = %s", v)
	}

	hh, _ := s.Handle("")
	hl, err := hh.LinkByName(p + "h")
	if err != nil {
		t.Fatal(err)
	}
	if v6, err := hh.AddrList(hl, netlink.FAMILY_V6); err != nil || len(v6) != 0 {
		t.Errorf("host veth end has IPv6 addresses %v (%v)", v6, err)
	}

	if err := s.Cleanup(p); err != nil {
		t.Fatal(err)
	}
	if left, _ := ListNetns(p); len(left) != 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if left := hostLinks(p); len(left) != 0 {
		t.Errorf("host links left: %v", left)
	}
	if kept, _ := ListNetns(other); !slices.Equal(kept, []string{other + "a", other + "b", other + "c"}) {
		t.Errorf("neighbour's namespaces: %v", kept)
	}
	if kept := hostLinks(other); !slices.Equal(kept, []string{other + "h", other + "hb"}) {
		t.Errorf("neighbour's host links: %v", kept)
	}
	if err := s.Cleanup(p); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}
