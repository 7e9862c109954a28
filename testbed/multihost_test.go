package testbed

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/testbed/spec"
)

func multiHostPlan(t *testing.T) *Plan {
	t.Helper()
	top, err := spec.Parse("mh.yaml", []byte(`name: mh
subnet: 10.77.0.0/24
hosts: [h1, h2, h3]
host_access: {segment: a}
segments: [{name: a}, {name: b}]
nodes:
  - {name: cpu0, kind: cpu, host: h1, segment: a}
  - {name: disk0, kind: disk, host: h2, segment: a}
  - {name: display0, kind: display, segment: b}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := top.Resolve(netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	p, err := NewPlan(top)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlanForHost(t *testing.T) {
	under := netip.MustParseAddr("10.99.0.3")
	p := multiHostPlan(t)
	if p.MultiHost() {
		t.Fatal("a plan is multi-host only once ForHost chose its host")
	}
	if err := p.ForHost("h3", under, 1450); err != nil {
		t.Fatal(err)
	}
	if p.FabricNS != "nstn-mh-fabric-h3" || p.MTU != 1450 || p.Underlay != under || p.Host != nil {
		t.Errorf("h3's plan: fabric %s mtu %d underlay %v host access %v", p.FabricNS, p.MTU, p.Underlay, p.Host)
	}
	local := p.LocalNodes()
	if len(local) != 1 || local[0].Name != "display0" {
		t.Errorf("h3 runs %v, want display0 (placed automatically)", local)
	}
	if got := p.LocalNamespaces(); len(got) != 2 || got[0] != p.FabricNS || got[1] != "nstn-mh-display0" {
		t.Errorf("h3's namespaces: %v", got)
	}
	// Segments get distinct VNIs and device names that no port can have,
	// the same on every host.
	q := multiHostPlan(t)
	if err := q.ForHost("h1", netip.MustParseAddr("10.99.0.1"), 1450); err != nil {
		t.Fatal(err)
	}
	if q.Host == nil {
		t.Error("host access is built on the first host")
	}
	for i := range p.Segments {
		if p.Segments[i].VNI != q.Segments[i].VNI || p.Segments[i].VXLAN != q.Segments[i].VXLAN {
			t.Errorf("segment %d differs between hosts: %+v vs %+v", i, p.Segments[i], q.Segments[i])
		}
	}
	if p.Segments[0].VNI == p.Segments[1].VNI || p.Segments[0].VNI == 0 {
		t.Errorf("VNIs %d, %d", p.Segments[0].VNI, p.Segments[1].VNI)
	}

	for _, bad := range []struct {
		host string
		addr netip.Addr
		mtu  int
	}{
		{"h9", under, 1450},
		{"h1", netip.Addr{}, 1450},
		{"h1", under, 100},
	} {
		if err := multiHostPlan(t).ForHost(bad.host, bad.addr, bad.mtu); !errors.Is(err, ErrPlacement) {
			t.Errorf("ForHost(%q, %v, %d): got %v, want ErrPlacement", bad.host, bad.addr, bad.mtu, err)
		}
	}
}

func TestUpRefusesAMultiHostTopologyWithoutAHost(t *testing.T) {
	top, err := spec.Parse("mh.yaml", []byte("name: mh\nsubnet: 10.77.0.0/24\nhosts: [h1, h2]\nnodes: [{name: a, kind: cpu}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NETSTATION_STATE_DIR", t.TempDir())
	if _, err := Up(t.Context(), top, UpOptions{}); !errors.Is(err, ErrPlacement) {
		t.Fatalf("got %v, want ErrPlacement", err)
	}
}

// TestDerivedDiskKeys: every host of a multi-host testbed writes the same
// key for each disk from the agents' shared seed (no key travels), a
// different seed gives different keys, and no seed is a clear error
// unless the disk is in open mode.
func TestDerivedDiskKeys(t *testing.T) {
	p := multiHostPlan(t)
	h1, h2 := t.TempDir(), t.TempDir()
	for _, d := range []string{h1, h2} {
		if err := os.MkdirAll(filepath.Join(d, "nodes"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	seed := []byte("a cluster key of enough bytes.....")
	if err := deriveDiskKeys(h1, p, seed); err != nil {
		t.Fatal(err)
	}
	if err := deriveDiskKeys(h2, p, seed); err != nil {
		t.Fatal(err)
	}
	k1, err1 := capability.ReadKeyFile(NodeKey(h1, "disk0"))
	k2, err2 := capability.ReadKeyFile(NodeKey(h2, "disk0"))
	if err1 != nil || err2 != nil || !bytes.Equal(k1.Key, k2.Key) || k1.DiskID != k2.DiskID {
		t.Fatalf("hosts derived different keys: %v %v", err1, err2)
	}
	if err := deriveDiskKeys(h2, p, []byte("another cluster key..............")); err != nil {
		t.Fatal(err)
	}
	if k3, _ := capability.ReadKeyFile(NodeKey(h2, "disk0")); bytes.Equal(k3.Key, k1.Key) {
		t.Fatal("another seed derived the same key")
	}
	if err := deriveDiskKeys(t.TempDir(), p, nil); !errors.Is(err, ErrNoKeySeed) {
		t.Fatalf("no seed: %v, want ErrNoKeySeed", err)
	}
	for i := range p.Nodes {
		p.Nodes[i].DiskOpen = true
	}
	if err := deriveDiskKeys(t.TempDir(), p, nil); err != nil {
		t.Fatalf("open disks need no seed: %v", err)
	}
}
