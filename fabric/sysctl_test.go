package fabric

import (
	"errors"
	"strings"
	"testing"
)

func TestSysctl(t *testing.T) {
	p := testPrefix(t)
	ns := p + "y"
	if err := CreateNetns(ns); err != nil {
		t.Fatal(err)
	}
	hostBefore := readIn(t, "", "/proc/sys/net/ipv4/ip_forward")
	want := "1"
	if readIn(t, ns, "/proc/sys/net/ipv4/ip_forward") == "1" {
		want = "0"
	}
	if err := Sysctl(ns, "net.ipv4.ip_forward", want); err != nil {
		t.Fatal(err)
	}
	if got := readIn(t, ns, "/proc/sys/net/ipv4/ip_forward"); got != want {
		t.Errorf("ip_forward in %s = %s, want %s", ns, got, want)
	}
	if got := readIn(t, "", "/proc/sys/net/ipv4/ip_forward"); got != hostBefore {
		t.Errorf("host ip_forward changed from %s to %s", hostBefore, got)
	}
	if err := Sysctl(ns, "net/ipv4/conf/lo/rp_filter", "0"); err != nil {
		t.Errorf("slash form: %v", err)
	}
	if err := Sysctl(ns, "net.ipv4.no_such_key", "1"); err == nil {
		t.Error("unknown key accepted")
	}
	for _, bad := range []string{"", "net..x", "../etc/passwd", "net/../../etc", "/net/ipv4"} {
		if err := Sysctl(ns, bad, "1"); !errors.Is(err, ErrInvalid) {
			t.Errorf("key %q: %v, want ErrInvalid", bad, err)
		}
	}
}

func FuzzSysctlPath(f *testing.F) {
	for _, s := range []string{"net.ipv4.ip_forward", "net/ipv6/conf/eth0.7/disable_ipv6", "..", "a/../b", "", "/", "a.b/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		p, err := sysctlPath(key)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		rel, ok := strings.CutPrefix(p, "/proc/sys/")
		if !ok {
			t.Fatalf("%q maps outside /proc/sys: %q", key, p)
		}
		for _, part := range strings.Split(rel, "/") {
			if part == "" || part == "." || part == ".." {
				t.Fatalf("%q maps to %q with element %q", key, p, part)
			}
		}
	})
}
