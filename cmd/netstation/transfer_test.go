package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netstation/netstation/testbed"
)

// TestCapabilitiesByDefault: a disk checks capabilities unless the
// topology opens it. Its key sits in the state directory, readable by the
// owner only; the storage demo (cpu0 minting) works; forged, expired,
// out-of-range, wrong-rights and replayed capabilities are refused and
// counted by reason; after a revocation the old capability is refused,
// a fresh one works, and so does the storage demo.
func TestCapabilitiesByDefault(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	key := filepath.Join(b.state, b.name, "nodes", "disk0.key")
	fi, err := os.Stat(key)
	if err != nil {
		t.Fatalf("no key file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	var st struct {
		Access  string `json:"access"`
		Version uint32 `json:"capability_version"`
	}
	if err := json.Unmarshal([]byte(b.must("disk", "stats", "-t", b.name, "disk0", "-o", "json")), &st); err != nil || st.Access != "capability" {
		t.Fatalf("disk0 access %q (%v), want capability", st.Access, err)
	}

	out := b.must("demo", "capabilities", "-t", b.name, "-o", "json")
	var res testbed.CapabilityDemoResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	want := map[string]bool{"ok": true, "bad_mac": true, "expired": true, "range": true, "rights": true, "replay": true, "revoked": true}
	seen := map[string]int{}
	for _, c := range res.Cases {
		seen[c.Want]++
		if !want[c.Want] {
			t.Errorf("case %q expects %q: not a case this test knows", c.Name, c.Want)
		}
		switch {
		case c.Want == "ok" && c.Code != "ok":
			t.Errorf("%s: disk answered %q, want ok", c.Name, c.Code)
		case c.Want != "ok" && c.Code != "access denied":
			t.Errorf("%s: disk answered %q, want access denied", c.Name, c.Code)
		}
		if c.Want != "ok" && res.Refused[c.Want] == 0 {
			t.Errorf("%s: disk0's %q refusal counter did not move (refused: %v)", c.Name, c.Want, res.Refused)
		}
	}
	for w := range want {
		if seen[w] == 0 {
			t.Errorf("no case for %q", w)
		}
	}
	if res.VersionAfter != res.VersionBefore+1 {
		t.Errorf("version %d -> %d, want a bump by one", res.VersionBefore, res.VersionAfter)
	}
	// The file manager mints at the new version: the storage demo still works.
	out = b.must("demo", "storage", "-t", b.name, "--size", "4MiB", "-o", "json")
	if !strings.Contains(out, `"match": true`) {
		t.Errorf("storage demo after revocation:\n%s", out)
	}
	// A revocation survives a restart of the disk: the version is on disk.
	b.must("disk", "revoke", "-t", b.name, "disk0")
	if err := json.Unmarshal([]byte(b.must("disk", "stats", "-t", b.name, "disk0", "-o", "json")), &st); err != nil || st.Version != res.VersionAfter+1 {
		t.Errorf("version after a second revoke %d (%v), want %d", st.Version, err, res.VersionAfter+1)
	}
}

// TestDiskOpenMode: open mode only when the topology asks; then the
// storage demo runs with the all-zero capability and there is no key.
func TestDiskOpenMode(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, `nodes:
  - {name: cpu0, kind: cpu}
  - {name: disk0, kind: disk, disk: {access: open}}
`))
	if _, err := os.Stat(filepath.Join(b.state, b.name, "nodes", "disk0.key")); err == nil {
		t.Errorf("an open disk got a key file")
	}
	out := b.must("disk", "stats", "-t", b.name, "disk0", "-o", "json")
	if !strings.Contains(out, `"access": "open"`) {
		t.Errorf("disk0 not in open mode:\n%s", out)
	}
	out = b.must("demo", "storage", "-t", b.name, "--size", "4MiB", "-o", "json")
	if !strings.Contains(out, `"match": true`) {
		t.Errorf("storage demo in open mode:\n%s", out)
	}
	if out, err := b.run("demo", "capabilities", "-t", b.name); err == nil || !strings.Contains(out, "open mode") {
		t.Errorf("capability demo on an open disk: %v\n%s", err, out)
	}
}
