package manager

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/wire/capability"
)

func testDisk(t *testing.T) (Disk, *capability.KeyFile) {
	dir := t.TempDir()
	d := Disk{Name: "disk0", Addr: netip.MustParseAddr("10.0.0.2"),
		KeyPath: filepath.Join(dir, "disk0.key"), VersionPath: filepath.Join(dir, "disk0.capver")}
	kf, err := capability.CreateKeyFile(d.KeyPath, d.Name)
	if err != nil {
		t.Fatal(err)
	}
	return d, kf
}

// TestMint: capabilities verify under the disk's key at its current
// version; transfer capabilities only under the destination's derived key.
func TestMint(t *testing.T) {
	d, kf := testDisk(t)
	m := New()
	m.Add(d)
	b, err := m.Mint("", d.Addr, Grant{Offset: 4096, Length: 8192, Rights: capability.RightRead, Lifetime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	c, err := capability.Verify(kf.Key, b)
	if err != nil {
		t.Fatal(err)
	}
	if c.DiskID != kf.DiskID || c.Offset != 4096 || c.Length != 8192 || c.Rights != capability.RightRead || c.Version != 0 || c.Expired(time.Now()) {
		t.Errorf("minted %+v", c)
	}
	if err := capability.WriteVersion(d.VersionPath, 7); err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort("10.0.0.3:5910")
	b, err = m.MintTransfer("disk0", netip.Addr{}, Grant{Length: 1, Rights: capability.RightRead}, dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := capability.Verify(kf.Key, b); !errors.Is(err, capability.ErrBadMAC) {
		t.Errorf("transfer capability verifies under the plain key: %v", err)
	}
	if _, err := capability.Verify(capability.TransferKey(kf.Key, netip.MustParseAddrPort("10.0.0.3:5911")), b); !errors.Is(err, capability.ErrBadMAC) {
		t.Errorf("transfer capability verifies for another destination: %v", err)
	}
	if c, err := capability.Verify(capability.TransferKey(kf.Key, dst), b); err != nil || c.Version != 7 {
		t.Errorf("transfer capability: %+v %v", c, err)
	}
	if _, err := m.Mint("disk9", netip.Addr{}, WholeDisk(0)); !errors.Is(err, ErrUnknownDisk) {
		t.Errorf("unknown disk: %v", err)
	}
	m.Add(Disk{Name: "open0", Open: true})
	if b, err := m.Mint("open0", netip.Addr{}, WholeDisk(0)); err != nil || b != [capability.Size]byte{} {
		t.Errorf("open disk: %x %v", b, err)
	}
}

// TestKeyFileKept: a second CreateKeyFile keeps the key in force.
func TestKeyFileKept(t *testing.T) {
	d, kf := testDisk(t)
	again, err := capability.CreateKeyFile(d.KeyPath, d.Name)
	if err != nil || string(again.Key) != string(kf.Key) {
		t.Errorf("key replaced: %v", err)
	}
}
